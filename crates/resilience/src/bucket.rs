//! A token bucket (Envoy's local rate limit: `maxTokens`, `tokensPerFill`,
//! `fillInterval`), lock-free: tokens and the last fill tick share one atomic word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct TokenBucket {
    max: u32,
    per_fill: u32,
    interval_ns: u64,
    /// High 32 bits: tokens; low 32 bits: the fill tick (intervals since the clock's start).
    state: AtomicU64,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> TokenBucket {
        let b = TokenBucket {
            max: max_tokens,
            per_fill: tokens_per_fill,
            interval_ns: fill_interval.as_nanos().max(1) as u64,
            state: AtomicU64::new(0),
        };
        b.state.store(u64::from(max_tokens) << 32, Ordering::Relaxed);
        b
    }

    /// Takes a token at clock value `now_ns`; when none is left, says how long until the next fill.
    pub fn try_take(&self, now_ns: u64) -> Result<(), Duration> {
        let tick_now = now_ns / self.interval_ns;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (tokens, tick) = ((cur >> 32) as u32, cur as u32);
            // Another thread's clock may be a hair ahead: never fill for a tick already passed.
            let elapsed = (tick_now as u32).wrapping_sub(tick);
            let (filled, tick) = if elapsed == 0 || elapsed > u32::MAX / 2 {
                (tokens, tick)
            } else {
                (tokens.saturating_add(self.per_fill.saturating_mul(elapsed)).min(self.max), tick_now as u32)
            };
            if filled == 0 {
                let next = (tick_now + 1) * self.interval_ns;
                return Err(Duration::from_nanos(next - now_ns));
            }
            let new = (u64::from(filled - 1) << 32) | u64::from(tick);
            match self.state.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn starts_full_refills_per_interval_and_caps() {
        let b = TokenBucket::new(3, 2, Duration::from_millis(100));
        let t = 1_000 * MS;
        assert!((0..3).all(|_| b.try_take(t).is_ok()));
        assert_eq!(b.try_take(t + 10 * MS), Err(Duration::from_millis(90)));
        assert!(b.try_take(t + 100 * MS).is_ok() && b.try_take(t + 150 * MS).is_ok());
        assert!(b.try_take(t + 199 * MS).is_err());
        // A long pause refills to the cap, not beyond.
        assert_eq!((0..10).filter(|_| b.try_take(t + 10_000 * MS).is_ok()).count(), 3);
    }

    #[test]
    fn admits_the_configured_rate_under_contention() {
        let b = std::sync::Arc::new(TokenBucket::new(500, 500, Duration::from_secs(1)));
        // 4 threads hammer the bucket over 10 simulated seconds of 1 ms steps, their clocks apart.
        let admitted: usize = (0..4u64)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..10_000u64).map(|ms| (0..5).filter(|_| b.try_take(ms * MS + t * 1000).is_ok()).count()).sum::<usize>()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        // 500 at the start plus 500 for each of the 9 fills in 10 s, never more.
        assert!((1_000..=5_000).contains(&admitted), "{admitted}");
        // Sequentially the count is exact.
        let b = TokenBucket::new(500, 500, Duration::from_secs(1));
        let exact: usize = (0..10_000u64).map(|ms| (0..5).filter(|_| b.try_take(ms * MS).is_ok()).count()).sum();
        assert_eq!(exact, 5_000);
        assert!(b.try_take(5 * MS).is_err(), "a clock behind the last fill refills nothing");
    }
}
