//! Updates in place: a delta from the control plane that changed only ServiceEntries'
//! endpoints (a registration, a deregistration, a TTL expiry) rebuilds the clusters made
//! from those entries and nothing else; one that changed VirtualServices (with or
//! without such endpoints) recompiles only their hosts' virtual hosts and makes only
//! their chains ([`weft_config::routes_in_place`] says which changes qualify). The new [`Runtime`] shares the running one's
//! snapshot, filter chains, live state and every other cluster (`Arc`s), so other
//! services' endpoints keep their load, EWMA, ejections, health and pooled connections
//! untouched, and within a rebuilt cluster the endpoints that stayed keep theirs (as a
//! whole reload does, [`Cluster::build`]). Swapped in whole, as any reload; a bad entry
//! changes nothing (the follower NACKs it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_config::routes_in_place::{update_routes, RoutesOutcome, RoutesUpdate, VsEdit};
use weft_config::{ClusterChoice, Diagnostics, Resource, Snapshot};

use crate::cluster::Cluster;
use crate::filters::Chain;
use crate::state::{Runtime, Shared};

/// What an update in place came to.
pub enum Applied {
    /// Swapped in; its warnings.
    Installed(Diagnostics),
    /// A changed resource has errors: the running runtime stays.
    Refused(Diagnostics),
    /// The change needs the whole compile, for this reason; nothing was swapped.
    Whole(&'static str),
}

impl Shared {
    /// Installs `endpoints` (ServiceEntries that differ from the installed ones only in
    /// their endpoints, [`weft_config::endpoints::endpoints_only`]) and `routes`
    /// (VirtualServices added, changed or removed, [`weft_config::routes_in_place`]) in
    /// place; on an error keeps the running runtime and returns every problem.
    pub fn update_in_place(&self, endpoints: &[Resource], routes: &[VsEdit]) -> Applied {
        let c = &self.metrics.counters;
        let prev = self.current.load();
        let mut diags = Diagnostics::default();
        let touched = match endpoints {
            [] => Vec::new(),
            _ => weft_config::endpoints::update_in_place(&prev.specs, endpoints, &mut diags),
        };
        let spliced = match routes {
            [] => None,
            _ => match update_routes(&prev.snap, &prev.specs, &prev.resources, routes, &self.view, &self.role, &mut diags) {
                RoutesOutcome::Updated(u) => Some(*u),
                RoutesOutcome::Refused => None,
                RoutesOutcome::Whole(why) => return Applied::Whole(why),
            },
        };
        if !diags.is_ok() {
            c.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Applied::Refused(diags);
        }
        let rt = self.patched(&prev, touched, spliced, endpoints, routes);
        c.config_revision.store(rt.revision, Ordering::Relaxed);
        self.current.store(Arc::new(rt));
        c.reloads_ok.fetch_add(1, Ordering::Relaxed);
        c.control_plane_in_place.fetch_add(1, Ordering::Relaxed);
        if !routes.is_empty() {
            c.control_plane_routes_in_place.fetch_add(1, Ordering::Relaxed);
        }
        Applied::Installed(diags)
    }

    /// `prev` with the clusters at the indexes `touched` names rebuilt from their new
    /// specs, the virtual hosts `spliced` in, and the resources changed replacing theirs
    /// (by source).
    fn patched(
        &self,
        prev: &Runtime,
        touched: Vec<(usize, weft_config::ClusterSpec)>,
        spliced: Option<RoutesUpdate>,
        endpoints: &[Resource],
        routes: &[VsEdit],
    ) -> Runtime {
        let mut specs = prev.specs.clone();
        let mut clusters = prev.clusters.clone();
        let indexes: HashSet<usize> = touched.iter().map(|(i, _)| *i).collect();
        for (i, spec) in touched {
            let spec = Arc::new(spec);
            clusters[i] = Arc::new(self.rebuilt(&prev.clusters[i], &spec));
            specs[i] = spec;
        }
        let (snap, from) = match spliced {
            Some(u) => (Arc::new(u.snap), Some(u.from)),
            None => (prev.snap.clone(), None),
        };
        // A mirror filter holds its cluster: chains that mirror to a rebuilt one are made
        // again (their live state carried over as on any reload); the rest are shared.
        let (chains, live) = if mirrors_any(&snap, &indexes) {
            let (chains, live) = crate::live::build(&snap, &clusters, Some(&prev.live), self.metrics);
            (Arc::new(chains), Arc::new(live))
        } else if let Some(from) = from {
            (Arc::new(self.spliced_chains(prev, &snap, &from, &clusters)), prev.live.clone())
        } else {
            (prev.chains.clone(), prev.live.clone())
        };
        let resources = patched_resources(&prev.resources, endpoints, routes);
        // (The services, and so their addresses, are the same.)
        Runtime { snap, specs, clusters, chains, live, resources, revision: prev.revision + 1, vips: prev.vips.clone() }
    }

    /// `old` rebuilt from `spec`, the endpoints that stay keeping their state.
    fn rebuilt(&self, old: &Cluster, spec: &Arc<weft_config::ClusterSpec>) -> Cluster {
        let kept: HashMap<(String, String), Arc<crate::cluster::Endpoint>> =
            old.endpoints.iter().map(|e| ((old.spec.name.clone(), e.id.clone()), e.clone())).collect();
        let run = match &self.mesh_tls {
            Some(m) => Arc::new(m.cluster(spec)),
            None => spec.clone(),
        };
        Cluster::build(&run, &kept, Some(&old.breaker), self.workers, self.metrics, &self.node, &self.transport, self.mesh_tls.as_ref())
    }

    /// The chains of `snap`'s virtual hosts: those kept from `prev` shared, the new made.
    fn spliced_chains(&self, prev: &Runtime, snap: &Snapshot, from: &[Option<usize>], clusters: &[Arc<Cluster>]) -> Vec<Vec<Arc<Chain>>> {
        from.iter()
            .enumerate()
            .map(|(vi, old)| match old {
                Some(o) => prev.chains[*o].clone(),
                None => crate::live::new_vhost_chains(snap, vi, clusters, self.metrics),
            })
            .collect()
    }
}

/// `held` with the changed resources replacing theirs (by source), the VirtualServices
/// removed dropped and those added appended.
fn patched_resources(held: &[Arc<Resource>], endpoints: &[Resource], routes: &[VsEdit]) -> Vec<Arc<Resource>> {
    let mut replaced: HashMap<&weft_config::Source, Option<&Resource>> = endpoints.iter().map(|r| (&r.source, Some(r))).collect();
    for e in routes {
        if let Some(old) = &e.old {
            replaced.insert(&old.source, e.new.as_ref());
        }
    }
    let mut out: Vec<Arc<Resource>> = held
        .iter()
        .filter_map(|slot| match replaced.get(&slot.source) {
            Some(Some(r)) => Some(Arc::new(Resource::clone(r))),
            Some(None) => None,
            None => Some(slot.clone()),
        })
        .collect();
    out.extend(routes.iter().filter(|e| e.old.is_none()).filter_map(|e| e.new.clone()).map(Arc::new));
    out
}

/// Whether a route of `snap` mirrors to one of the clusters at `indexes`.
fn mirrors_any(snap: &Snapshot, indexes: &HashSet<usize>) -> bool {
    let names = |c: &ClusterChoice| indexes.contains(&c.default) || c.by_port.iter().any(|(_, i)| indexes.contains(i));
    snap.vhosts.iter().flat_map(|vh| &vh.routes).any(|r| r.mirror.as_ref().is_some_and(|(c, _)| names(c)))
}
