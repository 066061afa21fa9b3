//! PeerAuthentication compiled: the policies, and which mTLS mode a workload's inbound
//! port runs in, by Istio's precedence — a policy selecting the workload (in its
//! namespace), else its namespace's, else the mesh's (in the root namespace); `UNSET`
//! inherits from the next wider scope; a port-level mode overrides the policy's own for
//! that port; with nothing said, `PERMISSIVE` (Istio's default).

use std::collections::BTreeMap;

use crate::compile::Ctx;
use crate::istio::{MtlsMode, PeerAuthentication};
use crate::load::Resource;

/// Istio's root namespace: a policy there without a selector applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// One PeerAuthentication, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthPolicy {
    pub name: String,
    pub namespace: String,
    /// None: the whole namespace (or mesh).
    pub selector: Option<BTreeMap<String, String>>,
    pub mode: MtlsMode,
    pub ports: Vec<(u16, MtlsMode)>,
}

impl PeerAuthPolicy {
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// Checks one PeerAuthentication as Istio's validation does; None (with errors) when invalid.
pub(crate) fn compile(r: &Resource, pa: &PeerAuthentication, ctx: &mut Ctx) -> Option<PeerAuthPolicy> {
    let mut ok = true;
    let selector = match &pa.selector {
        // (`selector: {}` is valid in Istio: a workload-level policy every workload of
        // the namespace matches.)
        Some(s) => {
            for (k, e) in crate::rules::labels(&s.match_labels) {
                ctx.err(r, format!("spec.selector.matchLabels[{k}]"), e);
                ok = false;
            }
            Some(s.match_labels.clone())
        }
        None => None,
    };
    let port_level = pa.port_level_mtls.as_ref();
    if port_level.is_some_and(|p| p.is_empty()) {
        ctx.err(r, "spec.portLevelMtls", "at least one port (or no portLevelMtls)");
        ok = false;
    }
    if port_level.is_some_and(|p| !p.is_empty()) && selector.is_none() {
        ctx.err(r, "spec.portLevelMtls", "port-level mTLS needs a workload selector (Istio's rule)");
        ok = false;
    }
    let mut ports = Vec::new();
    for (key, m) in port_level.into_iter().flatten() {
        match key.parse::<u16>() {
            Ok(p) if p > 0 => ports.push((p, m.mode)),
            _ => {
                ctx.err(r, format!("spec.portLevelMtls[{}]", crate::rules::shown(key)), "a port is 1 to 65535");
                ok = false;
            }
        }
    }
    let namespace = r.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mode = pa.mtls.as_ref().map(|m| m.mode).unwrap_or_default();
    ok.then(|| PeerAuthPolicy { name: r.metadata.name.clone(), namespace, selector, mode, ports })
}

/// The mode of `port` of a workload in `namespace` with `labels`, under `policies`.
pub fn mode_for(policies: &[PeerAuthPolicy], namespace: &str, labels: &BTreeMap<String, String>, port: u16) -> MtlsMode {
    // (Several at one scope: the first by name, so that every proxy picks the same; Istio
    // picks the oldest.)
    let pick = |f: &dyn Fn(&PeerAuthPolicy) -> bool| policies.iter().filter(|p| f(p)).min_by(|a, b| a.name.cmp(&b.name));
    let mesh = pick(&|p| p.namespace == ROOT_NAMESPACE && p.selector.is_none());
    let ns = pick(&|p| p.namespace == namespace && p.selector.is_none());
    let workload = pick(&|p| p.namespace == namespace && p.selects(labels));
    let mut mode = MtlsMode::Permissive;
    for m in [mesh.map(|p| p.mode), ns.map(|p| p.mode), workload.map(|p| p.mode)].into_iter().flatten() {
        if m != MtlsMode::Unset {
            mode = m;
        }
    }
    if let Some((_, m)) = workload.and_then(|w| w.ports.iter().find(|(p, _)| *p == port)) {
        if *m != MtlsMode::Unset {
            mode = *m;
        }
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, ns: &str, selector: Option<&[(&str, &str)]>, mode: MtlsMode, ports: &[(u16, MtlsMode)]) -> PeerAuthPolicy {
        PeerAuthPolicy {
            name: name.into(),
            namespace: ns.into(),
            selector: selector.map(|s| s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            mode,
            ports: ports.to_vec(),
        }
    }

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_narrowest_scope_that_says_something_wins() {
        use MtlsMode::*;
        let reviews = labels(&[("app", "reviews")]);
        assert_eq!(mode_for(&[], "default", &reviews, 9080), Permissive, "Istio's default");
        let mesh = policy("default", ROOT_NAMESPACE, None, Strict, &[]);
        assert_eq!(mode_for(std::slice::from_ref(&mesh), "default", &reviews, 9080), Strict);
        let ns = policy("ns", "default", None, Disable, &[]);
        assert_eq!(mode_for(&[mesh.clone(), ns.clone()], "default", &reviews, 9080), Disable);
        assert_eq!(mode_for(&[mesh.clone(), ns.clone()], "other", &reviews, 9080), Strict, "another namespace's policy does not apply");
        let unset = policy("ns", "default", None, Unset, &[]);
        assert_eq!(mode_for(&[mesh.clone(), unset], "default", &reviews, 9080), Strict, "UNSET inherits");
        let wl = policy("wl", "default", Some(&[("app", "reviews")]), Permissive, &[(9080, Disable), (9090, Unset)]);
        let all = [mesh.clone(), ns.clone(), wl];
        assert_eq!(mode_for(&all, "default", &reviews, 8000), Permissive);
        assert_eq!(mode_for(&all, "default", &reviews, 9080), Disable, "port level");
        assert_eq!(mode_for(&all, "default", &reviews, 9090), Permissive, "an UNSET port keeps the policy's mode");
        assert_eq!(mode_for(&all, "default", &labels(&[("app", "ratings")]), 9080), Disable, "a selector that does not match");
        // A selector in the root namespace does not make a mesh-wide policy.
        let root_wl = policy("x", ROOT_NAMESPACE, Some(&[("app", "reviews")]), Disable, &[]);
        assert_eq!(mode_for(&[mesh, root_wl], "default", &reviews, 9080), Strict);
    }
}
