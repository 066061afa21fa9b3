//! Adaptive concurrency: a gradient controller in the manner of Envoy's adaptive
//! concurrency filter and Netflix's concurrency-limits. It keeps the number of
//! requests in flight to what holds latency near its no-load minimum.
//!
//! - **minRTT** is measured with concurrency pinned to `min_limit`: the mean latency
//!   of `min_rtt_samples` requests that started during the measurement. It is
//!   measured at start and again every `min_rtt_interval` (so a backend that became
//!   slower for good gets a new baseline, and the baseline cannot drift upwards with
//!   the latency the limit itself allows).
//! - Every `sample_window` the mean latency of the window's requests (the same
//!   statistic) gives the **gradient** `minRTT × (1 + buffer) / sample`, clamped to
//!   [0.5, 2]; the new limit is `gradient × limit + √(gradient × limit)` (the root is
//!   headroom for queueing), within [min_limit, max_limit]. The limit only grows in a
//!   window whose peak concurrency reached half of it: light traffic does not inflate it.
//!
//! Everything is atomics: admitting is a compare-and-swap on the in-flight count, and
//! the window's bookkeeping falls to whichever finishing request closes it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub min_limit: u32,
    pub max_limit: u32,
    pub sample_window: Duration,
    pub min_rtt_interval: Duration,
    pub min_rtt_samples: u32,
    /// Latency tolerated above minRTT before the limit shrinks (0.25 = 25 %).
    pub buffer: f64,
}

impl Default for Settings {
    /// Envoy's defaults, except a 30 s minRTT interval (Envoy's example uses 60 s).
    fn default() -> Self {
        Settings {
            min_limit: 3,
            max_limit: 1000,
            sample_window: Duration::from_millis(100),
            min_rtt_interval: Duration::from_secs(30),
            min_rtt_samples: 50,
            buffer: 0.25,
        }
    }
}

/// The controller's step: the next limit from the current one, minRTT and the window's
/// mean latency. `busy`: the window's peak concurrency reached half the limit.
pub fn next_limit(s: &Settings, limit: f64, min_rtt: f64, sample: f64, busy: bool) -> f64 {
    if !(sample > 0.0 && min_rtt > 0.0) {
        return limit;
    }
    let gradient = (min_rtt * (1.0 + s.buffer) / sample).clamp(0.5, 2.0);
    let scaled = gradient * limit;
    let mut next = scaled + scaled.sqrt();
    if !busy {
        next = next.min(limit);
    }
    next.clamp(f64::from(s.min_limit.max(1)), f64::from(s.max_limit.max(s.min_limit.max(1))))
}

#[derive(Debug)]
pub struct Adaptive {
    s: Settings,
    in_flight: AtomicU32,
    limit: AtomicU32,
    /// The limit kept across a measurement (f64 bits: the fractional part matters).
    limit_f: AtomicU64,
    window_start: AtomicU64,
    window_sum: AtomicU64,
    window_count: AtomicU64,
    window_peak: AtomicU32,
    /// The current minRTT (ns); 0 before the first measurement ends.
    min_rtt: AtomicU64,
    /// When the running measurement began (ns); 0 when none runs.
    measuring_since: AtomicU64,
    measure_sum: AtomicU64,
    measure_count: AtomicU32,
    next_measure: AtomicU64,
}

/// A request admitted by [`Adaptive::try_acquire`]; hand it back to
/// [`Adaptive::release`] with the request's latency.
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    started_ns: u64,
}

impl Adaptive {
    /// Starts by measuring minRTT. Times are the caller's monotonic clock in ns (≥ 1).
    pub fn new(s: Settings) -> Self {
        let min = s.min_limit.max(1);
        Adaptive {
            s,
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(min),
            limit_f: AtomicU64::new(f64::from(min).to_bits()),
            window_start: AtomicU64::new(0),
            window_sum: AtomicU64::new(0),
            window_count: AtomicU64::new(0),
            window_peak: AtomicU32::new(0),
            min_rtt: AtomicU64::new(0),
            measuring_since: AtomicU64::new(1),
            measure_sum: AtomicU64::new(0),
            measure_count: AtomicU32::new(0),
            next_measure: AtomicU64::new(u64::MAX),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        let m = self.min_rtt.load(Ordering::Relaxed);
        (m > 0).then(|| Duration::from_nanos(m))
    }

    /// Admits a request if fewer than the limit are in flight; `None` sheds it.
    pub fn try_acquire(&self, now_ns: u64) -> Option<Ticket> {
        if self.measuring_since.load(Ordering::Relaxed) == 0 && now_ns >= self.next_measure.load(Ordering::Relaxed) {
            self.start_measuring(now_ns);
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            if cur >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.window_peak.fetch_max(cur + 1, Ordering::Relaxed);
                    return Some(Ticket { started_ns: now_ns });
                }
                Err(c) => cur = c,
            }
        }
    }

    /// A request answered without reaching the upstream (a cache hit): its place is
    /// given back and its latency, which says nothing of the upstream's, not sampled.
    pub fn forget(&self, t: Ticket) {
        let _ = t;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request done (its response head came back, or it failed) at `now_ns`.
    pub fn release(&self, t: Ticket, now_ns: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let rtt = now_ns.saturating_sub(t.started_ns).max(1);
        let since = self.measuring_since.load(Ordering::Relaxed);
        if since != 0 {
            // Only requests that started under the pinned limit measure the baseline.
            if t.started_ns >= since {
                self.measure_sum.fetch_add(rtt, Ordering::Relaxed);
                if self.measure_count.fetch_add(1, Ordering::Relaxed) + 1 == self.s.min_rtt_samples.max(1) {
                    self.finish_measuring(now_ns);
                }
            }
            return;
        }
        self.window_sum.fetch_add(rtt, Ordering::Relaxed);
        self.window_count.fetch_add(1, Ordering::Relaxed);
        let start = self.window_start.load(Ordering::Relaxed);
        let due = now_ns.saturating_sub(start) >= self.s.sample_window.as_nanos() as u64;
        if due && self.window_start.compare_exchange(start, now_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.close_window();
        }
    }

    fn close_window(&self) {
        let sum = self.window_sum.swap(0, Ordering::Relaxed);
        let count = self.window_count.swap(0, Ordering::Relaxed);
        let peak = self.window_peak.swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let min_rtt = self.min_rtt.load(Ordering::Relaxed);
        if count == 0 || min_rtt == 0 {
            return;
        }
        let limit = f64::from_bits(self.limit_f.load(Ordering::Relaxed));
        let busy = f64::from(peak) * 2.0 >= limit;
        let next = next_limit(&self.s, limit, min_rtt as f64, sum as f64 / count as f64, busy);
        self.limit_f.store(next.to_bits(), Ordering::Relaxed);
        self.limit.store(next.round() as u32, Ordering::Relaxed);
    }

    fn start_measuring(&self, now_ns: u64) {
        if self.measuring_since.compare_exchange(0, now_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.measure_sum.store(0, Ordering::Relaxed);
            self.measure_count.store(0, Ordering::Relaxed);
            self.limit.store(self.s.min_limit.max(1), Ordering::Relaxed);
        }
    }

    fn finish_measuring(&self, now_ns: u64) {
        let n = u64::from(self.s.min_rtt_samples.max(1));
        self.min_rtt.store((self.measure_sum.load(Ordering::Relaxed) / n).max(1), Ordering::Relaxed);
        let kept = f64::from_bits(self.limit_f.load(Ordering::Relaxed));
        self.limit.store(kept.round() as u32, Ordering::Relaxed);
        self.window_sum.store(0, Ordering::Relaxed);
        self.window_count.store(0, Ordering::Relaxed);
        self.window_start.store(now_ns, Ordering::Relaxed);
        // Spread the next measurement by up to 10 % so that proxies do not pin together.
        let interval = self.s.min_rtt_interval.as_nanos() as u64;
        let jitter = (now_ns % 1000) * (interval / 10) / 1000;
        self.next_measure.store(now_ns + interval + jitter, Ordering::Relaxed);
        self.measuring_since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_step_shrinks_under_queueing_and_grows_with_headroom() {
        let s = Settings::default();
        // Latency at minRTT: gradient 1.25 → grows.
        assert!(next_limit(&s, 100.0, 10.0, 10.0, true) > 100.0);
        // Latency 3× minRTT: gradient 0.5 (clamped) → about half, plus √50.
        let n = next_limit(&s, 100.0, 10.0, 30.0, true);
        assert!((n - (50.0 + 50f64.sqrt())).abs() < 1e-9, "{n}");
        // Not busy: never grows.
        assert_eq!(next_limit(&s, 100.0, 10.0, 10.0, false), 100.0);
        // Bounds.
        assert_eq!(next_limit(&s, 3.0, 10.0, 100.0, true), 3.0);
        assert_eq!(next_limit(&s, 990.0, 10.0, 1.0, true), 1000.0);
    }

    /// A simulated backend that serves `capacity` requests at once in `service` time each
    /// (more queue: latency grows with concurrency), under an offered load far beyond it.
    fn simulate(capacity: u32, service_ms: u64, offered_concurrency: u32, steps: u64) -> (Adaptive, Vec<u32>) {
        let s = Settings { min_rtt_interval: Duration::from_secs(3600), ..Default::default() };
        let mut now = MS;
        let a = Adaptive::new(s);
        let mut limits = Vec::new();
        for _ in 0..steps {
            // Every ms, as many requests as the load offers try to get in; each admitted
            // one takes service × max(1, in_flight / capacity).
            let mut tickets = Vec::new();
            for _ in 0..offered_concurrency {
                if let Some(t) = a.try_acquire(now) {
                    tickets.push(t);
                }
            }
            let load = a.in_flight() as f64 / f64::from(capacity);
            let latency = (service_ms as f64 * load.max(1.0) * MS as f64) as u64;
            now += latency;
            for t in tickets {
                a.release(t, now);
            }
            limits.push(a.limit());
        }
        (a, limits)
    }

    #[test]
    fn converges_near_the_backends_capacity_under_overload() {
        let (a, limits) = simulate(20, 2, 500, 3000);
        assert_eq!(a.min_rtt(), Some(Duration::from_millis(2)), "measured at the pinned limit, below capacity");
        let tail = &limits[limits.len() - 500..];
        let mean = tail.iter().map(|&l| f64::from(l)).sum::<f64>() / tail.len() as f64;
        // Equilibrium: latency ≈ 1.25 × minRTT plus headroom, i.e. a limit near 1.3–1.6 × capacity; never the offered 500.
        assert!((20.0..=40.0).contains(&mean), "limit settles at {mean} for a capacity of 20");
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn light_load_does_not_inflate_the_limit() {
        let (a, _) = simulate(1000, 2, 2, 2000);
        assert!(a.limit() <= 6, "2 in flight at most keeps the limit low: {}", a.limit());
    }

    #[test]
    fn the_baseline_is_measured_again_when_the_interval_comes() {
        let s = Settings { min_rtt_interval: Duration::from_millis(500), min_rtt_samples: 5, ..Default::default() };
        let mut now = MS;
        let a = Adaptive::new(s);
        for _ in 0..5 {
            let t = a.try_acquire(now).unwrap();
            a.release(t, now + 4 * MS);
        }
        assert_eq!(a.min_rtt(), Some(Duration::from_millis(4)));
        // A request that started before the new measurement does not count in it.
        let old = a.try_acquire(now + 10 * MS).unwrap();
        now += 600 * MS;
        let mut measure = Vec::new();
        for _ in 0..2 {
            measure.push(a.try_acquire(now).expect("within min_limit"));
        }
        assert!(a.try_acquire(now).is_none(), "pinned to min_limit (3) with 3 in flight");
        a.release(old, now + 50 * MS);
        for t in measure {
            a.release(t, now + 8 * MS);
        }
        for _ in 0..3 {
            let t = a.try_acquire(now + 8 * MS).unwrap();
            a.release(t, now + 16 * MS);
        }
        assert_eq!(a.min_rtt(), Some(Duration::from_millis(8)), "the slower backend's new baseline");
    }
}
