use std::sync::atomic::Ordering;

use crate::{EndpointLoad, WeightedRandom};

/// Estimate before any response has been seen.
pub(crate) const DEFAULT_RTT_NS: f64 = 1_000_000.0;
/// Decay time constant: an observation's weight halves in about 7 s.
const TAU_NS: f64 = 10_000_000_000.0;

/// PEAK_EWMA (weft extension): power of two choices over a peak-sensitive moving
/// average of latency, multiplied by outstanding requests — Linkerd's balancer.
///
/// A slow response raises an endpoint's estimate at once (the peak); fast ones
/// lower it gradually; idle time decays it so an endpoint that was slow gets probed
/// again. Cost = estimate × (active + 1) / weight; the cheaper candidate wins.
#[derive(Debug)]
pub struct PeakEwma {
    weights: Vec<u32>,
    draw: WeightedRandom,
    clock: fn() -> u64,
}

impl PeakEwma {
    /// `clock` returns monotonic nanoseconds (the proxy passes its coarse clock).
    pub fn new(weights: &[u32], clock: fn() -> u64) -> Self {
        PeakEwma { weights: weights.iter().map(|w| (*w).max(1)).collect(), draw: WeightedRandom::new(weights), clock }
    }

    #[inline]
    pub fn pick<L: crate::HasLoad>(&self, loads: &[L]) -> Option<usize> {
        let n = self.weights.len();
        if n <= 1 {
            return if n == 1 { Some(0) } else { None };
        }
        let (a, b) = self.draw.pick_two()?;
        let now = (self.clock)();
        let cost = |i: usize| {
            let l = loads[i].load();
            decayed(l, now) * (l.active() as f64 + 1.0) / self.weights[i] as f64
        };
        if loads.len() < n {
            return Some(a);
        }
        Some(if cost(a) <= cost(b) { a } else { b })
    }
}

pub(crate) fn decayed(l: &EndpointLoad, now: u64) -> f64 {
    let est = f64::from_bits(l.ewma_ns.load(Ordering::Relaxed));
    let stamp = l.stamp_ns.load(Ordering::Relaxed);
    let elapsed = now.saturating_sub(stamp) as f64;
    if stamp == 0 {
        return est;
    }
    est * (-elapsed / TAU_NS).exp()
}

pub(crate) fn observe(l: &EndpointLoad, rtt: f64, now: u64) {
    let stamp = l.stamp_ns.swap(now, Ordering::Relaxed);
    let est = f64::from_bits(l.ewma_ns.load(Ordering::Relaxed));
    let next = if stamp == 0 || rtt > est {
        rtt // the peak: a slow response counts in full at once
    } else {
        let w = (-(now.saturating_sub(stamp) as f64) / TAU_NS).exp();
        est * w + rtt * (1.0 - w)
    };
    l.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> u64 {
        1_000_000_000
    }

    #[test]
    fn slow_endpoint_is_avoided() {
        let loads: Vec<EndpointLoad> = (0..3).map(|_| EndpointLoad::default()).collect();
        loads[0].observe(40_000_000, 999_000_000);
        loads[1].observe(1_000_000, 999_000_000);
        loads[2].observe(1_000_000, 999_000_000);
        let b = PeakEwma::new(&[1, 1, 1], clock);
        let c = crate::tally(3000, 3, || b.pick(&loads));
        assert_eq!(c[0], 0, "{c:?}");
    }

    #[test]
    fn peak_then_decay() {
        let l = EndpointLoad::default();
        l.observe(1_000_000, 1);
        l.observe(50_000_000, 2);
        assert!((l.estimate_ns(2) - 50_000_000.0).abs() < 1.0);
        l.observe(1_000_000, 5_000_000_000);
        let e = l.estimate_ns(5_000_000_000);
        assert!(e < 50_000_000.0 && e > 1_000_000.0, "{e}");
    }
}
