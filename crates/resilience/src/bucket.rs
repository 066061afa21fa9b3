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

/// A leaky bucket as a queue: requests leave at a steady `rate`, each waiting for its
/// slot (GCRA's theoretical arrival time); more than `queue` waiting, or a wait longer
/// than `max_delay`, is refused. Lock-free: the next free slot is one atomic word.
#[derive(Debug)]
pub struct LeakyBucket {
    interval_ns: u64,
    queue: u32,
    max_delay_ns: u64,
    /// Clock value (ns) at which the next request may leave.
    next_slot: AtomicU64,
    /// Requests waiting for their slot now.
    pub waiting: std::sync::atomic::AtomicU32,
}

impl LeakyBucket {
    pub fn new(rate_per_s: f64, queue: u32, max_delay: Duration) -> LeakyBucket {
        LeakyBucket {
            interval_ns: (1e9 / rate_per_s.max(1e-9)).max(1.0) as u64,
            queue,
            max_delay_ns: max_delay.as_nanos() as u64,
            next_slot: AtomicU64::new(0),
            waiting: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// At clock value `now_ns`: how long this request waits before it may leave, or,
    /// when the queue is full, how long until a slot would be free.
    pub fn admit(&self, now_ns: u64) -> Result<Duration, Duration> {
        let mut cur = self.next_slot.load(Ordering::Relaxed);
        loop {
            let slot = cur.max(now_ns);
            let wait = slot - now_ns;
            if wait > 0 && (wait > self.max_delay_ns || self.waiting.load(Ordering::Relaxed) >= self.queue) {
                return Err(Duration::from_nanos(wait));
            }
            match self.next_slot.compare_exchange_weak(cur, slot + self.interval_ns, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(Duration::from_nanos(wait)),
                Err(actual) => cur = actual,
            }
        }
    }
}

/// A place in a leaky bucket's queue, left when dropped.
#[derive(Debug)]
pub struct Queued(std::sync::Arc<LeakyBucket>);

impl LeakyBucket {
    /// Takes a place in the queue (after [`LeakyBucket::admit`] said to wait).
    pub fn enqueue(self: &std::sync::Arc<Self>) -> Queued {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Queued(self.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod leaky_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    const MS: u64 = 1_000_000;

    #[test]
    fn spaces_requests_and_bounds_the_queue() {
        // 100/s: one every 10 ms; up to 3 waiting; at most 25 ms of wait.
        let b = LeakyBucket::new(100.0, 3, Duration::from_millis(25));
        let t = 1_000 * MS;
        assert_eq!(b.admit(t), Ok(Duration::ZERO));
        assert_eq!(b.admit(t), Ok(Duration::from_millis(10)));
        assert_eq!(b.admit(t), Ok(Duration::from_millis(20)));
        assert_eq!(b.admit(t), Err(Duration::from_millis(30)), "beyond maxDelay");
        // Later arrivals find their slot free again.
        assert_eq!(b.admit(t + 100 * MS), Ok(Duration::ZERO));
        // A full queue refuses even a short wait.
        b.waiting.store(3, Ordering::Relaxed);
        assert!(b.admit(t + 100 * MS).is_err());
        assert_eq!(b.admit(t + 200 * MS), Ok(Duration::ZERO), "no wait needs no queue room");
    }
}
