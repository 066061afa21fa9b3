//! Failure handling as pure decisions, apart from I/O so each is tested on its own:
//! which outcomes a route retries, how long to back off, and which requests a
//! fault applies to. The proxy supplies the clock and the random numbers.
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod backoff;
pub mod bucket;
pub mod health;
pub mod latency;
pub mod outlier;
pub mod retry;

pub use backoff::backoff;
pub use retry::{Outcome, RetryOn, RetryOnError};

/// Whether a request falls in a configured fraction (0..=1), given a uniform `r` in 0..1.
#[inline]
pub fn sampled(fraction: f64, r: f64) -> bool {
    fraction >= 1.0 || r < fraction
}
