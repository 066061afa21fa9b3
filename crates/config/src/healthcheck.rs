//! HealthCheck resources → probes the proxy runs against a host's endpoints.

use std::time::Duration;

use crate::compile::Ctx;
use crate::load::Resource;
use crate::snapshot::{HealthProbe, Probe};
use crate::weft_kinds::HealthCheck;

pub(crate) fn compile(r: &Resource, hc: &HealthCheck, ctx: &mut Ctx<'_>) -> Option<HealthProbe> {
    let host = ctx.resolve(r, &hc.host);
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return None;
    }
    if !ctx.services.contains_key(&host) {
        ctx.err(r, "spec.host", format!("no ServiceEntry declares host {:?}", hc.host));
        return None;
    }
    let probe = match (&hc.http, &hc.tcp, &hc.grpc) {
        (Some(h), None, None) => {
            if !h.path.starts_with('/') {
                ctx.err(r, "spec.http.path", format!("{:?} must start with /", h.path));
                return None;
            }
            if let Some(bad) = h.expected_statuses.iter().find(|s| !(100..=599).contains(*s)) {
                ctx.err(r, "spec.http.expectedStatuses", format!("{bad} is not an HTTP status"));
                return None;
            }
            Probe::Http { path: h.path.clone(), expected: h.expected_statuses.clone() }
        }
        (None, Some(_), None) => Probe::Tcp,
        (None, None, Some(g)) => Probe::Grpc { service: g.service.clone() },
        _ => {
            ctx.err(r, "spec", "exactly one of http, tcp or grpc is required");
            return None;
        }
    };
    let interval = hc.interval.map(|d| d.0).unwrap_or(Duration::from_secs(10));
    if interval < Duration::from_millis(50) {
        ctx.err(r, "spec.interval", "must be at least 50ms");
        return None;
    }
    let timeout = hc.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1)).min(interval);
    if timeout.is_zero() {
        ctx.err(r, "spec.timeout", "must be longer than zero");
        return None;
    }
    Some(HealthProbe {
        name: format!("HealthCheck/{}", r.metadata.name),
        host,
        probe,
        interval,
        timeout,
        unhealthy_threshold: hc.unhealthy_threshold.unwrap_or(3).max(1),
        healthy_threshold: hc.healthy_threshold.unwrap_or(2).max(1),
    })
}
