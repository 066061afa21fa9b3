//! `GET /v1/endpoints`: the registry as `weft get endpoints` shows it, each
//! registration with the time its TTL has left and the proxies whose outlier
//! detection ejects it (from their reports); `GET /v1/recommendations`: each registered
//! service's recommended replica count ([`crate::replicas`]).

use std::collections::BTreeMap;

use http::StatusCode;
use weft_api::{EndpointInfo, Listing, Recommendation};

use crate::replicas;

use super::{json_reply, Resp, Server};

impl Server {
    pub(super) async fn endpoints(&self) -> Resp {
        let ejected = self.reports.ejected(tokio::time::Instant::now());
        let p = self.plane.lock().await;
        let items: Vec<EndpointInfo> = p
            .registrations()
            .into_iter()
            .map(|r| EndpointInfo {
                ttl_left_ms: p.ttl_left_ms(&r),
                ejected_by: ejected
                    .iter()
                    .filter(|(_, e)| e.service == r.service && e.address == r.address)
                    .map(|(node, e)| format!("{node}: {}", e.reason))
                    .collect(),
                registration: r,
            })
            .collect();
        json_reply(StatusCode::OK, &Listing { revision: p.revision(), items })
    }
}

impl Server {
    pub(super) async fn recommendations(&self) -> Resp {
        let concurrency = self.reports.inbound_concurrency(tokio::time::Instant::now());
        let p = self.plane.lock().await;
        let items = p.registrations_by_service().into_iter().map(|(service, regs)| recommendation(service, &regs, &concurrency)).collect();
        json_reply(StatusCode::OK, &Listing { revision: p.revision(), items })
    }
}

/// A service of `regs` (at least one): its target is the lowest its endpoints' labels name.
fn recommendation(service: String, regs: &[weft_api::Registration], concurrency: &BTreeMap<String, f64>) -> Recommendation {
    let target = regs.iter().filter_map(|r| r.labels.get(replicas::TARGET_LABEL)).filter_map(|v| replicas::target(v)).reduce(f64::min);
    let observed = concurrency.get(&service).copied();
    Recommendation {
        namespace: regs.first().and_then(|r| r.namespace.clone()).unwrap_or_else(|| "default".into()),
        endpoints: regs.len() as u64,
        concurrency: observed,
        target_concurrency: target,
        recommended: replicas::recommend(regs.len(), observed, target).map(|n| n as u64),
        service,
    }
}
