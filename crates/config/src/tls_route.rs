//! VirtualService `tls[]`: TLS passthrough. A connection whose first bytes are a TLS
//! ClientHello is routed by its SNI (and the listener port) to a destination, and its
//! bytes are tunnelled there untouched: weft neither terminates nor sees the traffic.

use crate::compile::Ctx;
use crate::istio::{TlsRoute, VirtualService};
use crate::load::Resource;
use crate::snapshot::WeightedClusters;

/// One compiled `tls[]` route.
#[derive(Debug, Clone)]
pub struct TlsRouteSpec {
    /// `VirtualService/<name>` and the route's index, for logs.
    pub name: String,
    /// Any of these (match entries, each an SNI host pattern and an optional port).
    pub matches: Vec<SniMatch>,
    pub targets: WeightedClusters,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SniMatch {
    /// Lower case; `*` for any name, `*.example.com` for any name under it.
    pub hosts: Vec<String>,
    pub port: Option<u16>,
}

impl TlsRouteSpec {
    /// Whether a ClientHello for `sni` (lower case) on listener port `port` takes this route.
    pub fn matches(&self, sni: &str, port: u16) -> bool {
        self.matches.iter().any(|m| m.port.is_none_or(|p| p == port) && m.hosts.iter().any(|h| host_matches(h, sni)))
    }
}

fn host_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
        None => pattern == sni,
    }
}

/// Compiles `vs.tls`, reporting problems with their paths.
pub(crate) fn compile(r: &Resource, vs: &VirtualService, ctx: &mut Ctx<'_>) -> Vec<TlsRouteSpec> {
    vs.tls.iter().enumerate().filter_map(|(i, t)| compile_route(r, t, &format!("spec.tls[{i}]"), ctx)).collect()
}

fn compile_route(r: &Resource, t: &TlsRoute, path: &str, ctx: &mut Ctx<'_>) -> Option<TlsRouteSpec> {
    let before = ctx.diags.errors.len();
    if t.matches.is_empty() {
        ctx.err(r, format!("{path}.match"), "at least one match with sniHosts is required");
    }
    let mut matches = Vec::with_capacity(t.matches.len());
    for (j, m) in t.matches.iter().enumerate() {
        let p = format!("{path}.match[{j}]");
        if m.sni_hosts.is_empty() {
            ctx.err(r, format!("{p}.sniHosts"), "at least one host is required");
        }
        for (k, h) in m.sni_hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            if h != "*" && !crate::tls::server_name(name).is_some_and(|n| matches!(n, rustls::pki_types::ServerName::DnsName(_))) {
                ctx.err(r, format!("{p}.sniHosts[{k}]"), format!("{h:?} is not a DNS name or *.suffix"));
            }
        }
        let port = match m.port {
            None => None,
            Some(n @ 1..=65535) => Some(n as u16),
            Some(n) => {
                ctx.err(r, format!("{p}.port"), format!("port {n} out of range 1-65535"));
                None
            }
        };
        for (field, set) in [
            ("destinationSubnets", !m.destination_subnets.is_empty()),
            ("sourceLabels", !m.source_labels.is_empty()),
            ("sourceNamespace", m.source_namespace.is_some()),
        ] {
            if set {
                ctx.err(r, format!("{p}.{field}"), "not supported on tls routes (sniHosts and port are)");
            }
        }
        matches.push(SniMatch { hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(), port });
    }
    if t.route.is_empty() {
        ctx.err(r, format!("{path}.route"), "at least one destination is required");
        return None;
    }
    for (k, d) in t.route.iter().enumerate() {
        if d.headers.is_some() {
            ctx.err(r, format!("{path}.route[{k}].headers"), "a tls route forwards bytes it cannot read: no header operations");
        }
    }
    let targets = crate::vhost::compile_destinations(r, &t.route, &format!("{path}.route"), ctx)?;
    (ctx.diags.errors.len() == before).then(|| TlsRouteSpec {
        name: format!("VirtualService/{} {path}", r.metadata.name),
        matches,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_patterns() {
        assert!(host_matches("a.test", "a.test"));
        assert!(!host_matches("a.test", "b.a.test"));
        assert!(host_matches("*.a.test", "b.a.test"));
        assert!(!host_matches("*.a.test", "a.test"));
        assert!(!host_matches("*.a.test", ".a.test"));
        assert!(host_matches("*", "anything.test"));
    }
}
