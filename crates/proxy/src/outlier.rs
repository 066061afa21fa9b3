//! Feeding outlier detection: each try's result is recorded on its endpoint; when a
//! threshold is crossed the cluster decides, by its ejection cap, whether to eject.

use std::sync::atomic::Ordering;

use weft_resilience::outlier::{self, Observed, Reason, Settings};

use crate::cluster::{now_ns, Cluster, Endpoint};
use crate::error::UpstreamError;
use crate::phases::Upstream;
use crate::state::Shared;

/// What a try came to, for the detector.
pub(crate) fn observed(result: &Result<Upstream, UpstreamError>) -> Observed {
    match result {
        Ok(up) => Observed::Status(up.head().0),
        Err(_) => Observed::LocalOrigin,
    }
}

/// Records a try's result on `ep` (of `cluster`, which the request holds: a reload in
/// between changes nothing), ejecting it or others when a detector says so.
pub fn report(shared: &Shared, cluster: &Cluster, ep: &Endpoint, result: Observed, latency_ns: u64) {
    let Some(settings) = &ep.outlier else { return };
    let now = now_ns();
    if settings.latency_mad_factor.is_some() {
        ep.load.observe(latency_ns, now);
    }
    let periodic = settings.latency_mad_factor.is_some() || settings.success_rate.is_some() || settings.failure_percentage.is_some();
    let reason = ep.health.record(settings, result);
    if reason.is_none() && !periodic {
        return;
    }
    if let Some(reason) = reason {
        eject(shared, cluster, ep, reason);
    }
    if periodic {
        // The interval detectors run at most once per interval, on whichever request gets there first.
        let last = cluster.interval_checked.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= settings.interval.as_nanos() as u64;
        if due && cluster.interval_checked.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            interval_detectors(shared, cluster, settings, now);
        }
    }
}

/// Latency, success-rate and failure-percentage outliers among the endpoints in service.
fn interval_detectors(shared: &Shared, cluster: &Cluster, settings: &Settings, now: u64) {
    let live: Vec<&Endpoint> = cluster.endpoints.iter().map(|e| &**e).filter(|e| !e.health.is_ejected(now)).collect();
    // Every endpoint's window restarts, ejected ones included (their traffic was before the ejection).
    let windows: Vec<(u32, u32)> = cluster.endpoints.iter().map(|e| e.health.take_window()).collect();
    let live_windows: Vec<(u32, u32)> =
        cluster.endpoints.iter().zip(&windows).filter(|(e, _)| !e.health.is_ejected(now)).map(|(_, w)| *w).collect();
    if let Some(k) = settings.latency_mad_factor {
        let estimates: Vec<f64> = live.iter().map(|e| e.load.estimate_ns(now)).collect();
        for i in outlier::latency_outliers(&estimates, k) {
            eject(shared, cluster, live[i], Reason::Latency);
        }
    }
    if let Some(sr) = &settings.success_rate {
        for i in outlier::success_rate_outliers(&live_windows, sr) {
            eject(shared, cluster, live[i], Reason::SuccessRate);
        }
    }
    if let Some(fp) = &settings.failure_percentage {
        for i in outlier::failure_percentage_outliers(&live_windows, fp) {
            eject(shared, cluster, live[i], Reason::FailurePercentage);
        }
    }
}

fn eject(shared: &Shared, cluster: &Cluster, ep: &Endpoint, reason: Reason) {
    if let Some(time) = cluster.try_eject(ep, reason) {
        shared.metrics.counters.outlier_ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("outlier detection ejected {} from {} for {time:?} ({})", ep.id, cluster.spec.name, reason.name());
    }
}
