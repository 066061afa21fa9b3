//! Envoy's retry back-off: fully jittered exponential.

use std::time::Duration;

/// The wait before retry number `retry` (1 for the first), given a uniform `r` in 0..1:
/// uniform in `[0, base × (2^retry − 1)]`, the upper bound capped at `max`.
pub fn backoff(retry: u32, base: Duration, max: Duration, r: f64) -> Duration {
    let factor = (1u64 << retry.clamp(1, 30)) - 1;
    let upper = base.saturating_mul(factor.min(u32::MAX as u64) as u32).min(max);
    upper.mul_f64(r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_and_cap() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(25));
        assert_eq!(backoff(2, base, max, 1.0), Duration::from_millis(75));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_millis(175));
        assert_eq!(backoff(4, base, max, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(40, base, max, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(2, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(2, base, max, 0.5), Duration::from_micros(37_500));
    }
}
