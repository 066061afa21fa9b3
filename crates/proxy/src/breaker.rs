//! Circuit breakers from `connectionPool` (Envoy's cluster circuit breakers): requests
//! in flight, HTTP/1.1 requests holding connections with a bounded queue of requests
//! waiting for one, and retries in flight (`maxRetries` and the `retryBudget`).
//! Overflow answers 503 with flag UO; a retry over the limit is not made.
//!
//! Every cluster has the connection and pending limits (1,024 each unless `connectionPool`
//! says otherwise, Envoy's defaults); the retry limits run only when set. Counting is
//! atomic; only a request that has to wait for a connection touches the semaphore's queue.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_config::Limits;

/// A cluster's counters; carried over a reload while its limits stay the same.
pub struct Breaker {
    pub limits: Limits,
    pub active: AtomicU32,
    pub pending: AtomicU32,
    pub retries: AtomicU32,
    /// HTTP/1.1 requests in flight (each holds a connection), at most `maxConnections`.
    connections: Arc<Semaphore>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Requests,
    Pending,
    PendingTimeout,
}

/// Held while a request is in flight (until its response body ends).
pub struct Ticket {
    breaker: Arc<Breaker>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.breaker.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a retry is in flight.
pub struct RetryTicket(Arc<Breaker>);

impl Drop for RetryTicket {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Breaker {
    pub fn new(limits: Limits) -> Breaker {
        let permits = (limits.max_connections as usize).min(Semaphore::MAX_PERMITS);
        let connections = Arc::new(Semaphore::new(permits));
        Breaker { limits, active: AtomicU32::new(0), pending: AtomicU32::new(0), retries: AtomicU32::new(0), connections }
    }

    /// A slot for one TCP connection (`maxConnections`), held while it is open; `None`
    /// when all are taken.
    pub fn tcp_connection(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Whether retries are limited at all (`maxRetries` or a retry budget).
    pub fn limits_retries(&self) -> bool {
        self.limits.max_retries != u32::MAX || self.limits.retry_budget.is_some()
    }

    /// Admits a request, waiting up to `wait` for a connection slot when HTTP/1.1 ones are all busy.
    pub async fn admit(self: &Arc<Self>, h1: bool, wait: Duration) -> Result<Ticket, Overflow> {
        if self.active.fetch_add(1, Ordering::Relaxed) >= self.limits.max_requests {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return Err(Overflow::Requests);
        }
        let mut ticket = Ticket { breaker: self.clone(), _connection: None };
        if !h1 {
            return Ok(ticket);
        }
        let sem = &self.connections;
        if let Ok(p) = sem.clone().try_acquire_owned() {
            ticket._connection = Some(p);
            return Ok(ticket);
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.limits.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(Overflow::Pending);
        }
        let got = tokio::time::timeout(wait, sem.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => {
                ticket._connection = Some(p);
                Ok(ticket)
            }
            _ => Err(Overflow::PendingTimeout),
        }
    }

    /// A retry may go out while fewer than `maxRetries` are in flight, and within the
    /// retry budget: `percent` of the requests in flight, at least `minRetryConcurrency`.
    pub fn retry(self: &Arc<Self>) -> Option<RetryTicket> {
        let limit = match self.limits.retry_budget {
            Some((fraction, min)) => {
                let budget = (fraction * f64::from(self.active.load(Ordering::Relaxed))) as u32;
                self.limits.max_retries.min(budget.max(min))
            }
            None => self.limits.max_retries,
        };
        if self.retries.fetch_add(1, Ordering::Relaxed) >= limit {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetryTicket(self.clone()))
    }
}
