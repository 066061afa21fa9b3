//! Which workloads a policy applies to: a policy in the root namespace without a
//! selector applies to every workload of the mesh; elsewhere to every workload of its
//! namespace; with a `selector` to the workloads of its namespace (of the mesh, in the
//! root namespace) whose labels include the selector's; with `targetRefs` to the named
//! Service's workloads (`kind: Service`, by the workload's service name).

use std::collections::BTreeMap;

/// Istio's root namespace, unless the mesh is configured otherwise.
pub const ROOT_NAMESPACE: &str = "istio-system";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub namespace: String,
    pub selector: Option<BTreeMap<String, String>>,
    /// Services named by `targetRefs` (`kind: Service`, in the policy's namespace).
    pub services: Vec<String>,
}

/// The workload a proxy stands beside.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl Scope {
    pub fn applies_to(&self, w: &Workload<'_>) -> bool {
        let root = self.namespace == ROOT_NAMESPACE;
        if !root && self.namespace != w.namespace {
            return false;
        }
        if !self.services.is_empty() {
            return self.namespace == w.namespace && self.services.iter().any(|s| s == w.service);
        }
        match &self.selector {
            Some(sel) => sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn root_namespace_namespace_selector_and_target_refs() {
        let l = labels(&[("app", "httpbin"), ("version", "v1")]);
        let w = Workload { namespace: "foo", service: "httpbin", labels: &l };
        let s = |ns: &str, sel: Option<&[(&str, &str)]>, svcs: &[&str]| Scope {
            namespace: ns.into(),
            selector: sel.map(labels),
            services: svcs.iter().map(|s| s.to_string()).collect(),
        };
        assert!(s(ROOT_NAMESPACE, None, &[]).applies_to(&w));
        assert!(s("foo", None, &[]).applies_to(&w));
        assert!(!s("bar", None, &[]).applies_to(&w));
        assert!(s("foo", Some(&[("app", "httpbin")]), &[]).applies_to(&w));
        assert!(!s("foo", Some(&[("app", "sleep")]), &[]).applies_to(&w));
        assert!(s(ROOT_NAMESPACE, Some(&[("version", "v1")]), &[]).applies_to(&w));
        assert!(s("foo", None, &["httpbin"]).applies_to(&w));
        assert!(!s("foo", None, &["sleep"]).applies_to(&w));
        assert!(!s("bar", None, &["httpbin"]).applies_to(&w));
    }
}
