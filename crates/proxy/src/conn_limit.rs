//! The default upstream circuit breaker on connections: a cluster opens at most
//! `maxConnections` upstream connections (Envoy's default 1,024 when unset), and at
//! most `http1MaxPendingRequests` requests (1,024 when unset) wait for one to close;
//! the rest are refused (503, flag UO). Counted when a connection is opened and when it
//! closes, so requests on warm connections pay nothing for it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Envoy's default `max_connections` and `max_pending_requests`.
pub const DEFAULT_MAX: u32 = 1024;

pub struct ConnLimit {
    open: AtomicU32,
    pending: AtomicU32,
    max: u32,
    max_pending: u32,
    freed: Notify,
}

/// One open upstream connection's place; given back when dropped (the connection closed).
pub struct Slot(Arc<ConnLimit>);

impl Slot {
    /// A place in a limit of its own: for connections no cluster counts (tests).
    pub fn uncounted() -> Slot {
        let l = Arc::new(ConnLimit::new(u32::MAX, u32::MAX));
        l.open.fetch_add(1, Ordering::Relaxed);
        Slot(l)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// Why no connection could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Too many requests already wait for a connection.
    Pending,
    /// None closed within the wait.
    Timeout,
}

impl ConnLimit {
    /// From a cluster's `connectionPool` limits (`u32::MAX`: unset, the defaults apply).
    pub fn new(max: u32, max_pending: u32) -> ConnLimit {
        let or_default = |v: u32| if v == u32::MAX { DEFAULT_MAX } else { v.max(1) };
        ConnLimit {
            open: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            max: or_default(max),
            max_pending: or_default(max_pending),
            freed: Notify::new(),
        }
    }

    /// Upstream connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut cur = self.open.load(Ordering::Relaxed);
        while cur < self.max {
            match self.open.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(self.clone())),
                Err(c) => cur = c,
            }
        }
        None
    }

    /// A place for a new connection, waiting up to `wait` (the connect timeout) for one
    /// to close when all are taken.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Slot, Full> {
        if let Some(s) = self.try_take() {
            return Ok(s);
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Pending);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let got = loop {
            let freed = self.freed.notified();
            if let Some(s) = self.try_take() {
                break Ok(s);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break self.try_take().ok_or(Full::Timeout);
            }
        };
        self.pending.fetch_sub(1, Ordering::Relaxed);
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_requests_wait_then_overflow() {
        let l = Arc::new(ConnLimit::new(2, 1));
        let a = l.acquire(Duration::from_secs(1)).await.unwrap();
        let _b = l.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(l.open(), 2);
        // A third waits; a fourth finds the queue full.
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Duration::from_secs(1)).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(l.acquire(Duration::from_secs(1)).await.err(), Some(Full::Pending));
        drop(a);
        assert_eq!(waiter.await.unwrap(), Ok(()), "a closed connection lets the waiter open one");
        // Nobody closes: the wait ends at its bound.
        let t = tokio::time::Instant::now();
        let _c = l.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(l.acquire(Duration::from_millis(300)).await.err(), Some(Full::Timeout));
        assert!(t.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn unset_limits_are_envoys_defaults() {
        let l = ConnLimit::new(u32::MAX, u32::MAX);
        assert_eq!((l.max, l.max_pending), (DEFAULT_MAX, DEFAULT_MAX));
    }
}
