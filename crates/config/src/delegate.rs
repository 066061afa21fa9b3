//! Delegate VirtualServices (Istio's `http[].delegate`): a root VirtualService hands the
//! requests one of its routes matches to the `http` routes of another VirtualService, a
//! delegate (one without `hosts`), owned perhaps by another team. Each delegate route
//! stands in the root's place with its matches merged with the root route's: both must
//! hold (a delegate's `uri` must lie under the root's). A delegate that delegates again,
//! or a merge that can match nothing, is reported; one level only, as in Istio.

use crate::compile::Ctx;
use crate::istio::*;
use crate::load::Resource;

/// The routes a root route delegating to `d` stands for: (the delegate resource, its
/// route with merged matches, its field path, its index).
pub(crate) fn expand<'a>(
    root: &Resource,
    h: &HttpRoute,
    d: &Delegate,
    path: &str,
    ctx: &mut Ctx<'a>,
) -> Vec<(&'a Resource, HttpRoute, String, usize)> {
    if !h.route.is_empty() || h.redirect.is_some() || h.direct_response.is_some() {
        ctx.err(root, format!("{path}.delegate"), "a route with delegate has no route, redirect or directResponse of its own");
        return Vec::new();
    }
    if d.name.is_empty() {
        ctx.err(root, format!("{path}.delegate.name"), "missing field");
        return Vec::new();
    }
    let ns = d.namespace.clone().unwrap_or_else(|| crate::names::namespace_of(root).to_owned());
    let Some(&(dr, dvs)) = ctx.delegates.get(&(ns.clone(), d.name.clone())) else {
        ctx.warn(
            root,
            format!("{path}.delegate"),
            format!("no delegate VirtualService {ns}/{} (one without hosts) is seen: this route matches nothing", d.name),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, dh) in dvs.http.iter().enumerate() {
        let dpath = format!("spec.http[{k}]");
        if dh.delegate.is_some() {
            ctx.err(dr, format!("{dpath}.delegate"), "a delegate VirtualService may not delegate again");
            continue;
        }
        if h.matches.len().saturating_mul(dh.matches.len()) > MAX_MERGED {
            let n = h.matches.len() * dh.matches.len();
            ctx.err(
                dr,
                format!("{dpath}.match"),
                format!("{n} matches merged with {}'s route {path}: over {MAX_MERGED}", root.metadata.name),
            );
            continue;
        }
        let merged = match (h.matches.is_empty(), dh.matches.is_empty()) {
            (true, _) => dh.matches.clone(),
            (false, true) => h.matches.clone(),
            (false, false) => h.matches.iter().flat_map(|rm| dh.matches.iter().filter_map(|dm| merge(rm, dm))).collect(),
        };
        if merged.is_empty() && !(h.matches.is_empty() && dh.matches.is_empty()) {
            ctx.warn(
                dr,
                format!("{dpath}.match"),
                format!("no match of this route lies within {}'s route {path}: it is never used", root.metadata.name),
            );
            continue;
        }
        out.push((dr, inherit(h, HttpRoute { matches: merged, ..dh.clone() }), dpath, k));
    }
    out
}

/// Istio's rules for a delegate VirtualService (it has no hosts): no gateways, no
/// `tcp` or `tls` routes. Its routes are checked where a root uses them.
pub(crate) fn check_delegate(r: &Resource, vs: &VirtualService, ctx: &mut Ctx<'_>) {
    if !vs.gateways.is_empty() {
        ctx.err(r, "spec.gateways", "a delegate VirtualService (no hosts) has no gateways: its root's apply");
    }
    if !vs.tcp.is_empty() || !vs.tls.is_empty() {
        ctx.err(r, "spec", "a delegate VirtualService (no hosts) has only http routes");
    }
    if vs.http.is_empty() {
        ctx.err(r, "spec.hosts", "at least one host is required (or http routes, for a delegate)");
    }
}

/// The most routes one VirtualService may have once its delegates are expanded.
pub(crate) const MAX_ROUTES: usize = 4096;

/// The most matches one delegate route may stand for (root matches × its own).
const MAX_MERGED: usize = 256;

/// What a delegate route takes from its root route when it sets none of its own
/// (Istio's merge): rewrite, timeout, retries, fault, mirror, CORS and header operations
/// — a root owner's header clean-up, say, is not bypassed by delegating.
fn inherit(root: &HttpRoute, mut d: HttpRoute) -> HttpRoute {
    d.rewrite = d.rewrite.or_else(|| root.rewrite.clone());
    d.timeout = d.timeout.or(root.timeout);
    d.retries = d.retries.or_else(|| root.retries.clone());
    d.fault = d.fault.or_else(|| root.fault.clone());
    if d.mirror.is_none() {
        d.mirror = root.mirror.clone();
        d.mirror_percentage = root.mirror_percentage.clone();
        d.mirror_percent = root.mirror_percent;
    }
    d.cors_policy = d.cors_policy.or_else(|| root.cors_policy.clone());
    d.headers = d.headers.or_else(|| root.headers.clone());
    d
}

/// A root match and a delegate match, both required; `None` when they conflict. The
/// root's `gateways` (and name) go with it: a root match for `mesh` only stays mesh-only.
fn merge(root: &HttpMatchRequest, del: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let mut m = del.clone();
    if !root.gateways.is_empty() {
        if !del.gateways.is_empty() && !del.gateways.iter().all(|g| root.gateways.contains(g)) {
            return None;
        }
        m.gateways = root.gateways.clone();
    }
    if m.name.is_none() {
        m.name = root.name.clone();
    }
    m.source_namespace = match (&root.source_namespace, &del.source_namespace) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    m.uri = match (&root.uri, &del.uri) {
        (None, u) | (u, None) => u.clone(),
        (Some(r), Some(d)) => Some(uri_within(r, d)?),
    };
    m.scheme = same(&root.scheme, &del.scheme)?;
    m.method = same(&root.method, &del.method)?;
    m.authority = same(&root.authority, &del.authority)?;
    m.port = match (root.port, del.port) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.or(b),
    };
    for (field, into) in
        [(&root.headers, &mut m.headers), (&root.query_params, &mut m.query_params), (&root.without_headers, &mut m.without_headers)]
    {
        for (k, v) in field {
            match into.get(k) {
                Some(existing) if existing != v => return None,
                _ => _ = into.insert(k.clone(), v.clone()),
            }
        }
    }
    for (k, v) in &root.source_labels {
        match m.source_labels.get(k) {
            Some(existing) if existing != v => return None,
            _ => _ = m.source_labels.insert(k.clone(), v.clone()),
        }
    }
    m.ignore_uri_case |= root.ignore_uri_case;
    Some(m)
}

fn same(a: &Option<StringMatch>, b: &Option<StringMatch>) -> Option<Option<StringMatch>> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => None,
        (x, y) => Some(x.clone().or_else(|| y.clone())),
    }
}

/// The delegate's uri match when it lies within the root's (a prefix under the root's
/// prefix, an exact path under it, or the same match); `None` otherwise.
fn uri_within(root: &StringMatch, del: &StringMatch) -> Option<StringMatch> {
    if root == del {
        return Some(del.clone());
    }
    let under = |p: &str| root.prefix.as_deref().is_some_and(|r| p.starts_with(r));
    match (&del.prefix, &del.exact) {
        (Some(p), None) if under(p) => Some(del.clone()),
        (None, Some(e)) if under(e) || root.exact.as_deref() == Some(e) => Some(del.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(kind: &str, v: &str) -> HttpMatchRequest {
        let s = match kind {
            "prefix" => StringMatch { prefix: Some(v.into()), ..Default::default() },
            "exact" => StringMatch { exact: Some(v.into()), ..Default::default() },
            _ => StringMatch { regex: Some(v.into()), ..Default::default() },
        };
        HttpMatchRequest { uri: Some(s), ..Default::default() }
    }

    #[test]
    fn a_delegate_match_must_lie_within_the_roots() {
        assert!(merge(&uri("prefix", "/api"), &uri("prefix", "/api/v1")).is_some());
        assert!(merge(&uri("prefix", "/api"), &uri("exact", "/api/x")).is_some());
        assert!(merge(&uri("prefix", "/api"), &uri("prefix", "/web")).is_none());
        assert!(merge(&uri("exact", "/a"), &uri("prefix", "/a")).is_none());
        assert!(merge(&uri("regex", "/a.*"), &uri("prefix", "/a")).is_none());
        let mut root = HttpMatchRequest::default();
        root.headers.insert("x".into(), StringMatch { exact: Some("1".into()), ..Default::default() });
        let mut del = uri("prefix", "/p");
        let m = merge(&root, &del).unwrap();
        assert!(m.headers.contains_key("x") && m.uri.is_some(), "both required");
        del.headers.insert("x".into(), StringMatch { exact: Some("2".into()), ..Default::default() });
        assert!(merge(&root, &del).is_none(), "x cannot be 1 and 2");
        del.port = Some(80);
        root.headers.clear();
        root.port = Some(81);
        assert!(merge(&root, &del).is_none());
    }
}
