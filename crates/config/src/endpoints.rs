//! A cluster's endpoints from its ServiceEntry, and updates in place: a ServiceEntry
//! whose endpoints (and `subjectAltNames`) alone changed gives new specs for the
//! clusters made from it — the same endpoints a whole compile would give them — while
//! nothing else in the snapshot can have changed (no other field of any resource did).
//!
//! Pure: the proxy decides whether a delta qualifies ([`endpoints_only`]) and swaps the
//! clusters in; this only says what they become, or why the entry is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::compile::Ctx;
use crate::error::{Diagnostics, Source};
use crate::gateway::Binding;
use crate::istio::{Resolution, ServiceEntry, ServicePort, WorkloadEntry};
use crate::load::{Resource, Spec};
use crate::snapshot::{ClusterSpec, EndpointSpec};

/// Where a cluster's endpoints come from: a ServiceEntry's `endpoints` (the resource's
/// source names it), filtered by the subset's labels (empty: all of them).
#[derive(Debug, PartialEq)]
pub struct Origin {
    pub source: Source,
    pub subset_labels: BTreeMap<String, String>,
}

/// The endpoints of `se`'s port `sp` for cluster host `host`: those `selected` (a
/// `workloadSelector`'s WorkloadEntries) or the entry's own, each holding the subset's
/// labels; a DNS entry without endpoints resolves its host.
pub(crate) fn select(
    se: &ServiceEntry,
    sp: &ServicePort,
    host: &str,
    subset_labels: Option<&BTreeMap<String, String>>,
    selected: Option<Vec<&WorkloadEntry>>,
) -> Vec<EndpointSpec> {
    let mut endpoints = Vec::new();
    if se.endpoints.is_empty() && matches!(se.resolution(), Resolution::Dns | Resolution::DnsRoundRobin) {
        let p = sp.target_port.unwrap_or(sp.number) as u16;
        endpoints.push(EndpointSpec { address: host.to_owned(), port: p, weight: 1, labels: BTreeMap::new(), locality: None });
    }
    for ep in selected.unwrap_or_else(|| se.endpoints.iter().collect()) {
        if let Some(labels) = subset_labels {
            if !labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)) {
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
    endpoints
}

/// Whether `new` differs from `old` in nothing but the ServiceEntry's `endpoints` and
/// `subjectAltNames` (same source, kind, version, metadata and every other field): the
/// change an endpoint registration makes, which [`update_in_place`] can apply.
pub fn endpoints_only(old: &Resource, new: &Resource) -> bool {
    let (Spec::ServiceEntry(a), Spec::ServiceEntry(b)) = (&old.spec, &new.spec) else { return false };
    // (Every field named, so that a field added to ServiceEntry must be placed here.)
    let ServiceEntry {
        hosts,
        addresses,
        ports,
        location,
        resolution_written,
        endpoints: _,
        workload_selector,
        export_to,
        subject_alt_names: _,
    } = a;
    old.source == new.source
        && old.kind == new.kind
        && old.api_version == new.api_version
        && old.metadata == new.metadata
        && *hosts == b.hosts
        && *addresses == b.addresses
        && *ports == b.ports
        && *location == b.location
        && *resolution_written == b.resolution_written
        && workload_selector.is_none()
        && b.workload_selector.is_none()
        && *export_to == b.export_to
}

/// The new specs of the clusters in `specs` whose endpoints come from one of `changed`
/// (by source), as `(index, spec)`; the entries' problems (Istio's checks of a
/// ServiceEntry) go to `diags`, and with an error nothing may be installed. Each of
/// `changed` must have passed [`endpoints_only`] against the resource the specs were
/// compiled from. O(specs + the clusters changed).
pub fn update_in_place(specs: &[Arc<ClusterSpec>], changed: &[Resource], diags: &mut Diagnostics) -> Vec<(usize, ClusterSpec)> {
    let mut by_source: HashMap<&Source, Vec<usize>> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        if let Some(o) = &spec.origin {
            by_source.entry(&o.source).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for new in changed {
        let Spec::ServiceEntry(se) = &new.spec else { continue };
        check(new, se, diags);
        for &i in by_source.get(&new.source).into_iter().flatten() {
            let Some(origin) = &specs[i].origin else { continue };
            let mut spec = ClusterSpec::clone(&specs[i]);
            spec.endpoints = match se.ports.iter().find(|p| p.number as u16 == spec.port) {
                Some(sp) => select(se, sp, &spec.service, Some(&origin.subset_labels), None),
                None => Vec::new(),
            };
            spec.subject_alt_names = se.subject_alt_names.clone();
            out.push((i, spec));
        }
    }
    out
}

/// Istio's checks of one ServiceEntry, alone (the rest of the mesh did not change).
fn check(r: &Resource, se: &ServiceEntry, diags: &mut Diagnostics) {
    let mut ctx = Ctx {
        services: HashMap::new(),
        rules: HashMap::new(),
        clusters: Vec::new(),
        cluster_index: HashMap::new(),
        diags,
        viewer: String::new(),
        workloads: Vec::new(),
        delegates: HashMap::new(),
        binding: Binding::Sidecar,
        source_labels: None,
    };
    crate::service_entry::check_service_entry(r, se, &mut ctx);
}
