//! Kept-alive connections to the control plane. A watch that ends normally leaves its
//! connection for the next call, and an on-demand proxy keeps one more connection
//! ready while its long poll waits: a first request to an unseen service then asks on
//! it at once, with no TCP and TLS handshake in its way (the long poll it interrupts
//! loses its connection). A connection is reused for at most [`MAX_AGE`], so that a
//! rotated workload certificate is presented within that long.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

/// Idle connections kept at most: the spare, and the last call's.
const MAX_IDLE: usize = 2;
/// The longest a connection is used (its handshake presented the certificate of then).
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// One HTTP/1.1 connection to the control plane, its requests sent on `tx`.
pub struct Conn {
    pub tx: SendRequest<Full<Bytes>>,
    born: Instant,
}

impl Conn {
    pub fn new(tx: SendRequest<Full<Bytes>>) -> Conn {
        Conn { tx, born: Instant::now() }
    }

    fn usable(&self) -> bool {
        !self.tx.is_closed() && self.tx.is_ready() && self.born.elapsed() < MAX_AGE
    }
}

/// The idle connections, shared by the clones of one control plane's client.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Vec<Conn>>>);

impl Pool {
    /// The most recently used connection still usable (closed or old ones are dropped).
    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.0.lock().ok()?;
        while let Some(c) = idle.pop() {
            if c.usable() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `c` for the next call, if it is usable and there is room.
    pub fn put(&self, c: Conn) {
        if !c.usable() {
            return;
        }
        if let Ok(mut idle) = self.0.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
    }

    /// Whether a usable connection waits idle (those that are not are dropped).
    pub fn has_usable(&self) -> bool {
        let Ok(mut idle) = self.0.lock() else { return false };
        idle.retain(Conn::usable);
        !idle.is_empty()
    }
}
