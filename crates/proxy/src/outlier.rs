//! Feeding outlier detection: each try's result is recorded on its endpoint; when a
//! threshold is crossed the cluster decides, by its ejection cap, whether to eject.

use std::sync::atomic::Ordering;

use weft_resilience::outlier::{Observed, Reason};

use crate::cluster::{now_ns, Cluster, Endpoint};
use crate::error::UpstreamError;
use crate::handler::{ConnCtx, Upstream};

/// Where an endpoint's cluster is found again once the config snapshot was let go.
#[derive(Clone, Copy)]
pub struct Home {
    pub cluster: usize,
    pub revision: u64,
}

/// What a try came to, for the detector.
pub(crate) fn observed(result: &Result<Upstream, UpstreamError>) -> Observed {
    match result {
        Ok(up) => Observed::Status(up.head().0),
        Err(_) => Observed::LocalOrigin,
    }
}

pub fn report(ctx: ConnCtx, home: Home, ep: &Endpoint, result: Observed, latency_ns: u64) {
    let Some(settings) = &ep.outlier else { return };
    let now = now_ns();
    let latency_due = settings.latency_mad_factor.is_some();
    if latency_due {
        ep.load.observe(latency_ns, now);
    }
    let reason = ep.health.record(settings, result);
    if reason.is_none() && !latency_due {
        return;
    }
    let rt = ctx.shared.current.load();
    if rt.revision != home.revision {
        return;
    }
    let Some(cluster) = rt.clusters.get(home.cluster) else { return };
    if let Some(reason) = reason {
        eject(ctx, cluster, ep, reason);
    }
    if let Some(k) = settings.latency_mad_factor {
        // At most once per interval, whichever request gets there first.
        let last = cluster.latency_checked.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= settings.interval.as_nanos() as u64;
        if due && cluster.latency_checked.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let live: Vec<&Endpoint> = cluster.endpoints.iter().map(|e| &**e).filter(|e| !e.health.is_ejected(now)).collect();
            let estimates: Vec<f64> = live.iter().map(|e| e.load.estimate_ns(now)).collect();
            for i in weft_resilience::outlier::latency_outliers(&estimates, k) {
                eject(ctx, cluster, live[i], Reason::Latency);
            }
        }
    }
}

fn eject(ctx: ConnCtx, cluster: &Cluster, ep: &Endpoint, reason: Reason) {
    if let Some(time) = cluster.try_eject(ep, reason) {
        ctx.shared.metrics.counters.outlier_ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("outlier detection ejected {} from {} for {time:?} ({})", ep.id, cluster.spec.name, reason.name());
    }
}
