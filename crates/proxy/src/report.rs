//! Reporting traffic to the control plane followed (`POST /v1/report`), for its web
//! console: every ~10 s (jittered, so that proxies started together spread out), one
//! small task on the admin runtime reads the request counters the proxy already keeps
//! (atomics, as a scrape reads them) and the endpoints outlier detection ejected, and
//! sends them; a sidecar adds what its inbound listener served. Nothing is added to the request path; a report that fails is dropped
//! (the next one carries the cumulative counts).

use std::time::Duration;

use weft_api::report::{DestinationCounts, Ejected, InboundCounts, Report, MAX_DESTINATIONS, MAX_EJECTED};
use weft_api::Message;

use crate::follow::ControlPlane;
use crate::state::Shared;

/// How often a proxy reports (±10 %); `WEFT_REPORT_INTERVAL_MS` changes it (tests).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Reports to `cp` as `node` until the process ends.
pub async fn run(shared: &'static Shared, cp: ControlPlane, node: String) {
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let interval = interval();
    let mut warned = false;
    loop {
        tokio::time::sleep(interval.mul_f64(0.9 + fastrand::f64() / 5.0)).await;
        let report = build(shared, &node, started_ms);
        match crate::follow::call(&cp, "/v1/report", report.encode(), Duration::from_secs(5)).await {
            Ok((200, _)) => warned = false,
            // (Logged once until a report gets through: an old control plane has no /v1/report.)
            Ok((status, body)) if !warned => {
                tracing::warn!("the control plane refused a traffic report ({status}): {}", String::from_utf8_lossy(&body).trim());
                warned = true;
            }
            Err(e) if !warned => {
                tracing::debug!("traffic report not sent: {e}");
            }
            _ => {}
        }
    }
}

fn interval() -> Duration {
    std::env::var("WEFT_REPORT_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms >= 100)
        .map(Duration::from_millis)
        .unwrap_or(REPORT_INTERVAL)
}

/// The report: the counters as they are now.
pub fn build(shared: &Shared, node: &str, started_ms: u64) -> Report {
    let m = shared.metrics;
    let destinations = m
        .outbound_totals(MAX_DESTINATIONS)
        .into_iter()
        .map(|(service, t)| DestinationCounts { service, requests: t.requests, errors: t.errors, buckets: t.buckets.to_vec() })
        .collect();
    Report {
        node: node.to_owned(),
        started_ms,
        service: m.source_workload().to_owned(),
        namespace: m.source_namespace().to_owned(),
        destinations,
        ejected: ejected(shared),
        inbound: shared.inbound.is_some().then(|| inbound(shared)),
    }
}

/// What the inbound listener served the app (a sidecar's admin `/stats/inbound` too).
pub fn inbound(shared: &Shared) -> InboundCounts {
    let t = shared.metrics.inbound_totals();
    InboundCounts { requests: t.requests, errors: t.errors, buckets: t.buckets.to_vec(), duration_sum_us: t.duration_sum_us }
}

/// The endpoints outlier detection keeps out now, per cluster's service.
fn ejected(shared: &Shared) -> Vec<Ejected> {
    let rt = shared.current.load();
    let now = crate::cluster::now_ns();
    let mut out = Vec::new();
    for c in rt.clusters.iter() {
        for e in c.endpoints.iter() {
            if let Some((until, reason)) = e.health.ejection(now) {
                out.push(Ejected {
                    service: c.spec.service.clone(),
                    address: e.id.clone(),
                    reason: reason.name().to_owned(),
                    remaining_ms: until.saturating_sub(now) / 1_000_000,
                });
            }
            if out.len() >= MAX_EJECTED {
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// The buckets a report carries are the ones the proxy counts in.
    #[test]
    fn reports_use_the_proxys_duration_buckets() {
        assert_eq!(weft_telemetry::DURATION_BUCKETS_MS, weft_api::report::DURATION_BOUNDS_MS);
    }
}
