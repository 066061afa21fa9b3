//! Outlier detection by consecutive errors (Envoy's consecutive_5xx,
//! consecutive_gateway_failure and consecutive_local_origin_failure), kept per
//! endpoint in atomics: recording a result is a few relaxed operations, and an
//! endpoint's ejection ends by itself when its time is up.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A DestinationRule's `outlierDetection`, with Istio's defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Settings {
    /// 0 disables.
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub consecutive_local_origin: u32,
    /// Local-origin failures (connect, reset, timeout) count on their own instead of as 5xx.
    pub split_local_origin: bool,
    /// How fast the ejection multiplier decays while an endpoint stays healthy.
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored (panic routing).
    pub min_health_percent: u32,
    /// weft extension: eject endpoints whose latency estimate exceeds the median of
    /// their peers' by more than this many MADs (checked every `interval`).
    pub latency_mad_factor: Option<f64>,
    /// Envoy's success-rate detector (off unless configured, as in Istio).
    pub success_rate: Option<SuccessRate>,
    /// Envoy's failure-percentage detector (off unless configured).
    pub failure_percentage: Option<FailurePercentage>,
}

/// Success-rate outliers: among endpoints with at least `request_volume` requests in
/// the interval, and only when there are `minimum_hosts` of them, those whose success
/// rate is below `mean − stdev_factor × stdev`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SuccessRate {
    pub minimum_hosts: u32,
    pub request_volume: u32,
    pub stdev_factor: f64,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1.9 }
    }
}

/// Failure-percentage outliers: endpoints (with the same volume and host minimums)
/// whose share of failed requests in the interval is at least `threshold` percent.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FailurePercentage {
    pub threshold: u32,
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

impl Default for FailurePercentage {
    fn default() -> Self {
        FailurePercentage { threshold: 85, minimum_hosts: 5, request_volume: 50 }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            consecutive_local_origin: 5,
            split_local_origin: false,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
            latency_mad_factor: None,
            success_rate: None,
            failure_percentage: None,
        }
    }
}

/// The longest one ejection lasts, whatever the multiplier (Envoy's default).
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What one request to an endpoint came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A response with this status.
    Status(u16),
    /// Connect failure, reset or timeout: the proxy's own side of the exchange failed.
    LocalOrigin,
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
    Latency,
    SuccessRate,
    FailurePercentage,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGateway => "consecutive_gateway_failure",
            Reason::ConsecutiveLocalOrigin => "consecutive_local_origin_failure",
            Reason::Latency => "latency",
            Reason::SuccessRate => "success_rate",
            Reason::FailurePercentage => "failure_percentage",
        }
    }
}

/// One endpoint's detector state.
#[derive(Debug, Default)]
pub struct State {
    five_xx: AtomicU32,
    gateway: AtomicU32,
    local: AtomicU32,
    /// Clock value (ns) the current ejection ends at; 0 when not ejected.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    last_reason: AtomicU32,
    /// Requests and failures since the interval detectors last looked.
    window_total: AtomicU32,
    window_failed: AtomicU32,
}

impl State {
    /// Records a result; returns the reason when it crosses a threshold (the caller
    /// then decides, by the ejection cap, whether to [`State::eject`]).
    pub fn record(&self, s: &Settings, result: Observed) -> Option<Reason> {
        let bump = |c: &AtomicU32, limit: u32| limit > 0 && c.fetch_add(1, Ordering::Relaxed) + 1 >= limit;
        if s.success_rate.is_some() || s.failure_percentage.is_some() {
            self.window_total.fetch_add(1, Ordering::Relaxed);
            if !matches!(result, Observed::Status(c) if c < 500) {
                self.window_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        match result {
            Observed::Status(code) if code >= 500 => {
                self.local.store(0, Ordering::Relaxed);
                let gateway = matches!(code, 502..=504);
                if gateway && bump(&self.gateway, s.consecutive_gateway) {
                    return Some(Reason::ConsecutiveGateway);
                }
                if !gateway {
                    self.gateway.store(0, Ordering::Relaxed);
                }
                bump(&self.five_xx, s.consecutive_5xx).then_some(Reason::Consecutive5xx)
            }
            Observed::Status(_) => {
                self.five_xx.store(0, Ordering::Relaxed);
                self.gateway.store(0, Ordering::Relaxed);
                self.local.store(0, Ordering::Relaxed);
                None
            }
            Observed::LocalOrigin if s.split_local_origin => {
                bump(&self.local, s.consecutive_local_origin).then_some(Reason::ConsecutiveLocalOrigin)
            }
            // Not split: a local failure counts as the 503 the proxy answers with.
            Observed::LocalOrigin => {
                if bump(&self.gateway, s.consecutive_gateway) {
                    return Some(Reason::ConsecutiveGateway);
                }
                bump(&self.five_xx, s.consecutive_5xx).then_some(Reason::Consecutive5xx)
            }
        }
    }

    /// Ejects for `base × times ejected` (capped), the multiplier having decayed by one
    /// for every `interval` the endpoint stayed healthy since its last ejection ended.
    /// Returns how long.
    pub fn eject(&self, s: &Settings, reason: Reason, now_ns: u64) -> Duration {
        let last_end = self.ejected_until.load(Ordering::Relaxed);
        let healthy_for = now_ns.saturating_sub(last_end);
        let decay = (healthy_for / (s.interval.as_nanos().max(1) as u64)).min(u32::MAX as u64) as u32;
        let times = self.times_ejected.load(Ordering::Relaxed).saturating_sub(decay) + 1;
        self.times_ejected.store(times, Ordering::Relaxed);
        let time = s.base_ejection.saturating_mul(times).min(MAX_EJECTION.max(s.base_ejection));
        self.ejected_until.store(now_ns + time.as_nanos() as u64, Ordering::Relaxed);
        self.last_reason.store(reason as u32, Ordering::Relaxed);
        for c in [&self.five_xx, &self.gateway, &self.local] {
            c.store(0, Ordering::Relaxed);
        }
        time
    }

    #[inline]
    pub fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ns
    }

    /// For display: the ejection's end (ns) and reason, if ejected now.
    pub fn ejection(&self, now_ns: u64) -> Option<(u64, Reason)> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let reason = match self.last_reason.load(Ordering::Relaxed) {
            1 => Reason::ConsecutiveGateway,
            2 => Reason::ConsecutiveLocalOrigin,
            3 => Reason::Latency,
            4 => Reason::SuccessRate,
            5 => Reason::FailurePercentage,
            _ => Reason::Consecutive5xx,
        };
        (until > now_ns).then_some((until, reason))
    }

    /// The interval's (requests, failures), starting a new interval.
    pub fn take_window(&self) -> (u32, u32) {
        (self.window_total.swap(0, Ordering::Relaxed), self.window_failed.swap(0, Ordering::Relaxed))
    }
}

/// The indexes of success-rate outliers among the interval's (requests, failures).
pub fn success_rate_outliers(windows: &[(u32, u32)], sr: &SuccessRate) -> Vec<usize> {
    let rated: Vec<(usize, f64)> = windows
        .iter()
        .enumerate()
        .filter(|(_, (total, _))| *total >= sr.request_volume.max(1))
        .map(|(i, (total, failed))| (i, 1.0 - f64::from(*failed) / f64::from(*total)))
        .collect();
    if rated.is_empty() || rated.len() < sr.minimum_hosts as usize {
        return Vec::new();
    }
    let n = rated.len() as f64;
    let mean = rated.iter().map(|(_, r)| r).sum::<f64>() / n;
    let stdev = (rated.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    let limit = mean - sr.stdev_factor * stdev;
    rated.into_iter().filter(|(_, r)| *r < limit).map(|(i, _)| i).collect()
}

/// The indexes of failure-percentage outliers among the interval's (requests, failures).
pub fn failure_percentage_outliers(windows: &[(u32, u32)], fp: &FailurePercentage) -> Vec<usize> {
    let volume = |(total, _): &(u32, u32)| *total >= fp.request_volume.max(1);
    if windows.iter().filter(|w| volume(w)).count() < fp.minimum_hosts as usize {
        return Vec::new();
    }
    windows
        .iter()
        .enumerate()
        .filter(|(_, w)| volume(w) && u64::from(w.1) * 100 >= u64::from(fp.threshold) * u64::from(w.0))
        .map(|(i, _)| i)
        .collect()
}

/// Latency outliers: the indexes of estimates above `median + k × MAD` and above twice
/// the median (so that a tight, fast group does not eject its slowest member).
/// Needs at least three estimates.
pub fn latency_outliers(estimates: &[f64], k: f64) -> Vec<usize> {
    if estimates.len() < 3 {
        return Vec::new();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let m = median(&mut estimates.to_vec());
    let mad = median(&mut estimates.iter().map(|x| (x - m).abs()).collect());
    let limit = (m + k * mad).max(2.0 * m);
    estimates.iter().enumerate().filter(|(_, x)| **x > limit).map(|(i, _)| i).collect()
}

/// Whether one more ejection fits: at most `max_ejection_percent` of `total` endpoints,
/// but always at least one (as Envoy).
pub fn may_eject(s: &Settings, ejected: usize, total: usize) -> bool {
    ejected == 0 || (ejected + 1) * 100 <= s.max_ejection_percent as usize * total
}

/// Panic routing: too few healthy endpoints left, so ejections are ignored.
pub fn panic(s: &Settings, ejected: usize, total: usize) -> bool {
    total > 0 && (total - ejected.min(total)) * 100 < s.min_health_percent as usize * total
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn consecutive_5xx_ejects_and_success_resets() {
        let s = Settings { consecutive_5xx: 3, ..Default::default() };
        let st = State::default();
        assert_eq!(st.record(&s, Observed::Status(500)), None);
        assert_eq!(st.record(&s, Observed::Status(503)), None);
        assert_eq!(st.record(&s, Observed::Status(200)), None, "a success resets the count");
        assert_eq!(st.record(&s, Observed::Status(500)), None);
        assert_eq!(st.record(&s, Observed::LocalOrigin), None, "unsplit, a connect failure counts as 5xx");
        assert_eq!(st.record(&s, Observed::Status(502)), Some(Reason::Consecutive5xx));
    }

    #[test]
    fn gateway_and_split_local_origin() {
        let s = Settings {
            consecutive_5xx: 0,
            consecutive_gateway: 2,
            consecutive_local_origin: 2,
            split_local_origin: true,
            ..Default::default()
        };
        let st = State::default();
        assert_eq!(st.record(&s, Observed::Status(500)), None);
        assert_eq!(st.record(&s, Observed::Status(504)), None);
        assert_eq!(st.record(&s, Observed::Status(503)), Some(Reason::ConsecutiveGateway));
        let st = State::default();
        assert_eq!(st.record(&s, Observed::LocalOrigin), None);
        assert_eq!(st.record(&s, Observed::LocalOrigin), Some(Reason::ConsecutiveLocalOrigin));
    }

    #[test]
    fn ejection_time_grows_caps_and_decays() {
        let s = Settings { base_ejection: Duration::from_secs(30), interval: Duration::from_secs(10), ..Default::default() };
        let st = State::default();
        let mut now = 100 * S;
        assert_eq!(st.eject(&s, Reason::Consecutive5xx, now), Duration::from_secs(30));
        assert!(st.is_ejected(now + 29 * S) && !st.is_ejected(now + 30 * S));
        now += 30 * S; // ejected again as soon as it is back: ×2
        assert_eq!(st.eject(&s, Reason::Consecutive5xx, now), Duration::from_secs(60));
        now += 60 * S;
        for _ in 0..20 {
            st.eject(&s, Reason::Consecutive5xx, now);
            now = st.ejected_until.load(Ordering::Relaxed);
        }
        assert_eq!(st.eject(&s, Reason::Consecutive5xx, now), MAX_EJECTION);
        // Healthy for 100 s after that ejection ends: the multiplier drops by 10.
        let end = st.ejected_until.load(Ordering::Relaxed);
        let times = st.times_ejected.load(Ordering::Relaxed);
        st.eject(&s, Reason::ConsecutiveGateway, end + 100 * S);
        assert_eq!(st.times_ejected.load(Ordering::Relaxed), times - 10 + 1);
        assert_eq!(st.ejection(end + 100 * S).map(|(_, r)| r), Some(Reason::ConsecutiveGateway));
    }

    #[test]
    fn latency_outliers_by_median_and_mad() {
        assert_eq!(latency_outliers(&[1.0, 1.1, 0.9, 20.0], 3.0), vec![3]);
        assert!(latency_outliers(&[1.0, 1.2, 1.4, 1.6], 3.0).is_empty(), "a spread-out but fast group stays");
        assert!(latency_outliers(&[1.0, 1.0, 1.0, 1.9], 3.0).is_empty(), "not twice the median");
        assert_eq!(latency_outliers(&[5.0, 5.0, 5.0, 5.0, 50.0, 60.0], 3.0), vec![4, 5]);
        assert!(latency_outliers(&[1.0, 30.0], 3.0).is_empty(), "two endpoints have no majority");
    }

    #[test]
    fn success_rate_outliers_by_mean_and_stdev() {
        let sr = SuccessRate::default();
        // Five endpoints at 100 requests: four near 99 %, one at 60 %.
        let w = [(100, 1), (100, 0), (100, 2), (100, 1), (100, 40)];
        assert_eq!(success_rate_outliers(&w, &sr), vec![4]);
        assert!(success_rate_outliers(&w[..4], &sr).is_empty(), "fewer than minimum_hosts");
        let low = [(100, 1), (100, 0), (100, 2), (100, 1), (99, 40)];
        assert!(success_rate_outliers(&low, &sr).is_empty(), "the bad one is under request_volume, leaving four");
        assert!(success_rate_outliers(&[(100, 5); 6], &sr).is_empty(), "all alike");
    }

    #[test]
    fn failure_percentage_outliers_by_threshold() {
        let fp = FailurePercentage::default();
        let w = [(50, 0), (60, 1), (50, 43), (80, 68), (50, 42), (10, 10)];
        // 43/50 = 86 % and 68/80 = 85 % reach 85 %; 42/50 = 84 % does not; 10 requests are too few.
        assert_eq!(failure_percentage_outliers(&w, &fp), vec![2, 3]);
        assert!(failure_percentage_outliers(&w[..4], &fp).is_empty(), "fewer than minimum_hosts with volume");
    }

    #[test]
    fn windows_count_failures_when_a_detector_wants_them() {
        let s = Settings { success_rate: Some(SuccessRate::default()), ..Default::default() };
        let st = State::default();
        for r in [Observed::Status(200), Observed::Status(503), Observed::LocalOrigin, Observed::Status(404)] {
            st.record(&s, r);
        }
        assert_eq!(st.take_window(), (4, 2));
        assert_eq!(st.take_window(), (0, 0));
        let off = State::default();
        off.record(&Settings::default(), Observed::Status(500));
        assert_eq!(off.take_window(), (0, 0));
    }

    #[test]
    fn caps_and_panic() {
        let s = Settings { max_ejection_percent: 10, min_health_percent: 50, ..Default::default() };
        assert!(may_eject(&s, 0, 3), "one may always be ejected");
        assert!(!may_eject(&s, 1, 3));
        assert!(may_eject(&Settings { max_ejection_percent: 100, ..s }, 2, 3));
        assert!(!panic(&s, 1, 3) && panic(&s, 2, 3));
    }
}
