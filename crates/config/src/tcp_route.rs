//! Opaque TCP: ServiceEntry ports whose protocol is `TCP`, `MONGO`, `MYSQL` or `REDIS`
//! are proxied as byte streams, routed by VirtualService `tcp[]` routes.
//!
//! Without traffic interception a client reaches such a service through the proxy's
//! listener for it: the service port on the proxy's listen address, or on each of the
//! service's VIPs (`addresses`) — a loopback VIP (`127.1.0.5`) needs no setup on Linux,
//! and several services may share a port number that way. A connection on a listener
//! takes the first `tcp[]` route of a VirtualService for that service whose match holds
//! (`port`: the listener's; `destinationSubnets`: the address the client connected to;
//! `sourceLabels`: the proxy's own `--label`s; `sourceNamespace`: its namespace), else
//! goes to the service itself; the route's weighted destinations split connections.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use weft_authz::matchers::Cidr;

use crate::compile::Ctx;
use crate::istio::{TcpRoute, VirtualService};
use crate::load::Resource;
use crate::snapshot::{ClusterChoice, HeaderOps, WeightedClusters, WeightedTarget};

/// The most TCP listeners one config opens (each is a socket of the proxy's).
pub const MAX_LISTENERS: usize = 1024;

/// The port protocols weft proxies as opaque TCP.
pub const OPAQUE: [&str; 4] = ["TCP", "MONGO", "MYSQL", "REDIS"];

/// Whether a ServiceEntry port's protocol is opaque TCP.
pub fn is_opaque(protocol: Option<&str>) -> bool {
    protocol.is_some_and(|p| OPAQUE.contains(&p.to_ascii_uppercase().as_str()))
}

/// A listener the proxy opens for a TCP service port.
#[derive(Debug, Clone)]
pub struct TcpListenerSpec {
    /// A VIP of the service, or `None`: the proxy's listen address.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The service host (for logs).
    pub service: String,
    /// In order; the last is the service itself.
    pub routes: Vec<TcpRouteSpec>,
}

#[derive(Debug, Clone)]
pub struct TcpRouteSpec {
    /// `VirtualService/<name> tcp[i]`, or `ServiceEntry/<name>`.
    pub name: String,
    /// Any of these holds (none: always).
    pub matches: Vec<L4Match>,
    pub targets: WeightedClusters,
}

#[derive(Debug, Clone)]
pub struct L4Match {
    pub port: Option<u16>,
    pub subnets: Vec<Cidr>,
    pub source_labels: BTreeMap<String, String>,
}

impl TcpListenerSpec {
    /// The route a connection to `local` takes from a proxy with `labels`.
    pub fn route(&self, local: IpAddr, labels: &BTreeMap<String, String>) -> Option<&TcpRouteSpec> {
        self.routes.iter().find(|r| {
            r.matches.is_empty()
                || r.matches.iter().any(|m| {
                    m.port.is_none_or(|p| p == self.port)
                        && (m.subnets.is_empty() || m.subnets.iter().any(|c| c.contains(local)))
                        && m.source_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
    }
}

/// The listeners for every opaque TCP port of the services the proxy sees, with the
/// `tcp[]` routes of `virtual_services` (those that apply to sidecars).
pub(crate) fn listeners<'a>(virtual_services: &[(&'a Resource, &'a VirtualService)], ctx: &mut Ctx<'a>) -> Vec<TcpListenerSpec> {
    let mut by_key: BTreeMap<(Option<IpAddr>, u16), TcpListenerSpec> = BTreeMap::new();
    let mut warned = std::collections::HashSet::new();
    let mut hosts: Vec<String> = ctx.services.keys().cloned().collect();
    hosts.sort();
    'services: for host in &hosts {
        let svc = &ctx.services[host];
        let (entry, resource) = (svc.entry, svc.resource);
        // A proxy listens for its own namespace's TCP services and the mesh-wide ones
        // (the root namespace's): another namespace's ServiceEntry must not make every
        // sidecar take ports beside its app. (Validation sees them all.)
        let proxy_view = ctx.source_labels.is_some();
        if proxy_view && svc.namespace != ctx.viewer && svc.namespace != crate::names::ROOT_NAMESPACE {
            continue;
        }
        let vips: Vec<Option<IpAddr>> = match entry.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).collect::<Vec<_>>() {
            v if v.is_empty() => vec![None],
            v => v.into_iter().map(Some).collect(),
        };
        for (i, p) in entry.ports.iter().enumerate() {
            if !is_opaque(p.protocol.as_deref()) || p.number == 0 || p.number > 65535 {
                continue;
            }
            if p.number < 1024 {
                ctx.warn(
                    resource,
                    format!("spec.ports[{i}]"),
                    format!("TCP port {} is privileged: the proxy opens no listener for it", p.number),
                );
                continue;
            }
            let port = p.number as u16;
            for ip in &vips {
                if by_key.len() >= MAX_LISTENERS {
                    // (Once, and no further work: a small config must not cost much.)
                    ctx.warn(
                        resource,
                        format!("spec.ports[{i}]"),
                        format!("over {MAX_LISTENERS} TCP listeners: this port and later ones get none"),
                    );
                    break 'services;
                }
                if let Some(other) = by_key.get(&(*ip, port)) {
                    // (One warning per ServiceEntry, however many of its ports collide.)
                    if warned.insert(resource.metadata.name.as_str()) {
                        let at = ip.map_or("the proxy's listen address".to_owned(), |ip| ip.to_string());
                        let msg = format!(
                            "TCP port {port} on {at} is already {}'s: give this service an address (a VIP) of its own",
                            other.service
                        );
                        ctx.warn(resource, format!("spec.ports[{i}]"), msg);
                    }
                    continue;
                }
                let cluster = ctx.cluster(host, port, None);
                let targets = single(cluster);
                let route = TcpRouteSpec { name: format!("ServiceEntry/{}", resource.metadata.name), matches: Vec::new(), targets };
                by_key.insert((*ip, port), TcpListenerSpec { ip: *ip, port, service: host.clone(), routes: vec![route] });
            }
        }
    }
    let mut index: HashMap<String, Vec<(Option<IpAddr>, u16)>> = HashMap::new();
    for (k, l) in &by_key {
        index.entry(l.service.clone()).or_default().push(*k);
    }
    for (r, vs) in virtual_services {
        if vs.tcp.is_empty() {
            continue;
        }
        let hosts: Vec<String> = vs.hosts.iter().map(|h| ctx.resolve(r, h)).collect();
        for (i, t) in vs.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            let Some((matches, targets)) = compile_route(r, t, &path, ctx) else { continue };
            let keys: Vec<(Option<IpAddr>, u16)> = hosts.iter().flat_map(|h| index.get(h).cloned().unwrap_or_default()).collect();
            if keys.is_empty() {
                ctx.warn(
                    r,
                    path.clone(),
                    "no host of this VirtualService has a TCP port (protocol TCP, MONGO, MYSQL or REDIS): the route is not used",
                );
            }
            for k in keys {
                let Some(l) = by_key.get_mut(&k) else { continue };
                let name = format!("VirtualService/{} tcp[{i}]", r.metadata.name);
                let m =
                    matches.iter().map(|m| L4Match { port: m.port, subnets: m.subnets.clone(), source_labels: m.source_labels.clone() });
                // Before the service's own route (the last), after earlier routes.
                let at = l.routes.len() - 1;
                l.routes.insert(at, TcpRouteSpec { name, matches: m.collect(), targets: targets.clone() });
            }
        }
    }
    by_key.into_values().collect()
}

/// A gateway's `tcp[]` route, before a Gateway server gives it a port to listen on.
#[derive(Debug, Clone)]
pub struct GatewayTcpRoute {
    /// The VirtualService's `namespace/name` and its hosts, resolved.
    pub virtual_service: (String, String),
    pub hosts: Vec<String>,
    pub route: TcpRouteSpec,
}

/// The `tcp[]` routes of the VirtualServices bound to a gateway, in order.
pub(crate) fn gateway_routes<'a>(virtual_services: &[(&'a Resource, &'a VirtualService)], ctx: &mut Ctx<'a>) -> Vec<GatewayTcpRoute> {
    let mut out = Vec::new();
    for (r, vs) in virtual_services {
        let hosts: Vec<String> = vs.hosts.iter().map(|h| ctx.resolve(r, h)).collect();
        for (i, t) in vs.tcp.iter().enumerate() {
            let Some((matches, targets)) = compile_route(r, t, &format!("spec.tcp[{i}]"), ctx) else { continue };
            let name = format!("VirtualService/{} tcp[{i}]", r.metadata.name);
            out.push(GatewayTcpRoute {
                virtual_service: (crate::names::namespace_of(r).to_owned(), r.metadata.name.clone()),
                hosts: hosts.clone(),
                route: TcpRouteSpec { name, matches, targets },
            });
        }
    }
    out
}

fn single(cluster: usize) -> WeightedClusters {
    WeightedClusters {
        targets: vec![WeightedTarget {
            cluster: ClusterChoice { default: cluster, by_port: Vec::new() },
            weight: 1,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }],
        cumulative: vec![1],
        total: 1,
    }
}

fn compile_route(r: &Resource, t: &TcpRoute, path: &str, ctx: &mut Ctx<'_>) -> Option<(Vec<L4Match>, WeightedClusters)> {
    let before = ctx.diags.errors.len();
    if t.route.is_empty() {
        ctx.err(r, format!("{path}.route"), "at least one destination is required");
    }
    let mut matches = Vec::new();
    let mut dropped = 0;
    for (j, m) in t.matches.iter().enumerate() {
        let p = format!("{path}.match[{j}]");
        let port = match m.port {
            Some(n) if (1..=65535).contains(&n) => Some(n as u16),
            Some(n) => {
                ctx.err(r, format!("{p}.port"), format!("port {n} out of range 1-65535"));
                None
            }
            None => None,
        };
        let mut subnets = Vec::new();
        for (k, s) in m.destination_subnets.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => subnets.push(c),
                Err(e) => ctx.err(r, format!("{p}.destinationSubnets[{k}]"), e),
            }
        }
        for (k, e) in crate::rules::labels(&m.source_labels) {
            ctx.err(r, format!("{p}.sourceLabels[{k}]"), e);
        }
        // Matches that cannot hold for a sidecar of this namespace are left out.
        let for_us = ctx.binding.in_match(r, &m.gateways);
        let same_ns = m.source_namespace.as_ref().is_none_or(|ns| *ns == ctx.viewer);
        if for_us && same_ns {
            matches.push(L4Match { port, subnets, source_labels: m.source_labels.clone() });
        } else {
            dropped += 1;
        }
    }
    let targets = crate::vhost::compile_destinations(r, &t.route, &format!("{path}.route"), ctx)?;
    if ctx.diags.errors.len() != before || (dropped > 0 && matches.is_empty()) {
        return None;
    }
    Some((matches, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_protocols() {
        assert!(is_opaque(Some("TCP")) && is_opaque(Some("mongo")) && is_opaque(Some("MYSQL")) && is_opaque(Some("REDIS")));
        assert!(!is_opaque(Some("HTTP")) && !is_opaque(Some("TLS")) && !is_opaque(None));
    }
}
