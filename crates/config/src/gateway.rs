//! Istio's ingress gateway: which `Gateway` resources a `weft gateway` serves (those
//! whose `selector` its `--gateway-labels` satisfy), which VirtualServices apply there
//! (those bound to one of them by `gateways`), and Istio's checks of a Gateway.
//!
//! The compile itself is the sidecar's ([`crate::compile`]) with a different
//! [`Binding`]; [`listeners`] then builds what the gateway's two listeners route by:
//! the plain one (`--listen`: the HTTP servers) and the TLS one (`--https`: the HTTPS
//! and TLS servers, chosen by SNI). See the README's "Ingress gateway" for the choices.

mod listeners;
mod server_tls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::compile::{compile_bound, Ctx, View};
use crate::error::{ConfigError, Diagnostics};
use crate::istio::{Gateway, Server, ServerTlsMode, VirtualService};
use crate::load::{Resource, Spec};
use crate::names::namespace_of;
use crate::snapshot::Snapshot;

pub use listeners::{GatewayListeners, HostTable, TlsServer, TlsServerMode};

/// Which VirtualServices a compiled snapshot applies: decided in one place of the
/// compile (the VirtualService loop), by whoever the snapshot is for.
#[derive(Debug, Clone)]
pub enum Binding {
    /// A sidecar: VirtualServices with no `gateways`, or with the reserved `mesh`.
    Sidecar,
    /// An ingress gateway: VirtualServices bound to one of these Gateways
    /// (`namespace/name`). `mesh` alone, or no `gateways`, is not theirs.
    Gateways(BTreeSet<String>),
}

impl Binding {
    /// Whether `vs` (resource `r`) applies to this binding's proxy.
    pub fn applies(&self, r: &Resource, vs: &VirtualService) -> bool {
        match self {
            Binding::Sidecar => vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"),
            Binding::Gateways(names) => vs.gateways.iter().any(|g| names.contains(&qualified(g, namespace_of(r)))),
        }
    }

    /// Whether a route match's `gateways` (of resource `r`; none: the VirtualService's)
    /// include this proxy: `mesh` for a sidecar, one of its Gateways for a gateway.
    pub fn in_match(&self, r: &Resource, gateways: &[String]) -> bool {
        gateways.is_empty()
            || match self {
                Binding::Sidecar => gateways.iter().any(|g| g == "mesh"),
                Binding::Gateways(names) => gateways.iter().any(|g| names.contains(&qualified(g, namespace_of(r)))),
            }
    }

    /// Whether `vs` is bound to the Gateway `key` (`namespace/name`).
    pub(crate) fn binds_to(r: &Resource, vs: &VirtualService, key: &str) -> bool {
        vs.gateways.iter().any(|g| qualified(g, namespace_of(r)) == key)
    }
}

/// Who a snapshot is compiled for.
#[derive(Debug, Clone, Default)]
pub enum Role {
    /// `weft proxy`.
    #[default]
    Sidecar,
    /// `weft gateway`.
    Gateway(GatewayRole),
}

/// An ingress gateway: its labels (what Gateways' `selector`s match) and where its
/// `credentialName`s are read from.
#[derive(Debug, Clone, Default)]
pub struct GatewayRole {
    pub labels: BTreeMap<String, String>,
    /// `<dir>/<credentialName>/tls.crt`, `tls.key` and (MUTUAL) `ca.crt`.
    pub credentials_dir: Option<PathBuf>,
}

/// Compiles the resources `view` sees for `role`: a sidecar's snapshot as
/// [`crate::compile_in`] makes it, or an ingress gateway's (its Gateways' servers, the
/// VirtualServices bound to them).
pub fn compile_for(resources: &[Resource], view: &View, role: &Role, diags: &mut Diagnostics) -> Snapshot {
    let Role::Gateway(gateway) = role else {
        return crate::compile_in(resources, view, diags);
    };
    let selected: Vec<(&Resource, &Gateway)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) if g.selector.iter().all(|(k, v)| gateway.labels.get(k) == Some(v)) => Some((r, g)),
            _ => None,
        })
        .collect();
    if selected.is_empty() && !resources.is_empty() {
        let labels: Vec<String> = gateway.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let source = crate::error::Source { file: "--gateway-labels".into(), doc: 0 };
        let msg = format!("no Gateway selects this gateway's labels ({}): nothing is served", labels.join(","));
        diags.warnings.push(ConfigError::new(&source, Some("Gateway"), Some("*"), "spec.selector", msg));
    }
    let binding = Binding::Gateways(selected.iter().map(|(r, _)| key(r)).collect());
    let mut snap = compile_bound(resources, view, &binding, diags);
    if diags.is_ok() {
        listeners::build(resources, view, &selected, &binding, gateway, &mut snap, diags);
    }
    snap
}

/// A Gateway's key: `namespace/name`.
pub(crate) fn key(r: &Resource) -> String {
    format!("{}/{}", namespace_of(r), r.metadata.name)
}

/// A VirtualService's `gateways` entry as `namespace/name`: `name` is in the
/// VirtualService's own namespace.
fn qualified(gateway: &str, ns: &str) -> String {
    match gateway.split_once('/') {
        Some(_) => gateway.to_owned(),
        None => format!("{ns}/{gateway}"),
    }
}

/// The protocols Istio accepts on a Gateway server's port.
const PROTOCOLS: [&str; 10] = ["HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS"];

/// Istio's validation of a Gateway (pilot's `ValidateGateway`), with field paths.
pub(crate) fn check(r: &Resource, gw: &Gateway, ctx: &mut Ctx<'_>) {
    if gw.servers.is_empty() {
        ctx.err(r, "spec.servers", "at least one server is required");
    }
    for (k, e) in crate::rules::labels(&gw.selector) {
        ctx.err(r, format!("spec.selector[{k}]"), e);
    }
    let mut names = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        check_server(r, s, &path, ctx);
        if let Some(p) = s.port.as_ref().filter(|p| !p.name.is_empty()) {
            if let Some(first) = names.insert(p.name.as_str(), i) {
                ctx.err(
                    r,
                    format!("{path}.port.name"),
                    format!("port name {} is already servers[{first}]'s", crate::rules::shown(&p.name)),
                );
            }
        }
    }
}

fn check_server(r: &Resource, s: &Server, path: &str, ctx: &mut Ctx<'_>) {
    let protocol = match &s.port {
        None => {
            ctx.err(r, format!("{path}.port"), "missing field");
            None
        }
        Some(p) => {
            if p.number == 0 || p.number > 65535 {
                ctx.err(r, format!("{path}.port.number"), format!("port {} out of range 1-65535", p.number));
            }
            if p.name.is_empty() {
                ctx.err(r, format!("{path}.port.name"), "missing field (a port name is required)");
            }
            let proto = p.protocol.to_ascii_uppercase();
            if !PROTOCOLS.contains(&proto.as_str()) {
                ctx.err(
                    r,
                    format!("{path}.port.protocol"),
                    format!("unknown value {} (expected one of {})", crate::rules::shown(&p.protocol), PROTOCOLS.join(", ")),
                );
            }
            Some(proto)
        }
    };
    if s.hosts.is_empty() {
        ctx.err(r, format!("{path}.hosts"), "at least one host is required");
    }
    for (j, h) in s.hosts.iter().enumerate() {
        if let Err(e) = ServerHost::parse(h) {
            ctx.err(r, format!("{path}.hosts[{j}]"), e);
        }
    }
    let secure = matches!(protocol.as_deref(), Some("HTTPS" | "TLS"));
    match &s.tls {
        None if secure => ctx.err(r, format!("{path}.tls"), "required for protocol HTTPS or TLS"),
        None => {}
        Some(t) if !secure && protocol.is_some() && !t.https_redirect => {
            ctx.err(r, format!("{path}.tls"), "a plain-text server takes no TLS settings (httpsRedirect only)");
        }
        Some(_) if !secure && protocol.is_some() => {}
        Some(t) => {
            let p = format!("{path}.tls");
            let files = t.server_certificate.is_some() || t.private_key.is_some();
            match t.mode {
                ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                    let mode = format!("{:?}", t.mode).to_ascii_uppercase();
                    if t.credential_name.is_some() && files {
                        ctx.err(
                            r,
                            format!("{p}.credentialName"),
                            "set either credentialName or serverCertificate and privateKey, not both",
                        );
                    } else if t.credential_name.is_none() {
                        if t.server_certificate.is_none() {
                            ctx.err(r, format!("{p}.serverCertificate"), format!("{mode} needs credentialName or serverCertificate"));
                        }
                        if t.private_key.is_none() {
                            ctx.err(r, format!("{p}.privateKey"), format!("{mode} needs credentialName or privateKey"));
                        }
                        if t.mode != ServerTlsMode::Simple && t.ca_certificates.is_none() {
                            ctx.err(r, format!("{p}.caCertificates"), format!("{mode} needs credentialName or caCertificates"));
                        }
                    }
                    if let Some(name) = &t.credential_name {
                        if let Err(e) = crate::rules::dns1123_subdomain(name) {
                            ctx.err(r, format!("{p}.credentialName"), e);
                        }
                    }
                }
                ServerTlsMode::IstioMutual => {
                    if files || t.credential_name.is_some() || t.ca_certificates.is_some() {
                        ctx.err(r, p.clone(), "ISTIO_MUTUAL takes no credentialName or certificate files (the mesh's are used)");
                    }
                }
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
            }
            if let (Some(min), Some(max)) = (t.min_protocol_version, t.max_protocol_version) {
                if (min as u8) > (max as u8) && min != crate::istio::TlsProtocol::Auto && max != crate::istio::TlsProtocol::Auto {
                    ctx.err(r, format!("{p}.minProtocolVersion"), "is above maxProtocolVersion");
                }
            }
        }
    }
}

/// One `servers[].hosts` entry: which VirtualServices' namespaces it admits, and the
/// host pattern (lower case: exact, `*.suffix` or `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerHost {
    /// None: any namespace (`*/` or no prefix); `Some(".")`: the Gateway's own.
    pub namespace: Option<String>,
    pub host: String,
}

impl ServerHost {
    pub fn parse(h: &str) -> Result<ServerHost, String> {
        let (ns, host) = match h.split_once('/') {
            Some((ns, host)) => (Some(ns), host),
            None => (None, h),
        };
        let namespace = match ns {
            None | Some("*") => None,
            Some(".") => Some(".".to_owned()),
            Some(n) => {
                crate::rules::dns1123_label(n).map_err(|e| format!("namespace of {}: {e}", crate::rules::shown(h)))?;
                Some(n.to_owned())
            }
        };
        let host = host.to_ascii_lowercase();
        if host != "*" {
            let name = host.strip_prefix("*.").unwrap_or(&host);
            if name.contains('*') || crate::rules::dns_name(name).is_err() {
                return Err(format!("{} is not a host: a DNS name, *.suffix or *, optionally after namespace/", crate::rules::shown(h)));
            }
        }
        Ok(ServerHost { namespace, host })
    }

    /// Whether a VirtualService in `vs_ns` may be served through this host of a
    /// Gateway in `gw_ns`.
    pub fn admits(&self, vs_ns: &str, gw_ns: &str) -> bool {
        match self.namespace.as_deref() {
            None => true,
            Some(".") => vs_ns == gw_ns,
            Some(n) => vs_ns == n,
        }
    }
}

/// The hosts both patterns match, as the narrower pattern (Istio serves a
/// VirtualService host on a Gateway server only where the two intersect): `*` and
/// `a.test` → `a.test`; `*.test` and `*.a.test` → `*.a.test`; `a.test` and `b.test` → none.
pub(crate) fn intersect(a: &str, b: &str) -> Option<String> {
    let matches = |pattern: &str, host: &str| match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    };
    match (a.starts_with('*'), b.starts_with('*')) {
        (false, false) => (a == b).then(|| a.to_owned()),
        (false, true) => matches(b, a).then(|| a.to_owned()),
        (true, false) => matches(a, b).then(|| b.to_owned()),
        // Two wildcards: the longer suffix, if it lies under the shorter.
        (true, true) => {
            let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            (short == "*" || long.ends_with(&short[1..])).then(|| long.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_intersect_as_the_narrower_pattern() {
        for (a, b, want) in [
            ("*", "httpbin.example.com", Some("httpbin.example.com")),
            ("httpbin.example.com", "*", Some("httpbin.example.com")),
            ("a.test", "a.test", Some("a.test")),
            ("a.test", "b.test", None),
            ("*.test", "a.test", Some("a.test")),
            ("*.test", "test", None),
            ("*.test", "*.a.test", Some("*.a.test")),
            ("*.a.test", "*.test", Some("*.a.test")),
            ("*.a.test", "*.b.test", None),
            ("*", "*", Some("*")),
            ("*", "*.test", Some("*.test")),
        ] {
            assert_eq!(intersect(a, b).as_deref(), want, "{a} ∩ {b}");
        }
    }

    #[test]
    fn server_hosts_with_namespaces() {
        let h = ServerHost::parse("./Foo.Example.com").unwrap();
        assert_eq!(h, ServerHost { namespace: Some(".".into()), host: "foo.example.com".into() });
        assert!(h.admits("istio-system", "istio-system") && !h.admits("default", "istio-system"));
        assert!(ServerHost::parse("*/*").unwrap().admits("x", "y"));
        assert!(ServerHost::parse("prod/*.example.com").unwrap().admits("prod", "y"));
        assert!(!ServerHost::parse("prod/*.example.com").unwrap().admits("dev", "y"));
        for bad in ["", "a/b/c", "Bad_NS/x.com", "x.*.com", "*x.com", "/x.com"] {
            assert!(ServerHost::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gateway_names_resolve_in_the_virtual_service_namespace() {
        assert_eq!(qualified("bookinfo-gateway", "default"), "default/bookinfo-gateway");
        assert_eq!(qualified("istio-system/gw", "default"), "istio-system/gw");
    }
}
