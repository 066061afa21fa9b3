//! ServiceEntry and WorkloadEntry checks, as Istio's validation makes them: hosts,
//! ports, addresses, resolution, endpoints, workload selectors; each problem with its
//! field path. A ServiceEntry that passes declares its hosts in the compile's context.

use std::collections::HashMap;

use crate::compile::{Ctx, Service};
use crate::istio::*;
use crate::load::Resource;
use crate::rules;

pub(crate) fn check_service_entry<'a>(r: &'a Resource, se: &'a ServiceEntry, ctx: &mut Ctx<'a>) {
    if se.hosts.is_empty() {
        ctx.err(r, "spec.hosts", "at least one host is required");
    }
    if se.ports.is_empty() {
        // (Valid in Istio, which then makes no cluster of it either.)
        ctx.warn(r, "spec.ports", "no ports: weft makes no cluster for this entry and routes no traffic to it");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        if h == "*" {
            ctx.err(r, p, "a ServiceEntry's host may not be the wildcard \"*\"");
        } else if let Some(rest) = h.strip_prefix("*.") {
            if let Err(e) = rules::dns_name(rest) {
                ctx.err(r, p, e);
            }
        } else if let Some(rest) = h.strip_prefix('*') {
            // (Istio accepts a partial wildcard with a warning.)
            match rules::dns_name(rest) {
                Ok(()) => ctx.warn(r, p, format!("{} is a partial wildcard: only `*.` prefixes match as wildcards", rules::shown(h))),
                Err(e) => ctx.err(r, p, e),
            }
        } else if let Err(e) = rules::dns_name(h) {
            ctx.err(r, p, e);
        }
    }
    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        if let Err(e) = rules::ip_or_cidr(a) {
            ctx.err(r, format!("spec.addresses[{i}]"), e);
        }
    }
    if cidr && matches!(se.resolution(), Resolution::Dns | Resolution::DnsRoundRobin) {
        ctx.err(r, "spec.addresses", "CIDR addresses are allowed only with resolution NONE or STATIC");
    }
    if let Some(sel) = &se.workload_selector {
        if !se.endpoints.is_empty() {
            ctx.err(r, "spec.workloadSelector", "only one of workloadSelector or endpoints may be set");
        }
        for (k, v) in &sel.labels {
            if k.contains('*') || v.contains('*') {
                ctx.err(r, format!("spec.workloadSelector.labels[{k}]"), "a wildcard is not supported in a selector");
            }
        }
        for (k, e) in rules::labels(&sel.labels) {
            ctx.err(r, format!("spec.workloadSelector.labels[{k}]"), e);
        }
    }
    let (mut numbers, mut names) = (HashMap::new(), HashMap::new());
    for (i, p) in se.ports.iter().enumerate() {
        // (Istio's validation: port numbers and names are unique within a ServiceEntry.)
        if numbers.insert(p.number, i).is_some() {
            ctx.err(r, format!("spec.ports[{i}].number"), format!("port number {} is not unique", p.number));
        }
        if !p.name.is_empty() {
            if let Err(e) = rules::port_name(&p.name) {
                ctx.err(r, format!("spec.ports[{i}].name"), e);
            }
        }
        if !p.name.is_empty() && names.insert(p.name.as_str(), i).is_some() {
            ctx.err(r, format!("spec.ports[{i}].name"), format!("port name {} is not unique", crate::rules::shown(&p.name)));
        }
        if p.number == 0 || p.number > 65535 {
            ctx.err(r, format!("spec.ports[{i}].number"), format!("port {} out of range 1-65535", p.number));
        }
        if let Some(t) = p.target_port {
            if t == 0 || t > 65535 {
                ctx.err(r, format!("spec.ports[{i}].targetPort"), format!("port {t} out of range 1-65535"));
            }
        }
        if let Some(proto) = &p.protocol {
            const KNOWN: [&str; 11] = ["HTTP", "HTTP2", "HTTPS", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP"];
            if !KNOWN.contains(&proto.to_ascii_uppercase().as_str()) {
                ctx.err(
                    r,
                    format!("spec.ports[{i}].protocol"),
                    format!("unknown value \"{proto}\" (expected one of {})", KNOWN.join(", ")),
                );
            }
        }
    }
    if se.resolution_written == Some(Resolution::None) && !se.endpoints.is_empty() {
        // (Istio's rule on an explicit NONE; an omitted resolution with endpoints is read
        // as their addresses, as weft always has.)
        ctx.err(r, "spec.endpoints", "resolution NONE takes no endpoints (use STATIC or DNS)");
    }
    if se.resolution() == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
        // (Istio's validation: one endpoint at most, resolved round-robin by DNS.)
        ctx.err(r, "spec.endpoints", "resolution DNS_ROUND_ROBIN takes at most one endpoint");
    }
    let mut weights = 0u64;
    for (i, ep) in se.endpoints.iter().enumerate() {
        if ep.address.is_empty() {
            ctx.err(r, format!("spec.endpoints[{i}].address"), "missing field");
        } else if se.resolution() == Resolution::Static && ep.address.parse::<std::net::IpAddr>().is_err() {
            ctx.err(
                r,
                format!("spec.endpoints[{i}].address"),
                format!("{} is not an IP address (resolution STATIC needs IPs; use resolution DNS for names)", rules::shown(&ep.address)),
            );
        } else if let Err(e) = rules::host(&ep.address) {
            ctx.err(r, format!("spec.endpoints[{i}].address"), e);
        }
        for (k, e) in rules::labels(ep.labels.as_ref()) {
            ctx.err(r, format!("spec.endpoints[{i}].labels[{k}]"), e);
        }
        // (Istio's range is uint32, 0 meaning 1; Envoy refuses a sum over uint32.)
        let before = weights;
        weights += u64::from(ep.weight.unwrap_or(1).max(1));
        if weights > rules::MAX_WEIGHT_SUM && before <= rules::MAX_WEIGHT_SUM {
            ctx.err(
                r,
                format!("spec.endpoints[{i}].weight"),
                format!("the endpoints' weights add up to more than {} (Envoy's limit)", rules::MAX_WEIGHT_SUM),
            );
        }
        for (pname, port) in ep.ports.iter() {
            if *port == 0 || *port > 65535 {
                ctx.err(r, format!("spec.endpoints[{i}].ports.{pname}"), format!("port {port} out of range 1-65535"));
            } else if !se.ports.iter().any(|p| &p.name == pname) {
                ctx.warn(r, format!("spec.endpoints[{i}].ports.{pname}"), format!("no service port is named {pname:?}"));
            }
        }
        if let Some(Err(e)) = ep.locality.as_deref().map(rules::locality) {
            ctx.err(r, format!("spec.endpoints[{i}].locality"), e);
        }
    }
    if se.resolution() == Resolution::Static && se.endpoints.is_empty() && se.workload_selector.is_none() {
        ctx.warn(r, "spec.endpoints", "resolution STATIC with no endpoints: requests will get 503");
    }
    index_service_entry(r, se, ctx);
}

/// The services `se` declares, into `ctx.services` (where another entry declares a host
/// too, the proxy's own namespace's wins, else the first).
pub(crate) fn index_service_entry<'a>(r: &'a Resource, se: &'a ServiceEntry, ctx: &mut Ctx<'a>) {
    let namespace = crate::names::namespace_of(r);
    for h in &se.hosts {
        let key = h.to_ascii_lowercase();
        if let Some(prev) = ctx.services.get(&key) {
            // Two namespaces may each declare a host: the proxy's own namespace's
            // declaration wins, else the first (Istio's choice).
            if prev.namespace != namespace {
                if namespace == ctx.viewer && prev.namespace != ctx.viewer {
                    ctx.services.insert(key, Service { entry: se, resource: r, name: &r.metadata.name, namespace });
                }
                continue;
            }
            let msg = format!("host {h:?} is already declared by ServiceEntry {}", prev.name);
            ctx.warn(r, "spec.hosts", msg);
            continue;
        }
        ctx.services.insert(key, Service { entry: se, resource: r, name: &r.metadata.name, namespace });
    }
}

/// A WorkloadEntry's fields by Istio's rules; whether weft can send to it (Istio also
/// accepts entries weft cannot reach: a Unix socket, or no address behind a network's
/// gateway — those are valid, warned and left out of clusters).
pub(crate) fn check_workload_entry(r: &Resource, we: &WorkloadEntry, ctx: &mut Ctx<'_>) -> bool {
    let before = ctx.diags.errors.len();
    let mut reachable = true;
    if let Some(path) = we.address.strip_prefix("unix://") {
        if !we.ports.is_empty() {
            ctx.err(r, "spec.ports", "a Unix socket address takes no ports");
        }
        if path.ends_with('/') {
            ctx.err(r, "spec.address", "a Unix socket may not be a directory");
        } else if !path.starts_with('/') && !path.starts_with('@') {
            ctx.err(r, "spec.address", "a Unix socket is an absolute path or an abstract socket (@name)");
        }
        ctx.warn(r, "spec.address", "weft does not send to Unix sockets: this entry is no endpoint");
        reachable = false;
    } else if we.address.is_empty() {
        match &we.network {
            Some(_) => {
                ctx.warn(r, "spec.address", "no address (reached through its network's gateway): weft does not send to it");
                reachable = false;
            }
            None => ctx.err(r, "spec.address", "missing field"),
        }
    } else if let Err(e) = rules::host(&we.address) {
        ctx.err(r, "spec.address", e);
    }
    for name in we.ports.keys() {
        if let Err(e) = rules::port_name(name) {
            ctx.err(r, format!("spec.ports.{}", rules::shown(name)), e);
        }
    }
    for (k, e) in rules::labels(we.labels.as_ref()) {
        ctx.err(r, format!("spec.labels[{k}]"), e);
    }
    for (name, port) in we.ports.iter() {
        if *port == 0 || *port > 65535 {
            ctx.err(r, format!("spec.ports.{name}"), format!("port {port} out of range 1-65535"));
        }
    }
    if let Some(Err(e)) = we.locality.as_deref().map(rules::locality) {
        ctx.err(r, "spec.locality", e);
    }
    ctx.diags.errors.len() == before && reachable
}
