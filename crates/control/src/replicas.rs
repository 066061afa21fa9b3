//! Recommended replica counts: per registered service, how many endpoints would serve
//! its load at its target concurrency, by Kubernetes' horizontal pod autoscaler rule —
//! for `weft get services` to show and other orchestrators to act on. Pure.
//!
//! The load is what the service's own sidecars report their inbound listeners served
//! (a workload token reports only as its own service: no other workload can move this
//! service's recommendation). The target is the endpoints' `weft.io/target-concurrency`
//! label (`weft run --target-concurrency` sets it); without one, none is recommended.

/// No change while observed/target is within this of 1 (Kubernetes' default, 10 %).
pub const TOLERANCE: f64 = 0.1;
/// The registration label holding a service's target concurrency per endpoint.
pub const TARGET_LABEL: &str = "weft.io/target-concurrency";
/// The highest target taken from a label (beyond it the label is ignored).
pub const MAX_TARGET: f64 = 1e6;
/// The most replicas the control plane ever recommends.
pub const MAX_RECOMMENDED: usize = 1000;

/// The HPA rule: ceil(current × observed / target), unchanged within [`TOLERANCE`],
/// bounded by `min..=max`; nonsense (a NaN, a negative value, no instance) changes nothing.
pub fn hpa(current: usize, observed: f64, target: f64, min: usize, max: usize) -> usize {
    let ratio = observed / target;
    // (A load too large to divide is as high as it gets.)
    if current > 0 && observed.is_finite() && ratio == f64::INFINITY {
        return max.max(min);
    }
    if current == 0 || !ratio.is_finite() || ratio < 0.0 || (ratio - 1.0).abs() <= TOLERANCE {
        return current.clamp(min, max);
    }
    // (`as` saturates: an absurd ratio is `max`, not a wrapped count.)
    ((current as f64 * ratio).ceil().min(max as f64) as usize).clamp(min, max)
}

/// A target from a label's value: a number from [`MIN_TARGET`] to [`MAX_TARGET`].
pub fn target(label: &str) -> Option<f64> {
    let t: f64 = label.trim().parse().ok()?;
    (t.is_finite() && (MIN_TARGET..=MAX_TARGET).contains(&t)).then_some(t)
}

/// The smallest target: a hundredth of a request at a time (smaller ones only overflow).
pub const MIN_TARGET: f64 = 0.01;

/// The recommendation for a service of `endpoints` whose sidecars served `concurrency`
/// requests at a time in all, against `target` per endpoint; none without a target, a
/// measure or an endpoint.
pub fn recommend(endpoints: usize, concurrency: Option<f64>, target: Option<f64>) -> Option<usize> {
    let (concurrency, target) = (concurrency?, target?);
    if endpoints == 0 {
        return None;
    }
    Some(hpa(endpoints, concurrency / endpoints as f64, target, 1, MAX_RECOMMENDED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendations_follow_the_hpa_rule() {
        assert_eq!(recommend(1, Some(6.0), Some(2.0)), Some(3));
        assert_eq!(recommend(3, Some(0.0), Some(2.0)), Some(1), "idle: one");
        assert_eq!(recommend(3, Some(6.3), Some(2.0)), Some(3), "within 10 %");
        assert_eq!(recommend(4, Some(5.0), Some(2.0)), Some(3));
        assert_eq!(recommend(0, Some(5.0), Some(2.0)), None);
        assert_eq!(recommend(2, None, Some(2.0)), None);
        assert_eq!(recommend(2, Some(5.0), None), None);
        // Hostile measures stay bounded.
        assert_eq!(recommend(2, Some(1e300), Some(1.0)), Some(MAX_RECOMMENDED));
        assert_eq!(recommend(2, Some(f64::INFINITY), Some(1.0)), Some(2));
        assert_eq!(recommend(2, Some(f64::NAN), Some(1.0)), Some(2));
        // A finite load over a target so small the ratio overflows: as high as it goes.
        assert_eq!(hpa(2, 1e300, 1e-10, 1, MAX_RECOMMENDED), MAX_RECOMMENDED);
    }

    #[test]
    fn targets_from_labels_are_checked() {
        assert_eq!(target("4"), Some(4.0));
        assert_eq!(target(" 2.5 "), Some(2.5));
        for bad in ["0", "-1", "NaN", "inf", "1e7", "", "four", &"9".repeat(400), "1e-300", "0.001"] {
            assert_eq!(target(bad), None, "{bad}");
        }
    }
}
