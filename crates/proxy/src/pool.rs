//! Upstream connection pools: one per endpoint per worker, so a worker reuses its own
//! connections without contending with others. HTTP/1.1 connections wait in a
//! lock-free queue while idle; an HTTP/2 connection is shared by all of the worker's
//! requests to that endpoint.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_config::PoolSettings;

use crate::body::ReqBody;
use crate::cluster::Endpoint;
use crate::error::UpstreamError;
use crate::transport::Conn;

/// Most idle hyper HTTP/1.1 connections kept per endpoint per worker.
const MAX_IDLE: usize = 256;
/// Most idle connections of weft's own client kept per endpoint per worker: enough for
/// an h2c client's hundreds of concurrent streams to find a warm connection each
/// (256 measured 7 % of requests opening a new connection at 500 streams). An idle
/// one holds no read buffer, about 1 KB.
const MAX_IDLE_RAW: usize = 1024;

pub struct Pool {
    /// hyper connections, for requests with bodies.
    idle: LazyQueue<Idle>,
    /// weft's own client connections, for requests without bodies (the common case).
    pub(crate) raw: LazyQueue<Box<crate::h1client::RawConn>>,
    h2: ArcSwapOption<H2Conn>,
    /// Held while an HTTP/2 connection is being opened: requests arriving meanwhile wait
    /// for it instead of each opening their own (a burst of streams, one connection).
    h2_opening: tokio::sync::Mutex<()>,
}

/// A bounded lock-free queue allocated when the first item is put in: an endpoint
/// (per worker) that never returns a connection costs no queue memory. (Allocated up
/// front they took ~40 KB per endpoint per worker: 413 MB for a proxy holding 10,000
/// endpoints it never called.) Boxed: an `ArrayQueue` is ~400 bytes of cache-padded
/// indexes, which inline cost every endpoint ~1.4 KB on two workers, used or not.
pub(crate) struct LazyQueue<T> {
    q: std::sync::OnceLock<Box<ArrayQueue<T>>>,
    cap: usize,
}

impl<T> LazyQueue<T> {
    const fn new(cap: usize) -> Self {
        LazyQueue { q: std::sync::OnceLock::new(), cap }
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        self.q.get()?.pop()
    }

    #[inline]
    pub(crate) fn push(&self, v: T) -> Result<(), T> {
        self.q.get_or_init(|| Box::new(ArrayQueue::new(self.cap))).push(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.q.get().map_or(0, |q| q.len())
    }
}

struct Idle {
    tx: http1::SendRequest<ReqBody>,
    uses: u32,
    born: Instant,
    since: Instant,
}

struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    streams: AtomicU32,
    born: Instant,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle: LazyQueue::new(MAX_IDLE),
            raw: LazyQueue::new(MAX_IDLE_RAW),
            h2: ArcSwapOption::empty(),
            h2_opening: tokio::sync::Mutex::const_new(()),
        }
    }
}

impl Pool {
    /// Closes idle connections past `idle_timeout` (called periodically by the admin runtime).
    pub fn reap(&self, settings: &PoolSettings) -> usize {
        let mut closed = 0;
        for _ in 0..self.idle.len() {
            let Some(c) = self.idle.pop() else { break };
            if !expired(&c, settings) {
                let _ = self.idle.push(c);
            }
        }
        for _ in 0..self.raw.len() {
            let Some(c) = self.raw.pop() else { break };
            if expired_at(c.since, c.born, settings) {
                closed += 1;
            } else if let Err(c) = self.raw.push(c) {
                drop(c);
                closed += 1;
            }
        }
        closed
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len() + self.raw.len() + usize::from(self.h2.load().is_some())
    }
}

fn expired(c: &Idle, s: &PoolSettings) -> bool {
    c.tx.is_closed() || expired_at(c.since, c.born, s)
}

/// Idle past `idleTimeout`, or older than `maxConnectionDuration`.
pub(crate) fn expired_at(since: Instant, born: Instant, s: &PoolSettings) -> bool {
    since.elapsed() >= s.idle_timeout || s.max_connection_duration.is_some_and(|d| born.elapsed() >= d)
}

/// Puts an HTTP/1.1 connection back in its pool once its response body has been read.
pub struct Returner {
    ep: Arc<Endpoint>,
    worker: usize,
    tx: http1::SendRequest<ReqBody>,
    uses: u32,
    born: Instant,
}

impl Returner {
    pub fn release(self) {
        let Returner { ep, worker, tx, uses, born } = self;
        let s = &ep.pool_settings;
        if s.max_requests_per_connection > 0 && uses >= s.max_requests_per_connection {
            return;
        }
        if s.max_connection_duration.is_some_and(|d| born.elapsed() >= d) {
            return;
        }
        // The response has been read whole, so the connection is about to be idle; if
        // its task has not caught up yet, the next checkout waits for `ready()`.
        let idle = Idle { tx, uses, born, since: Instant::now() };
        let _ = ep.pools[worker % ep.pools.len()].idle.push(idle);
    }
}

/// Sends a request over HTTP/1.1, reusing an idle connection when one is good.
pub async fn send_h1(
    ep: &Arc<Endpoint>,
    worker: usize,
    mut req: Request<ReqBody>,
) -> Result<(Response<Incoming>, Returner), UpstreamError> {
    let pool = &ep.pools[worker % ep.pools.len()];
    let s = &ep.pool_settings;
    while let Some(mut c) = pool.idle.pop() {
        if expired(&c, s) {
            continue;
        }
        if !c.tx.is_ready() && c.tx.ready().await.is_err() {
            continue;
        }
        match c.tx.try_send_request(req).await {
            Ok(resp) => {
                let r = Returner { ep: ep.clone(), worker, tx: c.tx, uses: c.uses + 1, born: c.born };
                return Ok((resp, r));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the connection had closed under us; try another.
                Some(back) => req = back,
                None => return Err(UpstreamError::from_hyper(e.into_error())),
            },
        }
    }
    let io = TokioIo::new(connect(ep).await?);
    let (mut tx, conn) = http1::handshake(io).await.map_err(UpstreamError::from_hyper)?;
    drive(ep, conn);
    let resp = tx.send_request(req).await.map_err(UpstreamError::from_hyper)?;
    Ok((resp, Returner { ep: ep.clone(), worker, tx, uses: 1, born: Instant::now() }))
}

/// Sends a request over the worker's shared HTTP/2 connection to the endpoint.
pub async fn send_h2(ep: &Arc<Endpoint>, worker: usize, req: Request<ReqBody>) -> Result<Response<Incoming>, UpstreamError> {
    let pool = &ep.pools[worker % ep.pools.len()];
    let s = &ep.pool_settings;
    let current = pool.h2.load_full();
    let conn = match current {
        Some(c) if h2_usable(&c, s) => c,
        _ => {
            let _opening = pool.h2_opening.lock().await;
            match pool.h2.load_full() {
                Some(c) if h2_usable(&c, s) => c,
                _ => open_h2(ep, pool).await?,
            }
        }
    };
    conn.streams.fetch_add(1, Ordering::Relaxed);
    let mut tx = conn.tx.clone();
    tx.send_request(req).await.map_err(UpstreamError::from_hyper)
}

/// Opens the worker's HTTP/2 connection to `ep` and makes it the shared one.
async fn open_h2(ep: &Arc<Endpoint>, pool: &Pool) -> Result<Arc<H2Conn>, UpstreamError> {
    let io = TokioIo::new(connect(ep).await?);
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new());
    match ep.pool_settings.h2_keepalive {
        // `http2KeepAlive`: PINGs on the connection, idle or not; no answer in `timeout`
        // closes it (its requests fail and are retried by policy).
        Some((interval, timeout)) => b.keep_alive_interval(interval).keep_alive_timeout(timeout).keep_alive_while_idle(true),
        None => b.keep_alive_interval(Duration::from_secs(30)).keep_alive_while_idle(false),
    };
    let (tx, conn) = b.handshake(io).await.map_err(UpstreamError::from_hyper)?;
    drive(ep, conn);
    let c = Arc::new(H2Conn { tx, streams: AtomicU32::new(0), born: Instant::now() });
    pool.h2.store(Some(c.clone()));
    Ok(c)
}

/// Runs a hyper connection on its own task, counting it opened and closed.
fn drive<F: std::future::Future + Send + 'static>(ep: &Endpoint, conn: F) {
    let (metrics, dest, peer) = (ep.metrics, ep.dest, ep.peer);
    metrics.tcp_connection(dest, peer, true);
    tokio::spawn(async move {
        let _ = conn.await;
        metrics.tcp_connection(dest, peer, false);
    });
}

fn h2_usable(c: &H2Conn, s: &PoolSettings) -> bool {
    let young = s.max_connection_duration.is_none_or(|d| c.born.elapsed() < d);
    let fresh = s.max_requests_per_connection == 0 || c.streams.load(Ordering::Relaxed) < s.max_requests_per_connection;
    !c.tx.is_closed() && young && fresh
}

/// A new, unpooled connection (upgrades and CONNECT tunnels take theirs whole), over
/// the endpoint's transport.
pub async fn connect(ep: &Endpoint) -> Result<Conn, UpstreamError> {
    ep.transport.connect(&ep.target, &ep.pool_settings).await
}

/// A fresh connection to `ep` for an HTTP/1.1 upgrade: over the mesh's mTLS to an h2
/// cluster it offers ALPN `http/1.1` instead of `h2`.
pub async fn connect_for_upgrade(ep: &Endpoint) -> Result<Conn, UpstreamError> {
    let Some(h1) = ep.pool_settings.tls.as_ref().and_then(|t| t.upgrade_client_config.clone()) else {
        return connect(ep).await;
    };
    let mut s = PoolSettings::clone(&ep.pool_settings);
    if let Some(t) = s.tls.as_mut() {
        t.client_config = Some(h1);
    }
    ep.transport.connect(&ep.target, &s).await
}
