//! The arithmetic of the console's edges, pure: what happened between two cumulative
//! reports of one proxy (counts, and a rate over the time between them), and a
//! quantile from histogram buckets, interpolated within its bucket as Prometheus's
//! `histogram_quantile` does.

use weft_api::report::{DestinationCounts, DURATION_BOUNDS_MS};

/// Requests to one destination within a window (differences of cumulative counters).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    /// The requests, 5xx among them, per cumulative duration bucket.
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
    /// Requests per second over the window.
    pub rate: f64,
}

impl Window {
    /// What happened between `earlier` and `later` (the same proxy's reports, `seconds`
    /// apart); none when a counter went down (a restart: no window to speak of) or no
    /// time passed.
    pub fn between(earlier: Option<&DestinationCounts>, later: &DestinationCounts, seconds: f64) -> Option<Window> {
        let zero = DestinationCounts { service: String::new(), requests: 0, errors: 0, buckets: vec![0; DURATION_BOUNDS_MS.len()] };
        let earlier = earlier.unwrap_or(&zero);
        if seconds <= 0.0 || !later.grew_from(earlier) {
            return None;
        }
        let requests = later.requests - earlier.requests;
        Some(Window {
            requests,
            errors: later.errors - earlier.errors,
            buckets: later.buckets.iter().zip(&earlier.buckets).map(|(l, e)| l - e).collect(),
            rate: requests as f64 / seconds,
        })
    }

    /// Adds another proxy's window on the same edge: counts and rates add up.
    pub fn add(&mut self, other: &Window) {
        // (Saturating: one proxy's absurd counts must not wrap an edge's sum to nothing.)
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.rate += other.rate;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }

    /// The share of 5xx answers (0 to 1); none without requests.
    pub fn error_share(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The `q` quantile of the durations (ms).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(q, &DURATION_BOUNDS_MS, &self.buckets, self.requests)
    }
}

/// The `q` quantile (0 to 1) of `total` observations whose cumulative counts at each of
/// `bounds` are `cumulative`, as `histogram_quantile`: linear within the bucket the
/// rank falls in (the first from 0); in the last, open bucket, the highest bound.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[u64], total: u64) -> Option<f64> {
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for (bound, count) in bounds.iter().zip(cumulative) {
        if *count as f64 >= rank && *count > below {
            let within = (rank - below as f64) / (*count - below) as f64;
            return Some(lower + (bound - lower) * within);
        }
        (lower, below) = (*bound, *count);
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64, buckets: [u64; 13]) -> DestinationCounts {
        DestinationCounts { service: "s".into(), requests, errors, buckets: buckets.to_vec() }
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let bounds = [10.0, 20.0, 40.0];
        // 100 observations: 50 ≤ 10, 40 in (10, 20], 10 in (20, 40].
        assert_eq!(quantile(0.5, &bounds, &[50, 90, 100], 100), Some(10.0));
        assert_eq!(quantile(0.25, &bounds, &[50, 90, 100], 100), Some(5.0));
        assert_eq!(quantile(0.7, &bounds, &[50, 90, 100], 100), Some(15.0));
        assert_eq!(quantile(0.99, &bounds, &[50, 90, 100], 100), Some(38.0));
        // Above the last bound: the last bound, as Prometheus answers.
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 50], 100), Some(40.0));
        // Empty buckets below are skipped.
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 10], 10), Some(30.0));
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0], 0), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_reports() {
        let before = counts(100, 5, [0, 0, 50, 90, 100, 100, 100, 100, 100, 100, 100, 100, 100]);
        let after = counts(300, 25, [0, 0, 50, 90, 200, 300, 300, 300, 300, 300, 300, 300, 300]);
        let w = Window::between(Some(&before), &after, 10.0).unwrap();
        assert_eq!((w.requests, w.errors, w.rate), (200, 20, 20.0));
        assert_eq!(w.error_share(), Some(0.1));
        // 200 new requests, all in (10, 25] then (25, 50]: p99 near 50, p50 at 25.
        assert_eq!(w.quantile_ms(0.5), Some(25.0));
        assert!((w.quantile_ms(0.99).unwrap() - 49.5).abs() < 1e-9, "{:?}", w.quantile_ms(0.99));
        // A counter that went down (a restart) is no window.
        assert_eq!(Window::between(Some(&after), &before, 10.0), None);
        assert_eq!(Window::between(Some(&before), &after, 0.0), None);
    }

    #[test]
    fn windows_of_absurd_counts_saturate_instead_of_wrapping() {
        let mut edge = Window { requests: 1000, errors: 500, buckets: vec![1000; 13], rate: 1.0 };
        edge.add(&Window { requests: u64::MAX, errors: u64::MAX, buckets: vec![u64::MAX; 13], rate: 1.0 });
        assert_eq!((edge.requests, edge.errors), (u64::MAX, u64::MAX));
        assert_eq!(edge.buckets, vec![u64::MAX; 13]);
        assert_eq!(edge.error_share(), Some(1.0));
    }
}
