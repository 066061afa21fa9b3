//! Updates in place for VirtualServices: a delta that adds, changes or removes
//! VirtualServices recompiles only the virtual hosts of their hosts (as they were and
//! as they become) and leaves every other part of the snapshot as it was — the same
//! routes a whole compile gives, the vhosts re-indexed. Pure: the proxy decides when a
//! delta qualifies and swaps the result in.
//!
//! Taken in place (everything else is compiled whole, [`RoutesOutcome::Whole`] says why):
//! a sidecar's VirtualServices with named hosts (no `*` in any), no `exportTo`, bound
//! to the mesh (no `gateways`, or `mesh` among them), with `http` routes only (no
//! `tcp`, `tls` or `delegate`), whose hosts no other VirtualService names and whose
//! alternate names (`name.ns.svc`, `name.ns`, `name`) nothing declares literally, whose
//! virtual hosts (old and new) carry no RateLimit, Hedging, Compression or ResponseCache
//! and route only to clusters every compile makes (a ServiceEntry's ports and its
//! DestinationRule's subsets): a new cluster, or one a VirtualService alone made, would
//! re-index the clusters.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::compile::{default_vhost, index_and_check, Ctx, Passes, View};
use crate::error::Diagnostics;
use crate::gateway::{Binding, Role};
use crate::load::{Resource, Spec};
use crate::names::{alternates, CLUSTER_DOMAIN};
use crate::snapshot::{Action, ClusterChoice, ClusterSpec, Snapshot, VirtualHost};

/// One VirtualService the delta touches: as it was (none: added) and as it becomes
/// (none: removed); both, when present, from the same document.
#[derive(Debug, Clone)]
pub struct VsEdit {
    pub old: Option<Resource>,
    pub new: Option<Resource>,
}

/// A snapshot with the VirtualServices' hosts recompiled.
#[derive(Debug)]
pub struct RoutesUpdate {
    pub snap: Snapshot,
    /// For each virtual host of `snap`: its index in the old snapshot (the same host,
    /// moved or not), or none when it was compiled now.
    pub from: Vec<Option<usize>>,
}

#[derive(Debug)]
pub enum RoutesOutcome {
    Updated(Box<RoutesUpdate>),
    /// A VirtualService has errors (in the diagnostics): nothing may be installed.
    Refused,
    /// The change needs the whole compile, for this reason.
    Whole(&'static str),
}

/// The virtual hosts of `edits` compiled against the mesh of `resources` (which `old`,
/// with its clusters taken out into `specs`, was compiled from, as `view` sees it),
/// spliced into a copy of `old`. Warnings and errors go to `diags`.
pub fn update_routes(
    old: &Snapshot,
    specs: &[Arc<ClusterSpec>],
    resources: &[Arc<Resource>],
    edits: &[VsEdit],
    view: &View,
    role: &Role,
    diags: &mut Diagnostics,
) -> RoutesOutcome {
    if !matches!(role, Role::Sidecar) || old.gateway.is_some() {
        return RoutesOutcome::Whole("a gateway's routes");
    }
    let vss = edits.iter().flat_map(|e| e.old.iter().chain(&e.new));
    if let Some(why) = vss.clone().find_map(ineligible) {
        return RoutesOutcome::Whole(why);
    }
    let (errors, warnings) = (diags.errors.len(), diags.warnings.len());
    let mut ctx = Ctx::new(diags, view.namespace.clone(), Binding::Sidecar, view.labels.clone());
    // (The resources held passed every check when the mesh was compiled.)
    index_and_check(resources.iter().map(|r| &**r).filter(|r| view.sees(r)), &mut ctx, Passes::IndexOnly);
    if ctx.diags.errors.len() > errors {
        return RoutesOutcome::Whole("the mesh held does not compile");
    }
    // (The mesh's own warnings were given when it was compiled.)
    ctx.diags.warnings.truncate(warnings);
    let touched = match touched_hosts(edits, resources, old, &ctx) {
        Ok(t) => t,
        Err(why) => return RoutesOutcome::Whole(why),
    };
    let Some(mut added) = compile_new(edits, &touched, &mut ctx) else { return RoutesOutcome::Refused };
    if let Err(why) = onto_held_clusters(&mut added, &touched, old, specs, &ctx) {
        return RoutesOutcome::Whole(why);
    }
    RoutesOutcome::Updated(Box::new(crate::routes_splice::splice(old, &touched, added, &view.namespace)))
}

/// Why a VirtualService cannot be taken in place, if it cannot.
fn ineligible(r: &Resource) -> Option<&'static str> {
    let Spec::VirtualService(vs) = &r.spec else { return Some("not a VirtualService") };
    if vs.hosts.is_empty() || vs.http.iter().any(|h| h.delegate.is_some()) {
        Some("a delegate")
    } else if vs.hosts.iter().any(|h| h.contains('*')) {
        Some("a wildcard host")
    } else if !vs.export_to.is_empty() {
        Some("exportTo")
    } else if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
        Some("bound to gateways only")
    } else if !vs.tcp.is_empty() || !vs.tls.is_empty() {
        Some("tcp or tls routes")
    } else {
        None
    }
}

/// The hosts an update touches, and the old virtual hosts no host reaches after it.
pub(crate) struct Touched {
    /// The edits' hosts, old and new, resolved.
    pub hosts: HashSet<String>,
    /// Those and their alternate names: every key of `exact_hosts` the update rewrites.
    pub keys: HashSet<String>,
    /// The old virtual hosts those keys reach (no other key reaches them).
    pub dead: BTreeSet<usize>,
}

fn resolved_hosts(r: &Resource, ctx: &Ctx<'_>) -> Vec<String> {
    let Spec::VirtualService(vs) = &r.spec else { return Vec::new() };
    vs.hosts.iter().map(|h| ctx.resolve(r, h)).collect()
}

/// The hosts `edits` touch, when nothing else names them (another VirtualService, a
/// literal alternate name, an attached policy); else why not.
fn touched_hosts(edits: &[VsEdit], resources: &[Arc<Resource>], old: &Snapshot, ctx: &Ctx<'_>) -> Result<Touched, &'static str> {
    let mut hosts = HashSet::new();
    let mut new_hosts = HashSet::new();
    for e in edits {
        for (r, is_new) in e.old.iter().map(|r| (r, false)).chain(e.new.iter().map(|r| (r, true))) {
            let mut own = HashSet::new();
            for h in resolved_hosts(r, ctx) {
                if !own.insert(h.clone()) || (is_new && !new_hosts.insert(h.clone())) {
                    return Err("two VirtualServices (or one twice) name a host");
                }
                hosts.insert(h);
            }
        }
    }
    let viewer = ctx.viewer.as_str();
    let mut keys = hosts.clone();
    let mut near = HashSet::new();
    for h in &hosts {
        for a in alternates(h, viewer).into_iter().chain(alternate_of(h, viewer)) {
            if ctx.services.contains_key(&a) || hosts.contains(&a) {
                return Err("an alternate name of a host is declared literally");
            }
            near.insert(a);
        }
        keys.extend(alternates(h, viewer));
    }
    near.extend(hosts.iter().cloned());
    let edited: HashSet<_> = edits.iter().flat_map(|e| e.old.iter().chain(&e.new)).map(|r| &r.source).collect();
    let others = resources.iter().filter(|r| matches!(r.spec, Spec::VirtualService(_)) && !edited.contains(&r.source));
    if others.flat_map(|r| resolved_hosts(r, ctx)).any(|h| near.contains(&h)) {
        return Err("another VirtualService names one of the hosts");
    }
    let dead: BTreeSet<usize> = keys.iter().filter_map(|k| old.exact_hosts.get(k).copied()).collect();
    if dead.iter().any(|&i| has_policies(&old.vhosts[i])) {
        return Err("a RateLimit, Hedging, Compression or ResponseCache applies to a host");
    }
    let shared = old.exact_hosts.iter().any(|(k, i)| dead.contains(i) && !keys.contains(k));
    let elsewhere = old.wildcard_hosts.iter().map(|(_, i)| i).chain(&old.catch_all).chain(&old.inbound).any(|i| dead.contains(i));
    if shared || elsewhere {
        return Err("a virtual host is reached by a host the change does not name");
    }
    Ok(Touched { hosts, keys, dead })
}

/// The hosts `host` is an alternate name of (a Kubernetes service's FQDN).
fn alternate_of(host: &str, viewer: &str) -> Vec<String> {
    let mut fqdns = vec![format!("{host}.{CLUSTER_DOMAIN}"), format!("{host}.svc.{CLUSTER_DOMAIN}")];
    if crate::names::is_short(host) {
        fqdns.push(format!("{host}.{viewer}.svc.{CLUSTER_DOMAIN}"));
    }
    fqdns.retain(|f| alternates(f, viewer).iter().any(|a| a == host));
    fqdns
}

fn has_policies(vh: &VirtualHost) -> bool {
    !vh.rate_limits.is_empty() || vh.hedging.is_some() || !vh.compression.is_empty() || !vh.response_cache.is_empty()
}

/// The new virtual hosts, each with the hosts it serves: the edits' VirtualServices,
/// and a ServiceEntry's default route for each touched host no VirtualService serves
/// now. None when a VirtualService has errors (reported).
fn compile_new(edits: &[VsEdit], touched: &Touched, ctx: &mut Ctx<'_>) -> Option<Vec<(Vec<String>, VirtualHost)>> {
    let errors = ctx.diags.errors.len();
    let mut out = Vec::new();
    let mut covered = HashSet::new();
    for r in edits.iter().filter_map(|e| e.new.as_ref()) {
        let Spec::VirtualService(vs) = &r.spec else { continue };
        let hosts = resolved_hosts(r, ctx);
        covered.extend(hosts.iter().cloned());
        if let Some(vh) = crate::vhost::compile_vs(r, vs, ctx) {
            out.push((hosts, vh));
        }
    }
    if ctx.diags.errors.len() > errors {
        return None;
    }
    let mut uncovered: Vec<&String> = touched.hosts.iter().filter(|h| !covered.contains(*h)).collect();
    uncovered.sort();
    for h in uncovered {
        if ctx.services.get(h).is_some_and(|s| !s.entry.ports.is_empty()) {
            out.push((vec![h.clone()], default_vhost(h, ctx)));
        }
    }
    Some(out)
}

/// The new routes pointed at the clusters held (those they name were made afresh in
/// `ctx`), when each is one every compile makes, as is each the dead hosts named.
fn onto_held_clusters(
    added: &mut [(Vec<String>, VirtualHost)],
    touched: &Touched,
    old: &Snapshot,
    specs: &[Arc<ClusterSpec>],
    ctx: &Ctx<'_>,
) -> Result<(), &'static str> {
    let held: Option<Vec<usize>> = ctx.clusters.iter().map(|c| specs.iter().position(|s| s.name == c.name)).collect();
    let Some(held) = held else { return Err("a destination needs a cluster the mesh has not") };
    if !added.iter_mut().all(|(_, vh)| reindex(vh, &held)) {
        return Err("a route is shared");
    }
    let dead = touched.dead.iter().map(|&i| &old.vhosts[i]);
    let routed = dead.chain(added.iter().map(|(_, vh)| vh)).flat_map(clusters_of);
    if !routed.into_iter().all(|i| specs.get(i).is_some_and(|s| made_by_every_compile(s, ctx))) {
        return Err("a route names a cluster only VirtualServices make");
    }
    Ok(())
}

/// `vh`'s routes (just made) naming the held clusters: `held[i]` for index `i`. False
/// when a route is shared (it is not).
fn reindex(vh: &mut VirtualHost, held: &[usize]) -> bool {
    let at = |c: &mut ClusterChoice| {
        c.default = held[c.default];
        c.by_port.iter_mut().for_each(|(_, i)| *i = held[*i]);
    };
    for route in &mut vh.routes {
        let Some(r) = Arc::get_mut(route) else { return false };
        if let Action::Forward(w) = &mut r.action {
            w.targets.iter_mut().for_each(|t| at(&mut t.cluster));
        }
        if let Some((c, _)) = &mut r.mirror {
            at(c);
        }
    }
    true
}

/// Every cluster index a virtual host's routes name (targets and mirrors).
fn clusters_of(vh: &VirtualHost) -> Vec<usize> {
    let mut out = Vec::new();
    let mut add = |c: &ClusterChoice| out.extend(std::iter::once(c.default).chain(c.by_port.iter().map(|(_, i)| *i)));
    for r in &vh.routes {
        if let Action::Forward(w) = &r.action {
            w.targets.iter().for_each(|t| add(&t.cluster));
        }
        if let Some((c, _)) = &r.mirror {
            add(c);
        }
    }
    out
}

/// Whether every compile makes `spec` before any route is compiled: a port of a
/// ServiceEntry the proxy sees, whole or one of its DestinationRule's subsets. Those
/// keep their indexes whatever the VirtualServices name.
fn made_by_every_compile(spec: &ClusterSpec, ctx: &Ctx<'_>) -> bool {
    let Some(svc) = ctx.services.get(&spec.service) else { return false };
    let port = svc.entry.ports.iter().any(|p| p.number as u16 == spec.port);
    let subset = match &spec.subset {
        None => true,
        Some(s) => ctx.rule_for(&spec.service).is_some_and(|d| d.subsets.iter().any(|x| &x.name == s)),
    };
    port && subset && spec.name.starts_with("outbound|")
}
