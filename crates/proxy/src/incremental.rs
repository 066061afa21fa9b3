//! Updates in place: a delta from the control plane that changed only ServiceEntries'
//! endpoints (a registration, a deregistration, a TTL expiry) rebuilds the clusters made
//! from those entries and nothing else. The new [`Runtime`] shares the running one's
//! snapshot, filter chains, live state and every other cluster (`Arc`s), so other
//! services' endpoints keep their load, EWMA, ejections, health and pooled connections
//! untouched, and within a rebuilt cluster the endpoints that stayed keep theirs (as a
//! whole reload does, [`Cluster::build`]). Swapped in whole, as any reload; a bad entry
//! changes nothing (the follower NACKs it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_config::{ClusterChoice, Diagnostics, Resource, Snapshot};

use crate::cluster::Cluster;
use crate::state::{Runtime, Shared};

impl Shared {
    /// Installs `changed` (ServiceEntries that differ from the installed ones only in
    /// their endpoints, [`weft_config::endpoints::endpoints_only`]) in place; on an error
    /// keeps the running runtime and returns every problem.
    pub fn update_endpoints(&self, changed: &[Resource]) -> Result<Diagnostics, Diagnostics> {
        let c = &self.metrics.counters;
        let prev = self.current.load();
        let mut diags = Diagnostics::default();
        let touched = weft_config::endpoints::update_in_place(&prev.specs, changed, &mut diags);
        if !diags.is_ok() {
            c.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(diags);
        }
        let rt = self.patched(&prev, touched, changed);
        c.config_revision.store(rt.revision, Ordering::Relaxed);
        self.current.store(Arc::new(rt));
        c.reloads_ok.fetch_add(1, Ordering::Relaxed);
        c.control_plane_in_place.fetch_add(1, Ordering::Relaxed);
        Ok(diags)
    }

    /// `prev` with the clusters at the indexes `touched` names rebuilt from their new
    /// specs, and the resources `changed` replacing theirs (by source).
    fn patched(&self, prev: &Runtime, touched: Vec<(usize, weft_config::ClusterSpec)>, changed: &[Resource]) -> Runtime {
        let mut specs = prev.specs.clone();
        let mut clusters = prev.clusters.clone();
        let indexes: HashSet<usize> = touched.iter().map(|(i, _)| *i).collect();
        for (i, spec) in touched {
            let old = &prev.clusters[i];
            let kept: HashMap<(String, String), Arc<crate::cluster::Endpoint>> =
                old.endpoints.iter().map(|e| ((old.spec.name.clone(), e.id.clone()), e.clone())).collect();
            let spec = Arc::new(spec);
            let run = match &self.mesh_tls {
                Some(m) => Arc::new(m.cluster(&spec)),
                None => spec.clone(),
            };
            let cluster = Cluster::build(
                &run,
                &kept,
                Some(&old.breaker),
                self.workers,
                self.metrics,
                &self.node,
                &self.transport,
                self.mesh_tls.as_ref(),
            );
            clusters[i] = Arc::new(cluster);
            specs[i] = spec;
        }
        // A mirror filter holds its cluster: chains that mirror to a rebuilt one are made
        // again (their live state carried over as on any reload); the rest are shared.
        let (chains, live) = if mirrors_any(&prev.snap, &indexes) {
            let (chains, live) = crate::live::build(&prev.snap, &clusters, Some(&prev.live), self.metrics);
            (Arc::new(chains), Arc::new(live))
        } else {
            (prev.chains.clone(), prev.live.clone())
        };
        let mut resources = prev.resources.clone();
        let by_source: HashMap<&weft_config::Source, &Resource> = changed.iter().map(|r| (&r.source, r)).collect();
        for slot in &mut resources {
            if let Some(r) = by_source.get(&slot.source) {
                *slot = Arc::new(Resource::clone(r));
            }
        }
        // (Endpoints alone changed: the services, and so their addresses, are the same.)
        Runtime { snap: prev.snap.clone(), specs, clusters, chains, live, resources, revision: prev.revision + 1, vips: prev.vips.clone() }
    }
}

/// Whether a route of `snap` mirrors to one of the clusters at `indexes`.
fn mirrors_any(snap: &Snapshot, indexes: &HashSet<usize>) -> bool {
    let names = |c: &ClusterChoice| indexes.contains(&c.default) || c.by_port.iter().any(|(_, i)| indexes.contains(i));
    snap.vhosts.iter().flat_map(|vh| &vh.routes).any(|r| r.mirror.as_ref().is_some_and(|(c, _)| names(c)))
}
