//! What an ingress gateway's listeners route by, built from its Gateways' servers and
//! the VirtualServices bound to them (already compiled into the snapshot's vhosts).
//!
//! - The plain listener (`--listen`) serves every HTTP, HTTP2, GRPC and GRPC-WEB
//!   server: the snapshot's own host tables are replaced by the hosts those servers
//!   admit, each mapped to the VirtualService that serves it (a server with
//!   `tls.httpsRedirect` maps its hosts to a 301 to `https://` instead).
//! - The TLS listener (`--https`) serves every HTTPS and TLS server: a ClientHello's
//!   SNI picks the server ([`GatewayListeners::tls_server`]); a terminating one
//!   (SIMPLE, MUTUAL, OPTIONAL_MUTUAL) has its own rustls config and its own host
//!   table, so a request on a connection is only ever routed to a host of the server
//!   its handshake chose; a PASSTHROUGH one hands the connection to the bound
//!   VirtualServices' `tls[]` routes by SNI.
//!
//! A host a VirtualService and a server both name is served as the narrower of the
//! two ([`super::intersect`]); the first server and VirtualService to claim a host
//! keep it (Istio: the oldest).

use std::collections::HashMap;
use std::sync::Arc;

use super::server_tls;
use super::{intersect, key, Binding, GatewayRole, ServerHost};
use crate::compile::View;
use crate::error::{ConfigError, Diagnostics};
use crate::istio::{Gateway, ServerTlsMode};
use crate::load::{Resource, Spec};
use crate::names::namespace_of;
use crate::snapshot::{Action, HeaderOps, Redirect, Route, Snapshot, VirtualHost};
use crate::tls_route::TlsRouteSpec;

/// Hosts (lower case) → index into the snapshot's `vhosts`: exact, then the longest
/// `*.suffix`, then `*`, as the snapshot's own tables.
#[derive(Debug, Default)]
pub struct HostTable {
    pub exact: HashMap<String, usize, foldhash::fast::RandomState>,
    /// (suffix `.example.com`, vhost), longest first.
    pub wildcard: Vec<(String, usize)>,
    pub any: Option<usize>,
}

impl HostTable {
    /// The vhost for a request's host (lower case, port stripped).
    pub fn index(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        self.wildcard.iter().find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str())).map(|(_, i)| *i).or(self.any)
    }

    /// Adds `pattern` → `vhost` unless the pattern is already taken; false if it was.
    fn insert(&mut self, pattern: &str, vhost: usize) -> bool {
        if pattern == "*" {
            return self.any.get_or_insert(vhost) == &vhost;
        }
        if let Some(suffix) = pattern.strip_prefix('*') {
            if self.wildcard.iter().any(|(s, _)| s == suffix) {
                return false;
            }
            self.wildcard.push((suffix.to_owned(), vhost));
            self.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            return true;
        }
        match self.exact.entry(pattern.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(vhost);
                true
            }
        }
    }
}

/// A gateway's TLS listener.
#[derive(Debug, Default)]
pub struct GatewayListeners {
    /// The HTTPS and TLS servers, in the order the Gateways list them.
    pub tls_servers: Vec<TlsServer>,
    /// The bound VirtualServices' `tls[]` routes, for PASSTHROUGH servers (their match
    /// ports, Gateway server ports, already checked: matched by SNI alone here).
    pub passthrough: Vec<TlsRouteSpec>,
}

/// One HTTPS or TLS server.
#[derive(Debug)]
pub struct TlsServer {
    /// `Gateway/<name> servers[i]`, for logs.
    pub name: String,
    /// Stable across reloads while the Gateway and the server's hosts are unchanged:
    /// a connection keeps it and finds its server again in the snapshot of each request.
    /// (32 bits: it rides in every request's connection context, which it keeps at its
    /// size; unique among the servers, see [`tls_server`].)
    pub key: u32,
    /// SNI patterns (lower case: exact, `*.suffix`, `*`).
    pub hosts: Vec<String>,
    pub mode: TlsServerMode,
}

#[derive(Debug)]
pub enum TlsServerMode {
    /// TLS terminated with this config (its client verifier for MUTUAL); HTTP routed by
    /// this server's own hosts.
    Terminate { config: Arc<rustls::ServerConfig>, mutual: bool, routes: HostTable },
    /// Bytes tunnelled to the `tls[]` route the SNI takes.
    Passthrough,
    /// `ISTIO_MUTUAL`: mesh mTLS terminated with the gateway's own workload certificate
    /// (from the control plane's CA), the client's verified against the mesh root; HTTP
    /// routed by this server's own hosts. Without an identity the gateway refuses it.
    Mesh { routes: HostTable },
}

impl GatewayListeners {
    /// The server a ClientHello's SNI (lower case) reaches: an exact host, else the
    /// longest `*.suffix`, else `*`. Without SNI only a `*` server takes it.
    pub fn tls_server(&self, sni: Option<&str>) -> Option<&TlsServer> {
        let mut best: Option<(usize, &TlsServer)> = None;
        for s in &self.tls_servers {
            for h in &s.hosts {
                let score = match (h.strip_prefix('*'), sni) {
                    (Some(""), _) => 1,
                    (Some(suffix), Some(n)) if n.len() > suffix.len() && n.ends_with(suffix) => 2 + suffix.len(),
                    (None, Some(n)) if n == h => usize::MAX,
                    _ => continue,
                };
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, s));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// The server a connection was accepted under, by its key.
    pub fn tls_server_by_key(&self, key: u32) -> Option<&TlsServer> {
        self.tls_servers.iter().find(|s| s.key == key)
    }

    /// The `tls[]` route for a passthrough connection's SNI.
    pub fn passthrough_route(&self, sni: &str) -> Option<&TlsRouteSpec> {
        self.passthrough.iter().find(|r| r.matches(sni, 0))
    }
}

/// What a server is on this gateway.
enum Class {
    Plain {
        redirect: bool,
    },
    /// Opaque TCP: a listener on the server's port, the bound VirtualServices' `tcp[]`.
    Tcp,
    Terminate(ServerTlsMode),
    Passthrough,
    /// ISTIO_MUTUAL: terminated with the gateway's mesh identity.
    Mesh,
}

/// Replaces `snap`'s host tables by the plain listener's and sets `snap.gateway`.
pub(super) fn build(
    resources: &[Resource],
    view: &View,
    selected: &[(&Resource, &Gateway)],
    binding: &Binding,
    role: &GatewayRole,
    snap: &mut Snapshot,
    diags: &mut Diagnostics,
) {
    // The compile pushes one vhost per VirtualService it sees that applies, first and in
    // resource order (with no errors, every one that applies compiled).
    let bound: Vec<(&Resource, &crate::istio::VirtualService, usize)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            // (A delegate, with no hosts, is used through its root: no vhost of its own.)
            Spec::VirtualService(vs) if view.sees(r) && !vs.hosts.is_empty() && binding.applies(r, vs) => Some((r, vs)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (r, vs))| (r, vs, i))
        .collect();
    debug_assert!(bound.iter().all(|(r, _, i)| snap.vhosts[*i].name == format!("VirtualService/{}", r.metadata.name)));
    let mut plain = HostTable::default();
    let mut listeners = GatewayListeners::default();
    let mut passthrough_ports = Vec::new();
    for (gr, gw) in selected {
        let gw_key = key(gr);
        let gw_ns = namespace_of(gr);
        for (i, s) in gw.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            let Some(port) = &s.port else { continue };
            let tls_mode = s.tls.as_ref().map(|t| t.mode);
            let class = match (port.protocol.to_ascii_uppercase().as_str(), tls_mode) {
                ("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB", _) => Class::Plain { redirect: s.tls.as_ref().is_some_and(|t| t.https_redirect) },
                ("TCP" | "MONGO" | "MYSQL" | "REDIS", None) => Class::Tcp,
                ("HTTPS", Some(m @ (ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual))) => Class::Terminate(m),
                ("HTTPS" | "TLS", Some(ServerTlsMode::Passthrough)) => Class::Passthrough,
                ("HTTPS", Some(ServerTlsMode::IstioMutual)) => Class::Mesh,
                (_, Some(ServerTlsMode::AutoPassthrough)) => {
                    err(
                        diags,
                        gr,
                        format!("{path}.tls.mode"),
                        "AUTO_PASSTHROUGH is not supported by weft's gateway (use PASSTHROUGH with tls[] routes)",
                    );
                    continue;
                }
                ("TLS", _) => {
                    err(
                        diags,
                        gr,
                        format!("{path}.tls.mode"),
                        "TLS termination for tcp routes is not supported by weft's gateway (PASSTHROUGH is)",
                    );
                    continue;
                }
                (p, _) => {
                    warn(
                        diags,
                        gr,
                        format!("{path}.port.protocol"),
                        format!("{p} servers are not served by weft's gateway (HTTP, HTTPS and TLS are); ignored"),
                    );
                    continue;
                }
            };
            let hosts: Vec<ServerHost> = s.hosts.iter().filter_map(|h| ServerHost::parse(h).ok()).collect();
            let name = format!("Gateway/{} {path}", gr.metadata.name);
            // Hosts this server serves, each with the vhost of the VirtualService serving it.
            let mut served: Vec<(String, usize)> = Vec::new();
            for (vr, vs, vhost) in &bound {
                if !Binding::binds_to(vr, vs, &gw_key) {
                    continue;
                }
                for sh in hosts.iter().filter(|h| h.admits(namespace_of(vr), gw_ns)) {
                    for vh in &vs.hosts {
                        if let Some(h) = intersect(&resolve(snap, vr, vh), &sh.host) {
                            served.push((h, *vhost));
                        }
                    }
                }
            }
            match class {
                Class::Tcp => {
                    let Ok(number) = u16::try_from(port.number) else { continue };
                    let routes: Vec<crate::tcp_route::TcpRouteSpec> = snap
                        .gateway_tcp
                        .iter()
                        .filter(|t| {
                            bound.iter().any(|(vr, vs, _)| {
                                (namespace_of(vr), vr.metadata.name.as_str())
                                    == (t.virtual_service.0.as_str(), t.virtual_service.1.as_str())
                                    && Binding::binds_to(vr, vs, &gw_key)
                                    && hosts
                                        .iter()
                                        .filter(|h| h.admits(namespace_of(vr), gw_ns))
                                        .any(|sh| t.hosts.iter().any(|vh| intersect(vh, &sh.host).is_some()))
                            })
                        })
                        .map(|t| t.route.clone())
                        .collect();
                    match snap.tcp_listeners.iter_mut().find(|l| l.port == number) {
                        Some(l) => {
                            // (Two servers on one TCP port: a connection carries no host to
                            // tell them apart; the first server's routes are tried first.)
                            let msg = format!("TCP port {number} is also {}'s: its routes are tried first", l.service);
                            warn(diags, gr, format!("{path}.port.number"), msg);
                            l.routes.extend(routes)
                        }
                        None => {
                            snap.tcp_listeners.push(crate::tcp_route::TcpListenerSpec { ip: None, port: number, service: name, routes })
                        }
                    }
                }
                Class::Plain { redirect } => {
                    let target = redirect.then(|| https_redirect(snap, &name));
                    for (h, vhost) in served {
                        plain.insert(&h, target.unwrap_or(vhost));
                    }
                }
                Class::Terminate(mode) => {
                    let Some(t) = &s.tls else { continue };
                    let config = match server_tls::config(t, role) {
                        Ok(c) => c,
                        Err(errs) => {
                            for (field, msg) in errs {
                                err(diags, gr, format!("{path}.tls.{field}"), msg);
                            }
                            continue;
                        }
                    };
                    let mut routes = HostTable::default();
                    for (h, vhost) in served {
                        routes.insert(&h, vhost);
                    }
                    let mutual = matches!(mode, ServerTlsMode::Mutual);
                    let server = tls_server(&listeners, name, &gw_key, &hosts, TlsServerMode::Terminate { config, mutual, routes });
                    listeners.tls_servers.push(server);
                }
                Class::Mesh => {
                    let mut routes = HostTable::default();
                    for (h, vhost) in served {
                        routes.insert(&h, vhost);
                    }
                    let server = tls_server(&listeners, name, &gw_key, &hosts, TlsServerMode::Mesh { routes });
                    listeners.tls_servers.push(server);
                }
                Class::Passthrough => {
                    passthrough_ports.push(port.number);
                    let server = tls_server(&listeners, name, &gw_key, &hosts, TlsServerMode::Passthrough);
                    listeners.tls_servers.push(server);
                }
            }
        }
    }
    // A `tls[]` match's port names a Gateway server's: kept (and matched by SNI alone)
    // when it is a PASSTHROUGH server's, dropped otherwise.
    for mut r in std::mem::take(&mut snap.tls_routes) {
        r.matches.retain(|m| m.port.is_none_or(|p| passthrough_ports.contains(&u32::from(p))));
        for m in &mut r.matches {
            m.port = None;
        }
        if !r.matches.is_empty() {
            listeners.passthrough.push(r);
        }
    }
    // A gateway listens where its Gateways' servers say (TCP servers above), not on the
    // ServiceEntries' opaque TCP ports as a sidecar does.
    snap.gateway_tcp.clear();
    snap.exact_hosts = plain.exact;
    snap.wildcard_hosts = plain.wildcard;
    snap.catch_all = plain.any;
    snap.gateway = Some(listeners);
}

/// A VirtualService host as the compile resolved it: literal when a ServiceEntry declares
/// it, else a short name is the service of the VirtualService's namespace.
fn resolve(snap: &Snapshot, r: &Resource, host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    if snap.clusters.iter().any(|c| c.service == lower) {
        return lower;
    }
    crate::names::resolve(&lower, crate::names::namespace_of(r))
}

/// A server with its key: a hash of its Gateway and hosts (so it stays across reloads),
/// moved on past any key an earlier server has (so a connection never finds another
/// server's hosts by it).
fn tls_server(others: &GatewayListeners, name: String, gw_key: &str, hosts: &[ServerHost], mode: TlsServerMode) -> TlsServer {
    use std::hash::{Hash, Hasher};
    let patterns: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
    let mut hasher = std::hash::DefaultHasher::new();
    (gw_key, &patterns).hash(&mut hasher);
    let mut key = hasher.finish() as u32;
    while others.tls_servers.iter().any(|s| s.key == key) {
        key = key.wrapping_add(1);
    }
    TlsServer { name, key, hosts: patterns, mode }
}

/// A vhost answering every request with a 301 to `https://` the same host and path
/// (no port: the HTTPS port is the default one), as Envoy's `require_tls: ALL`.
fn https_redirect(snap: &mut Snapshot, name: &str) -> usize {
    snap.vhosts.push(VirtualHost {
        name: format!("{name} httpsRedirect"),
        routes: vec![Arc::new(Route {
            name: "httpsRedirect".into(),
            matches: Vec::new(),
            action: Action::Redirect(Redirect {
                uri: None,
                authority: None,
                port: Some(443),
                scheme: Some("https".into()),
                status: http::StatusCode::MOVED_PERMANENTLY,
            }),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            timeout: None,
            rewrite: None,
            mirror: None,
            retry: None,
            fault: None,
        })],
        rate_limits: Vec::new(),
        hedging: None,
        compression: Vec::new(),
        response_cache: Vec::new(),
    });
    snap.vhosts.len() - 1
}

fn err(diags: &mut Diagnostics, r: &Resource, path: String, msg: impl Into<String>) {
    diags.errors.push(ConfigError::new(&r.source, Some(&r.kind), Some(&r.metadata.name), path, msg));
}

fn warn(diags: &mut Diagnostics, r: &Resource, path: String, msg: impl Into<String>) {
    diags.warnings.push(ConfigError::new(&r.source, Some(&r.kind), Some(&r.metadata.name), path, msg));
}
