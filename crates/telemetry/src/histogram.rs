use std::sync::atomic::{AtomicU64, Ordering};

/// Istio's default buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 13] = [0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
/// Istio's buckets for request and response sizes: 1 B to 1 GB in powers of ten.
pub const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// A fixed-bucket histogram of atomics. Counts per bucket are not cumulative here;
/// rendering accumulates them.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    /// Observations above the last bound.
    over: AtomicU64,
    /// Sum in thousandths of the unit, so that sub-unit observations add up.
    sum_milli: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: &'static [f64; N]) -> Self {
        Histogram { bounds, buckets: std::array::from_fn(|_| AtomicU64::new(0)), over: AtomicU64::new(0), sum_milli: AtomicU64::new(0) }
    }

    #[inline]
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        if i < N {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        } else {
            self.over.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_milli.fetch_add((v * 1000.0) as u64, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) pairs, then the total count and the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(N);
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            acc += c.load(Ordering::Relaxed);
            out.push((*b, acc));
        }
        let total = acc + self.over.load(Ordering::Relaxed);
        (out, total, self.sum_milli.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative() {
        let h = Histogram::new(&DURATION_BUCKETS_MS);
        h.observe(0.2);
        h.observe(3.0);
        h.observe(20000.0);
        let (b, total, sum) = h.snapshot();
        assert_eq!(b[0], (0.5, 1));
        assert_eq!(b[2], (5.0, 2));
        assert_eq!(total, 3);
        assert!((sum - 20003.2).abs() < 0.01);
    }
}
