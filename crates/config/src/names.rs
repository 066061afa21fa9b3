//! Host names and namespaces as Kubernetes and Istio resolve them.
//!
//! - A short host (no dot, not a wildcard) in a VirtualService, DestinationRule or weft
//!   policy names the Kubernetes service of that resource's namespace:
//!   `reviews` in namespace `default` is `reviews.default.svc.cluster.local`.
//!   (weft's one departure: when a ServiceEntry visible to the proxy declares the short
//!   host literally, the literal host is meant — Istio would match nothing there.)
//! - ServiceEntry hosts are taken literally.
//! - A request's `Host` may be any of a Kubernetes service's alternate names, as from a
//!   client in the proxy's namespace: `reviews` (same namespace only), `reviews.default`,
//!   `reviews.default.svc` and the FQDN.
//! - `exportTo` (`*`, `.`, `~`, namespaces) on ServiceEntry, VirtualService and
//!   DestinationRule decides which namespaces' proxies see a resource.

use crate::load::{Resource, Spec};

/// The Kubernetes cluster domain service names end with.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Istio's root namespace: its DestinationRules and Sidecars apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Whether `host` is a short name: no dot, no wildcard.
pub fn is_short(host: &str) -> bool {
    !host.is_empty() && !host.contains('.') && !host.contains('*')
}

/// `host` (lower case) as Istio resolves it in a resource of namespace `namespace`.
pub fn resolve(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if is_short(&host) {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    } else {
        host
    }
}

/// The parts of a Kubernetes service FQDN: `name.namespace.svc.cluster.local` →
/// (`name`, `namespace`).
pub fn service_parts(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix(".svc.")?;
    let (name, ns) = rest.split_once('.')?;
    (!name.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((name, ns))
}

/// The alternate names of a service FQDN a client in namespace `client` may use, shortest
/// last: `name.ns.svc`, `name.ns`, and `name` when the client is in `ns`.
pub fn alternates(fqdn: &str, client: &str) -> Vec<String> {
    let Some((name, ns)) = service_parts(fqdn) else { return Vec::new() };
    let mut out = vec![format!("{name}.{ns}.svc"), format!("{name}.{ns}")];
    if ns == client {
        out.push(name.to_owned());
    }
    out
}

/// A resource's namespace (`default` when it names none).
pub fn namespace_of(r: &Resource) -> &str {
    r.metadata.namespace.as_deref().unwrap_or("default")
}

/// A resource's `exportTo`, for the kinds that have one.
pub fn export_to(r: &Resource) -> &[String] {
    match &r.spec {
        Spec::ServiceEntry(se) => &se.export_to,
        Spec::VirtualService(vs) => &vs.export_to,
        Spec::DestinationRule(dr) => &dr.export_to,
        _ => &[],
    }
}

/// Whether a proxy in namespace `viewer` sees `r` under its `exportTo` (none: everyone).
pub fn exported_to(r: &Resource, viewer: &str) -> bool {
    let list = export_to(r);
    list.is_empty()
        || list.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => namespace_of(r) == viewer,
            "~" => false,
            ns => ns == viewer,
        })
}

/// Istio's rules for an `exportTo` list: `.`, `*`, `~` or namespace names, no duplicates,
/// `~` alone, `*` not beside namespaces. Each error is (index, message).
pub fn check_export_to(list: &[String]) -> Vec<(Option<usize>, String)> {
    let mut errs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in list.iter().enumerate() {
        if !seen.insert(e.as_str()) {
            errs.push((Some(i), format!("duplicate entry {}", crate::rules::shown(e))));
        } else if !matches!(e.as_str(), "." | "*" | "~") {
            if let Err(m) = crate::rules::dns1123_label(e) {
                errs.push((Some(i), format!("not \".\", \"*\", \"~\" or a namespace: {m}")));
            }
        }
    }
    if list.len() > 1 && list.iter().any(|e| e == "~") {
        errs.push((None, "\"~\" (exported to no namespace) may not be used with other values".into()));
    }
    if list.len() > 1 && list.iter().any(|e| e == "*") && list.iter().any(|e| e != "*") {
        errs.push((None, "\"*\" (every namespace) may not be used with other values".into()));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hosts_resolve_in_the_resource_namespace() {
        assert_eq!(resolve("Reviews", "default"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve("reviews.prod", "default"), "reviews.prod");
        assert_eq!(resolve("*", "default"), "*");
        assert_eq!(resolve("*.example.com", "x"), "*.example.com");
        assert_eq!(resolve("", "x"), "");
    }

    #[test]
    fn alternate_names_of_a_service() {
        let f = "reviews.default.svc.cluster.local";
        assert_eq!(alternates(f, "default"), ["reviews.default.svc", "reviews.default", "reviews"]);
        assert_eq!(alternates(f, "other"), ["reviews.default.svc", "reviews.default"]);
        assert!(alternates("www.googleapis.com", "default").is_empty());
        assert!(alternates("a.b.c.svc.cluster.local", "default").is_empty(), "a namespace has no dot");
        assert!(alternates(".svc.cluster.local", "default").is_empty());
        assert_eq!(service_parts(f), Some(("reviews", "default")));
    }

    #[test]
    fn export_to_rules() {
        let v = |l: &[&str]| check_export_to(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(v(&[]).is_empty());
        assert!(v(&["."]).is_empty());
        assert!(v(&[".", "prod"]).is_empty());
        assert_eq!(v(&["~", "."]).len(), 1);
        assert_eq!(v(&["*", "prod"]).len(), 1);
        assert_eq!(v(&["prod", "prod"]).len(), 1);
        assert_eq!(v(&["Bad_NS"]).len(), 1);
        assert_eq!(v(&["a\nb"]).len(), 1);
    }
}
