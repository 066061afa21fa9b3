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
        endpoints.push(EndpointSpec { address: host.to_owned(), port: p, weight: 1, labels: Default::default(), locality: None });
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
/// (by source) and differ, as `(index, spec)`; the entries' problems (Istio's checks of a
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
            let endpoints = match se.ports.iter().find(|p| p.number as u16 == specs[i].port) {
                Some(sp) => select(se, sp, &specs[i].service, Some(&origin.subset_labels), None),
                None => Vec::new(),
            };
            // (A subset whose endpoints did not change keeps its cluster.)
            if endpoints == specs[i].endpoints && se.subject_alt_names == specs[i].subject_alt_names {
                continue;
            }
            let mut spec = ClusterSpec::clone(&specs[i]);
            spec.endpoints = endpoints;
            spec.subject_alt_names = se.subject_alt_names.clone();
            out.push((i, spec));
        }
    }
    out
}

/// Istio's checks of one ServiceEntry, alone (the rest of the mesh did not change).
fn check(r: &Resource, se: &ServiceEntry, diags: &mut Diagnostics) {
    let mut ctx = Ctx::new(diags, String::new(), Binding::Sidecar, None);
    crate::service_entry::check_service_entry(r, se, &mut ctx);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{endpoints_only, update_in_place};
    use crate::error::Diagnostics;

    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: web\n  subsets: [{name: v2, labels: {version: v2}}]\n";

    fn se(endpoints: &str, extra: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 81, name: admin, targetPort: 9091}}]\n  endpoints: [{endpoints}]\n{extra}")
    }

    /// (the ServiceEntry, its clusters' specs) compiled with the rule.
    fn build(se: &str) -> (crate::Resource, Vec<Arc<crate::ClusterSpec>>) {
        let (r, snap, d) = crate::build_str("t", &format!("{se}---\n{DR}"));
        assert!(d.is_ok(), "{:?}", d.errors);
        (r[0].clone(), snap.clusters.into_iter().map(Arc::new).collect())
    }

    const E1: &str = "{address: 10.0.0.1, ports: {http: 8080}, labels: {version: v1}}";
    const E2: &str = "{address: 10.0.0.2, labels: {version: v2}, weight: 3}";

    #[test]
    fn only_endpoints_and_subject_alt_names_may_differ() {
        let (old, _) = build(&se(E1, ""));
        let same = |text: &str| endpoints_only(&old, &build(text).0);
        assert!(same(&se(E1, "")));
        assert!(same(&se(&format!("{E1}, {E2}"), "")));
        assert!(same(&se("", "  subjectAltNames: [spiffe://cluster.local/ns/default/sa/web]\n")));
        assert!(!same(&se(E1, "  exportTo: [.]\n")));
        assert!(!same(&se(E1, "").replace("STATIC", "DNS")));
        assert!(!same(&se(E1, "").replace("number: 81", "number: 82")));
        assert!(!same(&se(E1, "").replace("hosts: [web]", "hosts: [web, www]")));
        assert!(!same(&se(E1, "").replace("{name: web}", "{name: web, labels: {a: b}}")));
        // Another document (source) is another resource.
        let (r, _, _) = crate::build_str("u", &se(E1, ""));
        assert!(!endpoints_only(&old, &r[0]));
    }

    #[test]
    fn clusters_updated_in_place_equal_a_whole_compile() {
        let (_, specs) = build(&se(E1, ""));
        let text = se(&format!("{E1}, {E2}"), "  subjectAltNames: [spiffe://cluster.local/ns/default/sa/web]\n");
        let (new, whole) = build(&text);
        let mut d = Diagnostics::default();
        let updated = update_in_place(&specs, std::slice::from_ref(&new), &mut d);
        assert!(d.is_ok(), "{:?}", d.errors);
        // Every port and the subset: outbound|80||web, |80|v2|, |81||, |81|v2|.
        assert_eq!(updated.len(), 4);
        let names: Vec<&str> = updated.iter().map(|(_, s)| s.name.as_str()).collect();
        assert_eq!(names, ["outbound|80||web", "outbound|80|v2|web", "outbound|81||web", "outbound|81|v2|web"]);
        for (i, spec) in updated {
            let json = |s: &crate::ClusterSpec| serde_json::to_value(s).unwrap();
            assert_eq!(json(&spec), json(&whole[i]), "{}", spec.name);
        }
        // A bad endpoint is refused with its field path; another entry touches nothing.
        let (bad, _) = build(&se(E1, ""));
        let mut bad = bad;
        if let crate::Spec::ServiceEntry(e) = &mut bad.spec {
            e.endpoints[0].address = "no-ip".into();
        }
        let mut d = Diagnostics::default();
        update_in_place(&specs, &[bad], &mut d);
        assert!(d.errors.iter().any(|e| e.to_string().contains("spec.endpoints[0].address")), "{:?}", d.errors);
        let (other, _, _) = crate::build_str("u", &se(E2, ""));
        assert!(update_in_place(&specs, &other, &mut Diagnostics::default()).is_empty());
    }
}
