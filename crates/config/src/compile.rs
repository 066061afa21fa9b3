//! Raw resources → runtime [`Snapshot`], with Istio's semantic checks.
//!
//! Every check that fails names the resource and field path, in the same form as the
//! loader's errors, so `weft validate` and a live reload report problems alike.

use crate::rules;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::error::{ConfigError, Diagnostics, Source};
use crate::gateway::Binding;
use crate::istio::*;
use crate::load::{Resource, Spec};
use crate::policy::{lb_policy, limits, locality_lb, merge_policy, outlier_settings, pool_settings, warmup};
use crate::snapshot::*;
use crate::vhost::compile_vs;

/// A service known from a ServiceEntry: one host of its `hosts`.
pub(crate) struct Service<'a> {
    pub entry: &'a ServiceEntry,
    pub resource: &'a Resource,
    pub name: &'a str,
    /// The ServiceEntry's namespace.
    pub namespace: &'a str,
}

pub(crate) struct Ctx<'a> {
    pub services: HashMap<String, Service<'a>>,
    /// Resolved host → its DestinationRule, where it came from, its name and its
    /// precedence rank ([`Ctx::rule_rank`]).
    pub rules: HashMap<String, (&'a DestinationRule, &'a Source, &'a str, u8)>,
    pub clusters: Vec<ClusterSpec>,
    pub cluster_index: HashMap<String, usize>,
    pub diags: &'a mut Diagnostics,
    /// The namespace of the proxy the snapshot is for.
    pub viewer: String,
    /// WorkloadEntry resources with their namespaces (ServiceEntries' `workloadSelector`).
    pub workloads: Vec<(&'a WorkloadEntry, &'a str)>,
    /// Delegate VirtualServices (no hosts) by (namespace, name).
    pub delegates: HashMap<(String, String), (&'a Resource, &'a VirtualService)>,
    /// Who applies the routes: a route match's `gateways` are checked against it.
    pub binding: Binding,
    /// The proxy's labels, for route matches' `sourceLabels` ([`View::labels`]).
    pub source_labels: Option<BTreeMap<String, String>>,
}

/// Whose view of the mesh a snapshot is compiled for.
#[derive(Debug, Clone)]
pub struct View {
    /// The proxy's namespace: short request hosts (`reviews`) resolve in it, and a
    /// DestinationRule in it is preferred.
    pub namespace: String,
    /// Apply `exportTo`: only what is exported to `namespace` is seen. Off for
    /// validation (`weft validate`, the control plane's checks), which sees everything.
    pub scoped: bool,
    /// The proxy's workload labels (`--label`), for route matches' `sourceLabels`;
    /// `None` (validation): such matches are kept as if they held.
    pub labels: Option<BTreeMap<String, String>>,
}

impl Default for View {
    /// Everything, from namespace `default`.
    fn default() -> Self {
        View { namespace: "default".into(), scoped: false, labels: None }
    }
}

impl View {
    /// A proxy's view: what is exported to its namespace.
    pub fn proxy(namespace: &str) -> Self {
        View { namespace: namespace.to_owned(), scoped: true, labels: None }
    }

    /// The same, for a workload with these labels.
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = Some(labels);
        self
    }

    pub(crate) fn sees(&self, r: &Resource) -> bool {
        !self.scoped || crate::names::exported_to(r, &self.namespace)
    }
}

/// Compiles resources into a snapshot, as seen from namespace `default` with every
/// resource visible; errors and warnings go to `diags`.
pub fn compile(resources: &[Resource], diags: &mut Diagnostics) -> Snapshot {
    compile_in(resources, &View::default(), diags)
}

/// Compiles the resources `view` sees into a snapshot.
pub fn compile_in(resources: &[Resource], view: &View, diags: &mut Diagnostics) -> Snapshot {
    compile_bound(resources, view, &Binding::Sidecar, diags)
}

/// [`compile_in`] for whoever `binding` says applies the VirtualServices (a sidecar, or
/// an ingress gateway's Gateways: [`crate::gateway::compile_for`]).
pub(crate) fn compile_bound(resources: &[Resource], view: &View, binding: &Binding, diags: &mut Diagnostics) -> Snapshot {
    let mut ctx = Ctx {
        services: HashMap::new(),
        rules: HashMap::new(),
        clusters: Vec::new(),
        cluster_index: HashMap::new(),
        diags,
        viewer: view.namespace.clone(),
        workloads: Vec::new(),
        delegates: HashMap::new(),
        binding: binding.clone(),
        source_labels: view.labels.clone(),
    };
    for r in resources {
        check_export_to(r, &mut ctx);
    }
    let seen = || resources.iter().filter(|r| view.sees(r));
    for r in seen() {
        match &r.spec {
            Spec::ServiceEntry(se) => check_service_entry(r, se, &mut ctx),
            Spec::WorkloadEntry(we) if check_workload_entry(r, we, &mut ctx) => {
                ctx.workloads.push((we, crate::names::namespace_of(r)));
            }
            Spec::VirtualService(vs) if vs.hosts.is_empty() => {
                let key = (crate::names::namespace_of(r).to_owned(), r.metadata.name.clone());
                ctx.delegates.insert(key, (r, vs));
            }
            _ => {}
        }
    }
    for r in seen() {
        match &r.spec {
            Spec::DestinationRule(dr) => {
                if dr.host.is_empty() {
                    ctx.err(r, "spec.host", "missing field");
                } else {
                    let host = ctx.resolve(r, &dr.host);
                    let rank = ctx.rule_rank(r, &host);
                    // (Istio consults the client's namespace, the service's and the root
                    // one: a third namespace's rule never applies to a proxy.)
                    let unrelated = rank == 3 && ctx.source_labels.is_some();
                    match ctx.rules.get(&host) {
                        _ if unrelated => {}
                        Some((_, src, other, held)) if *held <= rank => {
                            if *held == rank {
                                let msg = format!(
                                    "host {:?} already has DestinationRule {other} ({} document {}); Istio applies only one",
                                    dr.host, src.file, src.doc
                                );
                                ctx.warn(r, "spec.host", msg);
                            }
                        }
                        _ => {
                            ctx.rules.insert(host, (dr, &r.source, &r.metadata.name, rank));
                        }
                    }
                }
                check_rule(r, dr, &mut ctx);
            }
            Spec::Sidecar(sc) => {
                for (i, e) in sc.egress.iter().enumerate() {
                    if e.hosts.is_empty() {
                        ctx.err(r, format!("spec.egress[{i}].hosts"), "at least one host is required");
                    }
                    for (j, h) in e.hosts.iter().enumerate() {
                        if !h.split_once('/').is_some_and(|(ns, host)| !ns.is_empty() && !host.is_empty()) {
                            ctx.err(
                                r,
                                format!("spec.egress[{i}].hosts[{j}]"),
                                format!("{h:?} is not namespace/host (e.g. \"./*\", \"*/reviews\")"),
                            );
                        }
                    }
                }
            }
            Spec::Gateway(gw) => crate::gateway::check(r, gw, &mut ctx),
            _ => {}
        }
    }
    // Every service port and subset gets its cluster, so /clusters shows them all.
    let mut hosts: Vec<String> = ctx.services.keys().cloned().collect();
    hosts.sort();
    for host in &hosts {
        let ports: Vec<u16> = ctx.services[host].entry.ports.iter().map(|p| p.number as u16).collect();
        let subsets: Vec<String> = ctx.rule_for(host).map(|d| d.subsets.iter().map(|s| s.name.clone()).collect()).unwrap_or_default();
        for port in ports {
            ctx.cluster(host, port, None);
            for s in &subsets {
                ctx.cluster(host, port, Some(s));
            }
        }
    }

    let mut snap = Snapshot::default();
    let mut covered: HashMap<String, ()> = HashMap::new();
    let mut tcp_vss = Vec::new();
    let mut vs_ranks: HashMap<String, (u8, String)> = HashMap::new();
    for r in seen() {
        if let Spec::VirtualService(vs) = &r.spec {
            if vs.hosts.is_empty() {
                crate::delegate::check_delegate(r, vs, &mut ctx);
                continue;
            }
            let tls_routes = crate::tls_route::compile(r, vs, &mut ctx);
            let Some(vh) = compile_vs(r, vs, &mut ctx) else {
                continue;
            };
            // Checked like any VirtualService; applied only where its `gateways` say
            // (sidecars: none or `mesh`; a gateway: one of its Gateways).
            if !binding.applies(r, vs) {
                continue;
            }
            snap.tls_routes.extend(tls_routes);
            tcp_vss.push((r, vs));
            let idx = snap.vhosts.len();
            snap.vhosts.push(vh);
            for (i, h) in vs.hosts.iter().enumerate() {
                let h = ctx.resolve(r, h);
                if h == "*" {
                    snap.catch_all = Some(idx);
                } else if let Some(suffix) = h.strip_prefix('*') {
                    snap.wildcard_hosts.push((suffix.to_owned(), idx));
                } else {
                    // Two VirtualServices for one host: the one in the proxy's namespace,
                    // else the service's, else the first (Istio keeps the oldest) — never
                    // the later one from anywhere.
                    let rank = ctx.vs_rank(r, &h);
                    match vs_ranks.get(&h) {
                        None => {
                            snap.exact_hosts.insert(h.clone(), idx);
                            vs_ranks.insert(h.clone(), (rank, r.metadata.name.clone()));
                        }
                        Some((held, name)) if rank < *held => {
                            let msg = format!(
                                "host {h:?} was served by VirtualService {name}; this one, nearer the client or the service, serves it"
                            );
                            snap.exact_hosts.insert(h.clone(), idx);
                            vs_ranks.insert(h.clone(), (rank, r.metadata.name.clone()));
                            ctx.warn(r, format!("spec.hosts[{i}]"), msg);
                        }
                        Some((_, name)) => {
                            let msg = format!("host {h:?} is already served by VirtualService {name}, which is kept");
                            ctx.warn(r, format!("spec.hosts[{i}]"), msg);
                        }
                    }
                }
                covered.insert(h, ());
            }
        }
    }
    // A ServiceEntry host with no VirtualService gets a default route to itself.
    for host in &hosts {
        if covered.contains_key(host) || ctx.services[host].entry.ports.is_empty() {
            continue;
        }
        let choice = ctx.default_choice(host, None);
        let idx = snap.vhosts.len();
        snap.vhosts.push(VirtualHost {
            name: format!("ServiceEntry/{}", ctx.services[host].name),
            routes: vec![std::sync::Arc::new(Route {
                name: "default".into(),
                matches: Vec::new(),
                action: Action::Forward(WeightedClusters {
                    targets: vec![WeightedTarget {
                        cluster: choice,
                        weight: 1,
                        request_headers: HeaderOps::default(),
                        response_headers: HeaderOps::default(),
                    }],
                    cumulative: vec![1],
                    total: 1,
                }),
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
                timeout: None,
                rewrite: None,
                mirror: None,
                retry: Some(RetryPolicy::istio_default()),
                fault: None,
            })],
            rate_limits: Vec::new(),
            hedging: None,
            compression: Vec::new(),
            response_cache: Vec::new(),
        });
        snap.exact_hosts.insert(host.clone(), idx);
    }
    snap.wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    add_alternate_names(&mut snap, &view.namespace, &ctx);
    match binding {
        Binding::Sidecar => snap.tcp_listeners = crate::tcp_route::listeners(&tcp_vss, &mut ctx),
        Binding::Gateways(_) => snap.gateway_tcp = crate::tcp_route::gateway_routes(&tcp_vss, &mut ctx),
    }
    for r in seen() {
        match &r.spec {
            Spec::RateLimit(rl) => crate::ratelimit::attach(r, rl, &mut snap, &mut ctx),
            Spec::Hedging(h) => crate::ratelimit::attach_hedging(r, h, &mut snap, &mut ctx),
            Spec::Compression(c) => crate::compression::attach(r, c, &mut snap, &mut ctx),
            Spec::ResponseCache(c) => crate::response_cache::attach(r, c, &mut snap, &mut ctx),
            Spec::HealthCheck(hc) => {
                if let Some(p) = crate::healthcheck::compile(r, hc, &mut ctx) {
                    snap.health_checks.push(p);
                }
            }
            Spec::PeerAuthentication(pa) => {
                if let Some(p) = crate::mtls::compile(r, pa, &mut ctx) {
                    snap.peer_authentication.push(p);
                }
            }
            Spec::AuthorizationPolicy(p) => {
                if let Some(p) = crate::authz::compile_policy(r, p, &mut ctx) {
                    snap.authorization.push(p);
                }
            }
            Spec::RequestAuthentication(ra) => {
                if let Some(ra) = crate::authz::compile_request_authn(r, ra, &mut ctx) {
                    snap.request_authentication.push(ra);
                }
            }
            Spec::ExtensionProvider(p) => {
                if let Some((name, p)) = crate::authz::compile_provider(r, p, &mut ctx) {
                    snap.extension_providers.insert(name, p);
                }
            }
            _ => {}
        }
    }
    crate::authz::check_providers(resources, &snap.extension_providers, &mut ctx);
    crate::authz::warn_permissive(resources, &snap, &mut ctx);
    snap.clusters = ctx.clusters;
    snap
}

/// The namespace a service's metrics name (`destination_service_namespace`): the one in
/// a Kubernetes service name (`<name>.<namespace>.svc…`), else the namespace of the
/// ServiceEntry that declares the host, else `unknown` — never a piece of an external
/// host name (`www.googleapis.com` is not in namespace `googleapis`).
fn service_namespace(host: &str, declared_in: Option<&str>) -> String {
    let mut parts = host.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(ns), Some("svc")) if !ns.is_empty() => ns.to_owned(),
        _ => declared_in.unwrap_or("unknown").to_owned(),
    }
}

impl<'a> Ctx<'a> {
    pub fn err(&mut self, r: &Resource, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.errors.push(ConfigError::new(&r.source, Some(&r.kind), Some(&r.metadata.name), path, msg));
    }

    pub fn warn(&mut self, r: &Resource, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.warnings.push(ConfigError::new(&r.source, Some(&r.kind), Some(&r.metadata.name), path, msg));
    }

    pub fn rule_for(&self, host: &str) -> Option<&'a DestinationRule> {
        if let Some((d, _, _, _)) = self.rules.get(host) {
            return Some(d);
        }
        // A wildcard DestinationRule host (`*.example.com`) applies to its subdomains.
        self.rules
            .iter()
            .filter(|(h, _)| h.starts_with('*') && host.ends_with(&h[1..]))
            .max_by_key(|(h, _)| h.len())
            .map(|(_, (d, _, _, _))| *d)
    }

    /// A host named in resource `r` (a VirtualService's, a DestinationRule's, a
    /// destination), lower case, as Istio resolves it ([`crate::names`]): a short name is
    /// the Kubernetes service of `r`'s namespace — unless a ServiceEntry the proxy sees
    /// declares that short name literally.
    pub fn resolve(&self, r: &Resource, host: &str) -> String {
        let lower = host.to_ascii_lowercase();
        let ns = crate::names::namespace_of(r);
        // (Only a ServiceEntry of the resource's own namespace: another namespace's
        // literal `reviews` must not capture this namespace's rules for its reviews.)
        if self.services.get(&lower).is_some_and(|s| !crate::names::is_short(&lower) || s.namespace == ns) {
            return lower;
        }
        crate::names::resolve(&lower, ns)
    }

    /// Precedence among VirtualServices for one host, lower first: the one in the
    /// proxy's namespace, then the service's, then others.
    fn vs_rank(&self, r: &Resource, host: &str) -> u8 {
        match self.rule_rank(r, host) {
            0 => 0,
            1 => 1,
            _ => 2,
        }
    }

    /// Istio's precedence among DestinationRules for one host, lower first: the one in
    /// the proxy's namespace, then the service's, then the root namespace's, then others.
    fn rule_rank(&self, r: &Resource, host: &str) -> u8 {
        let ns = crate::names::namespace_of(r);
        let service_ns = self.services.get(host).map(|s| s.namespace).or_else(|| crate::names::service_parts(host).map(|(_, ns)| ns));
        if ns == self.viewer {
            0
        } else if service_ns == Some(ns) {
            1
        } else if ns == crate::names::ROOT_NAMESPACE {
            2
        } else {
            3
        }
    }

    /// The cluster for (host, port, subset), created on first use.
    pub fn cluster(&mut self, host: &str, port: u16, subset: Option<&str>) -> usize {
        let name = format!("outbound|{port}|{}|{host}", subset.unwrap_or(""));
        if let Some(&i) = self.cluster_index.get(&name) {
            return i;
        }
        let rule = self.rule_for(host);
        let subset_at = subset.and_then(|s| rule.and_then(|d| d.subsets.iter().enumerate().find(|(_, x)| x.name == s)));
        let subset_def = subset_at.map(|(_, s)| s);
        let subset_policy = subset_at.and_then(|(i, s)| Some((i, s.traffic_policy.as_ref()?)));
        let policy = merge_policy(rule.and_then(|d| d.traffic_policy.as_ref()), subset_policy, port);
        let service = self.services.get(host);
        let mut endpoints = Vec::new();
        let mut dns = false;
        let mut protocol = None;
        if let Some(svc) = service {
            let se = svc.entry;
            dns = matches!(se.resolution(), Resolution::Dns | Resolution::DnsRoundRobin);
            if let Some(sp) = se.ports.iter().find(|p| p.number as u16 == port) {
                protocol = sp.protocol.clone();
                if se.endpoints.is_empty() && dns {
                    let p = sp.target_port.unwrap_or(sp.number) as u16;
                    endpoints.push(EndpointSpec { address: host.to_owned(), port: p, weight: 1, labels: BTreeMap::new(), locality: None });
                }
                let selected = se.workload_selector.as_ref().map(|sel| {
                    self.workloads
                        .iter()
                        .filter(|(we, ns)| *ns == svc.namespace && sel.labels.iter().all(|(k, v)| we.labels.get(k) == Some(v)))
                        .map(|(we, _)| *we)
                        .collect::<Vec<_>>()
                });
                for ep in selected.unwrap_or_else(|| se.endpoints.iter().collect()) {
                    if let Some(sub) = subset_def {
                        if !sub.labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)) {
                            continue;
                        }
                    }
                    let p = ep.ports.get(&sp.name).copied().or(sp.target_port).unwrap_or(sp.number) as u16;
                    endpoints.push(EndpointSpec {
                        address: ep.address.clone(),
                        port: p,
                        weight: ep.weight.filter(|w| *w > 0).unwrap_or(1),
                        labels: ep.labels.clone(),
                        locality: ep.locality.clone(),
                    });
                }
            }
        }
        let lb = lb_policy(policy.load_balancer.as_ref());
        let mut pool = pool_settings(policy.connection_pool.as_ref(), protocol.as_deref());
        if let Some((t, path)) = &policy.tls {
            pool.tls_set = true;
            // Errors were reported by `check_policy`; a failed one fails closed.
            pool.tls = crate::tls::compile(t, host, pool.protocol).unwrap_or_else(|e| {
                let mode = if t.mode == TlsModeSetting::Mutual { crate::TlsMode::Mutual } else { crate::TlsMode::Simple };
                Some(crate::UpstreamTls::failed(
                    mode,
                    format!("{path}: {}", e.iter().map(|(f, m)| format!("{f} {m}")).collect::<Vec<_>>().join("; ")),
                ))
            });
        }
        let outlier = outlier_settings(policy.outlier_detection.as_ref());
        let limits = limits(policy.connection_pool.as_ref(), policy.retry_budget.as_ref());
        let locality = locality_lb(policy.load_balancer.as_ref(), outlier.is_some());
        let spec = ClusterSpec {
            name: name.clone(),
            service: host.to_owned(),
            namespace: service_namespace(host, service.map(|s| s.namespace)),
            port,
            subset: subset.map(str::to_owned),
            lb,
            pool,
            outlier,
            limits,
            locality,
            dns,
            endpoints,
            subject_alt_names: service.map(|s| s.entry.subject_alt_names.clone()).unwrap_or_default(),
            warmup: warmup(policy.load_balancer.as_ref()),
        };
        self.clusters.push(spec);
        self.cluster_index.insert(name, self.clusters.len() - 1);
        self.clusters.len() - 1
    }

    /// Resolves a destination with no explicit port: one cluster per service port, the
    /// request's port choosing among them; the first port is the default.
    pub fn default_choice(&mut self, host: &str, subset: Option<&str>) -> ClusterChoice {
        let ports: Vec<u16> = self.services.get(host).map(|s| s.entry.ports.iter().map(|p| p.number as u16).collect()).unwrap_or_default();
        if ports.is_empty() {
            return ClusterChoice { default: self.cluster(host, 80, subset), by_port: Vec::new() };
        }
        let by_port: Vec<(u16, usize)> = ports.iter().map(|&p| (p, self.cluster(host, p, subset))).collect();
        ClusterChoice { default: by_port[0].1, by_port: if by_port.len() > 1 { by_port } else { Vec::new() } }
    }
}

/// Istio's `exportTo` rules on the kinds that have one.
fn check_export_to(r: &Resource, ctx: &mut Ctx<'_>) {
    for (i, msg) in crate::names::check_export_to(crate::names::export_to(r)) {
        match i {
            Some(i) => ctx.err(r, format!("spec.exportTo[{i}]"), msg),
            None => ctx.err(r, "spec.exportTo", msg),
        }
    }
}

/// Every Kubernetes-style service host (`name.ns.svc.cluster.local`) also answers to its
/// alternate names as a client in `viewer` writes them (`name.ns.svc`, `name.ns`, and
/// `name` from the same namespace); a host declared literally keeps its own.
fn add_alternate_names(snap: &mut Snapshot, viewer: &str, ctx: &Ctx<'_>) {
    let mut extra = Vec::new();
    for (host, &idx) in &snap.exact_hosts {
        for alt in crate::names::alternates(host, viewer) {
            extra.push((alt, idx));
        }
    }
    // (Sorted, so that which of two services claiming one alternate wins is stable.)
    extra.sort();
    for (alt, idx) in extra {
        // A host declared literally keeps it — unless it is a short name another
        // namespace's ServiceEntry declares: the proxy's own namespace's service wins.
        let foreign = ctx.services.get(&alt).is_some_and(|s| crate::names::is_short(&alt) && s.namespace != viewer);
        match snap.exact_hosts.entry(alt) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(idx);
            }
            std::collections::hash_map::Entry::Occupied(mut o) if foreign => {
                o.insert(idx);
            }
            _ => {}
        }
    }
}

fn check_service_entry<'a>(r: &'a Resource, se: &'a ServiceEntry, ctx: &mut Ctx<'a>) {
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
        for (k, e) in rules::labels(&ep.labels) {
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
        for (pname, port) in &ep.ports {
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
fn check_workload_entry(r: &Resource, we: &WorkloadEntry, ctx: &mut Ctx<'_>) -> bool {
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
    for (k, e) in rules::labels(&we.labels) {
        ctx.err(r, format!("spec.labels[{k}]"), e);
    }
    for (name, port) in &we.ports {
        if *port == 0 || *port > 65535 {
            ctx.err(r, format!("spec.ports.{name}"), format!("port {port} out of range 1-65535"));
        }
    }
    if let Some(Err(e)) = we.locality.as_deref().map(rules::locality) {
        ctx.err(r, "spec.locality", e);
    }
    ctx.diags.errors.len() == before && reachable
}

fn check_rule(r: &Resource, dr: &DestinationRule, ctx: &mut Ctx<'_>) {
    if let Some(tp) = &dr.traffic_policy {
        check_policy(r, tp, "spec.trafficPolicy", ctx);
    }
    let mut names = HashMap::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            ctx.err(r, format!("spec.subsets[{i}].name"), "missing field");
        } else if let Err(e) = crate::rules::dns1123_label(&s.name) {
            // (Istio's validation: a subset name is a DNS-1123 label; it becomes part of
            // the cluster's name.)
            ctx.err(r, format!("spec.subsets[{i}].name"), e);
        } else if names.insert(s.name.clone(), i).is_some() {
            ctx.err(r, format!("spec.subsets[{i}].name"), format!("duplicate subset {:?}", s.name));
        }
        if let Some(tp) = &s.traffic_policy {
            check_policy(r, tp, &format!("spec.subsets[{i}].trafficPolicy"), ctx);
        }
    }
}

fn check_policy(r: &Resource, tp: &TrafficPolicy, path: &str, ctx: &mut Ctx<'_>) {
    if let Some(lb) = &tp.load_balancer {
        check_lb(r, lb, &format!("{path}.loadBalancer"), ctx);
    }
    if let Some(t) = &tp.tls {
        check_tls(r, t, &format!("{path}.tls"), ctx);
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        if let Some(t) = &pl.tls {
            check_tls(r, t, &format!("{p}.tls"), ctx);
        }
        match pl.port {
            Some(PortSelector { number }) if (1..=65535).contains(&number) => {}
            _ => ctx.err(r, format!("{p}.port.number"), "a port number 1-65535 is required"),
        }
        if let Some(lb) = &pl.load_balancer {
            check_lb(r, lb, &format!("{p}.loadBalancer"), ctx);
        }
    }
    if let Some(od) = &tp.outlier_detection {
        let p = format!("{path}.outlierDetection");
        if od.latency_mad_factor.is_some_and(|k| !k.is_finite() || k <= 0.0) {
            ctx.err(r, format!("{p}.latencyMadFactor"), "must be a number greater than 0");
        }
        if od.success_rate.as_ref().and_then(|s| s.stdev_factor).is_some_and(|k| !k.is_finite() || k <= 0.0) {
            ctx.err(r, format!("{p}.successRate.stdevFactor"), "must be a number greater than 0 (Envoy's 1900 is 1.9 here)");
        }
        if let Some(t) = od.failure_percentage.as_ref().and_then(|f| f.threshold).filter(|t| *t > 100) {
            ctx.err(r, format!("{p}.failurePercentage.threshold"), format!("{t} is not a percentage 0-100"));
        }
    }
    if let Some(cp) = &tp.connection_pool {
        if let Some(k) = cp.http.as_ref().and_then(|h| h.http2_keep_alive.as_ref()) {
            let p = format!("{path}.connectionPool.http.http2KeepAlive");
            for (field, d) in [("interval", k.interval), ("timeout", k.timeout)] {
                match d {
                    None => ctx.err(r, format!("{p}.{field}"), "missing field"),
                    Some(d) => check_ms(r, d.0, format!("{p}.{field}"), ctx),
                }
            }
        }
        if let Some(tcp) = &cp.tcp {
            if tcp.connect_timeout.is_some_and(|d| d.0 == Duration::ZERO) {
                ctx.err(r, format!("{path}.connectionPool.tcp.connectTimeout"), "must be greater than 0");
            }
        }
    }
}

/// Compiles `tls` once to report its problems (files included) with their field paths.
fn check_tls(r: &Resource, t: &ClientTlsSettings, path: &str, ctx: &mut Ctx<'_>) {
    if let Err(errs) = crate::tls::compile(t, "", UpstreamProtocol::Http1) {
        for (field, msg) in errs {
            let p = if field.is_empty() { path.to_owned() } else { format!("{path}.{field}") };
            ctx.err(r, p, msg);
        }
    }
}

/// Istio's rule for a duration: at least 1 ms, whole milliseconds.
fn check_ms(r: &Resource, d: Duration, path: String, ctx: &mut Ctx<'_>) {
    if d < Duration::from_millis(1) {
        ctx.err(r, path, "must be at least 1ms");
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        ctx.err(r, path, "only whole milliseconds are supported");
    }
}

fn check_lb(r: &Resource, lb: &LoadBalancerSettings, path: &str, ctx: &mut Ctx<'_>) {
    if let Some(w) = &lb.warmup {
        let p = format!("{path}.warmup");
        match w.duration {
            None => ctx.err(r, format!("{p}.duration"), "missing field (the slow start window)"),
            Some(d) => check_ms(r, d.0, format!("{p}.duration"), ctx),
        }
        if let Some(m) = w.minimum_percent.filter(|m| !(0.0..=100.0).contains(m)) {
            ctx.err(r, format!("{p}.minimumPercent"), format!("{m} is not a percentage 0-100"));
        }
        if let Some(a) = w.aggression.filter(|a| !a.is_finite() || *a <= 0.0) {
            ctx.err(r, format!("{p}.aggression"), format!("{a} must be greater than 0"));
        }
    }
    if let Some(d) = lb.warmup_duration_secs {
        check_ms(r, d.0, format!("{path}.warmupDurationSecs"), ctx);
    }
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        ctx.err(r, path.to_owned(), "only one of simple or consistentHash may be set");
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(r, l, &format!("{path}.localityLbSetting"), ctx);
    }
    if let Some(ch) = &lb.consistent_hash {
        let p = format!("{path}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => ctx.err(r, p.clone(), "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required"),
            1 => {}
            _ => ctx.err(r, p.clone(), "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set"),
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                ctx.err(r, format!("{p}.httpCookie.name"), "missing field");
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            ctx.err(r, p.clone(), "only one of ringHash or maglev may be set");
        }
        if let Some(m) = &ch.maglev {
            if let Some(t) = m.table_size {
                if t > rules::MAX_MAGLEV_TABLE {
                    ctx.err(r, format!("{p}.maglev.tableSize"), format!("{t} is over Envoy's largest table, {}", rules::MAX_MAGLEV_TABLE));
                } else if !is_prime(t) {
                    ctx.err(
                        r,
                        format!("{p}.maglev.tableSize"),
                        format!("{t} is not a prime number (Envoy requires a prime; 65537 is the default)"),
                    );
                }
            }
        }
        if let Some(rh) = &ch.ring_hash {
            if rh.minimum_ring_size.is_some_and(|m| m > rules::MAX_RING_SIZE) {
                ctx.err(r, format!("{p}.ringHash.minimumRingSize"), format!("must be at most {}", rules::MAX_RING_SIZE));
            }
        }
        if ch.minimum_ring_size.is_some_and(|m| m > rules::MAX_RING_SIZE) {
            ctx.err(r, format!("{p}.minimumRingSize"), format!("must be at most {}", rules::MAX_RING_SIZE));
        }
    }
}

/// Istio's rules for `localityLbSetting`.
fn check_locality(r: &Resource, l: &LocalityLbSetting, path: &str, ctx: &mut Ctx<'_>) {
    use weft_balance::locality::Locality;
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        ctx.err(r, path.to_owned(), "only one of distribute or failover may be set");
    }
    if !l.distribute.is_empty() && !l.failover_priority.is_empty() {
        ctx.err(r, path.to_owned(), "only one of distribute or failoverPriority may be set");
    }
    let pattern_ok = |p: &str| {
        let parts: Vec<&str> = p.split('/').collect();
        // A `*` may only stand last.
        !p.is_empty() && parts.len() <= 3 && parts.iter().all(|x| !x.is_empty()) && parts[..parts.len() - 1].iter().all(|x| *x != "*")
    };
    for (i, d) in l.distribute.iter().enumerate() {
        let p = format!("{path}.distribute[{i}]");
        if !pattern_ok(&d.from) {
            ctx.err(r, format!("{p}.from"), format!("{:?} is not a locality (region/zone/subzone, `*` last)", d.from));
        }
        if d.to.is_empty() {
            ctx.err(r, format!("{p}.to"), "missing field");
        }
        for k in d.to.keys().filter(|k| !pattern_ok(k)) {
            ctx.err(r, format!("{p}.to.{k}"), format!("{k:?} is not a locality (region/zone/subzone, `*` last)"));
        }
        let sum: u64 = d.to.values().map(|v| u64::from(*v)).sum();
        if !d.to.is_empty() && sum != 100 {
            ctx.err(r, format!("{p}.to"), format!("weights add up to {sum}, not 100"));
        }
    }
    for (i, f) in l.failover.iter().enumerate() {
        let p = format!("{path}.failover[{i}]");
        for (field, v) in [("from", &f.from), ("to", &f.to)] {
            if v.is_empty() || v.contains('/') || Locality::parse(v).is_none() {
                ctx.err(r, format!("{p}.{field}"), format!("{v:?} is not a region"));
            }
        }
        if f.from == f.to && !f.from.is_empty() {
            ctx.err(r, format!("{p}.to"), "must be another region than from");
        }
    }
}

pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
