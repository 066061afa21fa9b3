//! Raw resources → runtime [`Snapshot`], with Istio's semantic checks.
//!
//! Every check that fails names the resource and field path, in the same form as the
//! loader's errors, so `weft validate` and a live reload report problems alike.

use std::collections::{BTreeMap, HashMap};

use crate::error::{ConfigError, Diagnostics, Source};
use crate::gateway::Binding;
use crate::istio::*;
use crate::load::{Resource, Spec};
use crate::policy::{lb_policy, limits, locality_lb, merge_policy, outlier_settings, pool_settings, warmup};
use crate::rule_checks::check_rule;
use crate::service_entry::{check_service_entry, check_workload_entry};
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
    let mut ctx = Ctx::new(diags, view.namespace.clone(), binding.clone(), view.labels.clone());
    for r in resources {
        check_export_to(r, &mut ctx);
    }
    let seen = || resources.iter().filter(|r| view.sees(r));
    index_and_check(seen(), &mut ctx, Passes::CheckAndIndex);
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
        let idx = snap.vhosts.len();
        snap.vhosts.push(default_vhost(host, &mut ctx));
        // (A wildcard host serves the names under it, as a VirtualService's does.)
        match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => snap.wildcard_hosts.push((suffix.to_owned(), idx)),
            _ => {
                snap.exact_hosts.insert(host.clone(), idx);
            }
        }
    }
    snap.wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    add_alternate_names(&mut snap, &view.namespace, &ctx);
    snap.services = crate::dns::services(
        ctx.services.iter().map(|(host, s)| (host.as_str(), s.namespace, crate::dns::single_addresses(&s.entry.addresses))),
        &view.namespace,
    );
    match binding {
        Binding::Sidecar => snap.tcp_listeners = crate::tcp_route::listeners(&tcp_vss, &mut ctx),
        Binding::Gateways(_) => snap.gateway_tcp = crate::tcp_route::gateway_routes(&tcp_vss, &mut ctx),
    }
    let mut telemetry = Vec::new();
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
            Spec::Telemetry(t) => {
                if let Some(p) = crate::telemetry::compile(r, t, &mut ctx) {
                    telemetry.push(p);
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
    snap.tracing = crate::telemetry::resolve(&telemetry, view);
    crate::authz::check_providers(resources, &snap.extension_providers, &mut ctx);
    crate::authz::warn_permissive(resources, &snap, &mut ctx);
    snap.clusters = ctx.clusters;
    snap
}

/// What a compile's first passes do: check every resource and index what routes resolve
/// against (a compile), or only index (routes recompiled against a mesh that passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passes {
    CheckAndIndex,
    IndexOnly,
}

/// A compile's first passes over what the proxy sees: every ServiceEntry, WorkloadEntry,
/// delegate VirtualService and DestinationRule checked and indexed into `ctx` (what
/// routes resolve against), and Sidecars and Gateways checked.
pub(crate) fn index_and_check<'a>(seen: impl Iterator<Item = &'a Resource> + Clone, ctx: &mut Ctx<'a>, passes: Passes) {
    let check = passes == Passes::CheckAndIndex;
    for r in seen.clone() {
        match &r.spec {
            Spec::ServiceEntry(se) if check => check_service_entry(r, se, ctx),
            Spec::ServiceEntry(se) => crate::service_entry::index_service_entry(r, se, ctx),
            Spec::WorkloadEntry(we) if check_workload_entry(r, we, ctx) => {
                ctx.workloads.push((we, crate::names::namespace_of(r)));
            }
            Spec::VirtualService(vs) if vs.hosts.is_empty() => {
                let key = (crate::names::namespace_of(r).to_owned(), r.metadata.name.clone());
                ctx.delegates.insert(key, (r, vs));
            }
            _ => {}
        }
    }
    for r in seen.clone() {
        match &r.spec {
            Spec::DestinationRule(dr) => {
                index_rule(r, dr, ctx);
                if check {
                    check_rule(r, dr, ctx);
                }
            }
            Spec::Sidecar(sc) if check => check_sidecar(r, sc, ctx),
            Spec::Gateway(gw) if check => crate::gateway::check(r, gw, ctx),
            _ => {}
        }
    }
}

/// The virtual host of a ServiceEntry host no VirtualService serves: one route to the
/// service, with Istio's default retries.
pub(crate) fn default_vhost(host: &str, ctx: &mut Ctx<'_>) -> VirtualHost {
    let choice = ctx.default_choice(host, None);
    let target =
        WeightedTarget { cluster: choice, weight: 1, request_headers: HeaderOps::default(), response_headers: HeaderOps::default() };
    VirtualHost {
        name: format!("ServiceEntry/{}", ctx.services[host].name),
        routes: vec![std::sync::Arc::new(Route {
            name: "default".into(),
            matches: Vec::new(),
            action: Action::Forward(WeightedClusters { targets: vec![target], cumulative: vec![1], total: 1 }),
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
    }
}

/// The DestinationRule that applies to a host: by Istio's precedence ([`Ctx::rule_rank`]).
fn index_rule<'a>(r: &'a Resource, dr: &'a DestinationRule, ctx: &mut Ctx<'a>) {
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
}

fn check_sidecar(r: &Resource, sc: &Sidecar, ctx: &mut Ctx<'_>) {
    for (i, e) in sc.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            ctx.err(r, format!("spec.egress[{i}].hosts"), "at least one host is required");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            if !h.split_once('/').is_some_and(|(ns, host)| !ns.is_empty() && !host.is_empty()) {
                ctx.err(r, format!("spec.egress[{i}].hosts[{j}]"), format!("{h:?} is not namespace/host (e.g. \"./*\", \"*/reviews\")"));
            }
        }
    }
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
    /// An empty compile for a proxy of `viewer`, its routes applied as `binding` says.
    pub(crate) fn new(
        diags: &'a mut Diagnostics,
        viewer: String,
        binding: Binding,
        source_labels: Option<BTreeMap<String, String>>,
    ) -> Self {
        Ctx {
            services: HashMap::new(),
            rules: HashMap::new(),
            clusters: Vec::new(),
            cluster_index: HashMap::new(),
            diags,
            viewer,
            workloads: Vec::new(),
            delegates: HashMap::new(),
            binding,
            source_labels,
        }
    }

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
        let mut origin = None;
        if let Some(svc) = service {
            let se = svc.entry;
            dns = matches!(se.resolution(), Resolution::Dns | Resolution::DnsRoundRobin);
            if let Some(sp) = se.ports.iter().find(|p| p.number as u16 == port) {
                protocol = sp.protocol.clone();
                let selected = se.workload_selector.as_ref().map(|sel| {
                    self.workloads
                        .iter()
                        .filter(|(we, ns)| *ns == svc.namespace && sel.labels.iter().all(|(k, v)| we.labels.get(k) == Some(v)))
                        .map(|(we, _)| *we)
                        .collect::<Vec<_>>()
                });
                endpoints = crate::endpoints::select(se, sp, host, subset_def.map(|s| &s.labels), selected);
            }
            // (Endpoints a workloadSelector picks change with WorkloadEntries: not in place.)
            if se.workload_selector.is_none() {
                let subset_labels = subset_def.map(|s| s.labels.clone()).unwrap_or_default();
                origin = Some(std::sync::Arc::new(crate::endpoints::Origin { source: svc.resource.source.clone(), subset_labels }));
            }
        }
        if subset.is_some() && subset_def.is_none() {
            // A subset no DestinationRule defines has no endpoints (503, as in Istio, where
            // it has no cluster): never every version of the service.
            endpoints.clear();
            origin = None;
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
            origin,
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
