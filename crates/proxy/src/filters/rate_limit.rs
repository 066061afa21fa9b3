//! RateLimit resources on a host: token buckets (refuse with 429), leaky buckets (hold
//! the request in a bounded queue, refuse when it is full) and adaptive concurrency
//! limits (refuse with 503 past the limit the latency gradient allows). The buckets
//! and limiters are live state ([`crate::live`]), kept across reloads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::request::Parts;
use http::StatusCode;
use weft_config::matcher::{RequestMatch, RequestView};
use weft_resilience::adaptive::{Adaptive, Ticket};
use weft_resilience::bucket::{LeakyBucket, TokenBucket};
use weft_telemetry::ResponseFlags;

use super::{Flow, Local};
use crate::cluster::now_ns;
use crate::request::RequestCtx;

/// A limiter's live state.
#[derive(Clone)]
pub enum Limiter {
    Token(Arc<TokenBucket>),
    Leaky(Arc<LeakyBucket>),
    Adaptive(Arc<Adaptive>),
}

#[derive(Clone)]
pub struct RateLimit {
    /// `RateLimit/name`, for messages.
    pub name: String,
    /// Requests that match (all, when empty) are limited.
    pub matches: Vec<RequestMatch>,
    pub limiter: Limiter,
}

/// A request admitted by an adaptive concurrency limit; reports its latency when dropped.
pub struct Admitted(Arc<Adaptive>, Option<Ticket>);

impl Admitted {
    /// Gives the place back without a latency sample (the answer never reached the upstream).
    pub fn forget(mut self) {
        if let Some(t) = self.1.take() {
            self.0.forget(t);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(t) = self.1.take() {
            self.0.release(t, now_ns());
        }
    }
}

/// The view of a request that `match` conditions read.
pub fn view<'a>(head: &'a Parts, host: &'a str, port: Option<u16>) -> RequestView<'a> {
    RequestView {
        method: head.method.as_str(),
        path: head.uri.path(),
        query: head.uri.query(),
        authority: host,
        scheme: "http",
        port: port.unwrap_or(80),
        headers: &head.headers,
    }
}

impl RateLimit {
    pub fn on_request(&self, cx: &mut RequestCtx, head: &Parts, host: &str) -> Flow {
        if !self.matches.is_empty() && !self.matches.iter().any(|m| m.is_match(&view(head, host, cx.port))) {
            return Flow::Next;
        }
        let counters = &cx.conn.shared.metrics.counters;
        let now = now_ns();
        let verdict = match &self.limiter {
            Limiter::Token(b) => b.try_take(now),
            Limiter::Leaky(b) => b.admit(now).map(|wait| {
                if !wait.is_zero() {
                    // (Several matching leaky buckets each hold a place; the longest wait applies.)
                    cx.filters.queued.push(b.enqueue());
                    cx.filters.delay = cx.filters.delay.max(wait);
                }
            }),
            Limiter::Adaptive(a) => {
                if let Some(t) = a.try_acquire(now) {
                    cx.filters.admitted.push(Admitted(a.clone(), Some(t)));
                    return Flow::Next;
                }
                counters.shed.fetch_add(1, Ordering::Relaxed);
                let msg = format!("overloaded: adaptive concurrency limit {} reached ({})\n", a.limit(), self.name);
                return Flow::Reject(Local::new(StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UO, msg));
            }
        };
        match verdict {
            Ok(()) => Flow::Next,
            Err(wait) => {
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                let msg = format!("local rate limit exceeded ({})\n", self.name);
                let mut local = Local::new(StatusCode::TOO_MANY_REQUESTS, ResponseFlags::RL, msg);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                local.retry_after = Some(secs.max(1));
                Flow::Reject(local)
            }
        }
    }
}
