//! Feeding outlier detection: each try's result is recorded on its endpoint; when a
//! threshold is crossed the cluster decides, by its ejection cap, whether to eject.

use std::sync::atomic::Ordering;

use weft_resilience::outlier::Observed;

use crate::cluster::Endpoint;
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

pub fn report(ctx: ConnCtx, home: Home, ep: &Endpoint, result: Observed) {
    let Some(settings) = &ep.outlier else { return };
    let Some(reason) = ep.health.record(settings, result) else { return };
    let rt = ctx.shared.current.load();
    if rt.revision != home.revision {
        return;
    }
    let Some(cluster) = rt.clusters.get(home.cluster) else { return };
    if let Some(time) = cluster.try_eject(ep, reason) {
        ctx.shared.metrics.counters.outlier_ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("outlier detection ejected {} from {} for {time:?} ({})", ep.id, cluster.spec.name, reason.name());
    }
}
