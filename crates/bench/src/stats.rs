//! Is B different from A? Confidence intervals over paired rounds (pure).
//!
//! `weft ab` runs A and B in alternating rounds, so each round of B has a round
//! of A next to it in time and both saw the same machine. Each metric becomes
//! one value per round and target; the comparison works on the paired
//! per-round log ratios `ln(b_i / a_i)` (absolute differences for rates that
//! can be zero) with a Student t interval. With the 3–10 rounds an A/B run
//! has, a percentile bootstrap over rounds gives intervals that are too narrow
//! (it ignores that the spread itself is estimated from a handful of values);
//! the t interval is what that bootstrap approaches with many rounds, with the
//! right coverage at few.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// An estimate with its confidence interval, in the metric's comparison unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// The interval leaves zero out: the difference is real at this confidence.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Two-sided Student t quantile for `confidence` with `n - 1` degrees of freedom.
fn t_quantile(n: usize, confidence: f64) -> Option<f64> {
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    Some(dist.inverse_cdf(1.0 - (1.0 - confidence) / 2.0))
}

/// Mean and t interval of a sample of differences.
fn t_interval(d: &[f64], confidence: f64) -> Option<Interval> {
    if d.len() < 2 || d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = t_quantile(d.len(), confidence)? * (var / n).sqrt();
    Some(Interval { estimate: mean, low: mean - half, high: mean + half })
}

/// B relative to A (0.12 = B is 12 % higher), from paired rounds of a positive metric.
pub fn relative(a: &[f64], b: &[f64], confidence: f64) -> Option<Interval> {
    if a.len() != b.len() || a.iter().chain(b).any(|v| *v <= 0.0) {
        return None;
    }
    let logs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (y / x).ln()).collect();
    let i = t_interval(&logs, confidence)?;
    Some(Interval { estimate: i.estimate.exp_m1(), low: i.low.exp_m1(), high: i.high.exp_m1() })
}

/// B minus A, from paired rounds (for rates that may be zero, such as error rates).
pub fn absolute(a: &[f64], b: &[f64], confidence: f64) -> Option<Interval> {
    if a.len() != b.len() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    t_interval(&d, confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles() {
        assert!((t_quantile(5, 0.95).unwrap() - 2.776).abs() < 1e-3);
        assert!((t_quantile(31, 0.99).unwrap() - 2.750).abs() < 1e-3);
    }

    #[test]
    fn intervals() {
        let a = [100.0, 102.0, 98.0, 101.0];
        let b = [120.0, 122.5, 117.0, 121.0];
        let i = relative(&a, &b, 0.95).unwrap();
        assert!((i.estimate - 0.2).abs() < 0.01, "{i:?}");
        assert!(i.excludes_zero() && i.low > 0.15 && i.high < 0.25, "{i:?}");
        let same = relative(&a, &a, 0.95).unwrap();
        assert_eq!((same.estimate, same.low, same.high), (0.0, 0.0, 0.0));
        assert!(!same.excludes_zero());
        assert!(relative(&[1.0], &[2.0], 0.95).is_none(), "one round has no spread");
        assert!(relative(&[0.0, 1.0], &[1.0, 1.0], 0.95).is_none());
        let e = absolute(&[0.0, 0.0, 0.0], &[0.01, 0.02, 0.015], 0.95).unwrap();
        assert!(e.excludes_zero() && (e.estimate - 0.015).abs() < 1e-9);
    }
}
