//! A host's recent latency distribution, for hedging at a percentile: log-spaced
//! buckets (four per doubling, 16 µs to ~17 min) counted in atomics, over two rotating
//! windows so that old latencies age out. Recording is two relaxed atomic operations.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 104;
/// The first bucket's upper bound: 16 µs.
const BASE_NS: f64 = 16_000.0;
/// Four buckets per doubling: each bound 2^(1/4) ≈ 1.19 × the last.
const STEP: f64 = 1.189_207_115_002_721;

#[derive(Debug)]
pub struct LatencyWindow {
    counts: [[AtomicU32; BUCKETS]; 2],
    /// Which of the two windows takes new samples (even/odd).
    epoch: AtomicU64,
    rotate_at: AtomicU64,
    window_ns: u64,
}

fn bucket(ns: u64) -> usize {
    if (ns as f64) <= BASE_NS {
        return 0;
    }
    let b = ((ns as f64 / BASE_NS).ln() / STEP.ln()).ceil() as usize;
    b.min(BUCKETS - 1)
}

fn upper_bound_ns(b: usize) -> u64 {
    (BASE_NS * STEP.powi(b as i32)) as u64
}

impl LatencyWindow {
    /// Samples live between one and two `window`s.
    pub fn new(window: Duration) -> Self {
        LatencyWindow {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
            epoch: AtomicU64::new(0),
            rotate_at: AtomicU64::new(0),
            window_ns: window.as_nanos().max(1) as u64,
        }
    }

    pub fn record(&self, latency: Duration, now_ns: u64) {
        let due = self.rotate_at.load(Ordering::Relaxed);
        if now_ns >= due && self.rotate_at.compare_exchange(due, now_ns + self.window_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            // The older window is emptied and becomes the current one.
            let next = self.epoch.load(Ordering::Relaxed) + 1;
            for c in &self.counts[(next % 2) as usize] {
                c.store(0, Ordering::Relaxed);
            }
            self.epoch.store(next, Ordering::Relaxed);
        }
        let e = (self.epoch.load(Ordering::Relaxed) % 2) as usize;
        self.counts[e][bucket(latency.as_nanos() as u64)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `p`-th percentile (0–100) over both windows, as the bucket's upper bound
    /// (at most 19 % above the true value); `None` with fewer than `min_samples`.
    pub fn percentile(&self, p: f64, min_samples: u64) -> Option<Duration> {
        let merged: Vec<u64> = (0..BUCKETS)
            .map(|b| u64::from(self.counts[0][b].load(Ordering::Relaxed)) + u64::from(self.counts[1][b].load(Ordering::Relaxed)))
            .collect();
        let total: u64 = merged.iter().sum();
        if total == 0 || total < min_samples {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in merged.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(upper_bound_ns(b)));
            }
        }
        Some(Duration::from_nanos(upper_bound_ns(BUCKETS - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn buckets_cover_microseconds_to_minutes() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(16_000), 0);
        assert_eq!(bucket(16_001), 1);
        assert!(upper_bound_ns(BUCKETS - 1) > 600 * 1_000 * MS);
        for ns in [20_000u64, 1_000_000, 37_000_000, 5_000_000_000] {
            let b = bucket(ns);
            assert!(upper_bound_ns(b) >= ns && (b == 0 || upper_bound_ns(b - 1) < ns), "{ns} in bucket {b}");
        }
    }

    #[test]
    fn percentiles_within_a_bucket() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        for i in 1..=100u64 {
            w.record(Duration::from_millis(i), MS);
        }
        let p95 = w.percentile(95.0, 50).unwrap();
        assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_micros(95_000 * 119 / 100), "{p95:?}");
        let p50 = w.percentile(50.0, 50).unwrap();
        assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_micros(59_500), "{p50:?}");
        assert_eq!(w.percentile(95.0, 101), None, "too few samples");
    }

    #[test]
    fn old_samples_age_out() {
        let w = LatencyWindow::new(Duration::from_millis(100));
        for _ in 0..100 {
            w.record(Duration::from_millis(50), MS);
        }
        // One window later the old samples still count; two later they are gone.
        w.record(Duration::from_millis(1), 102 * MS);
        assert!(w.percentile(50.0, 1).unwrap() >= Duration::from_millis(50));
        for _ in 0..100 {
            w.record(Duration::from_millis(1), 203 * MS);
        }
        assert!(w.percentile(99.0, 1).unwrap() < Duration::from_millis(2));
    }
}
