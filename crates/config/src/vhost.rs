//! VirtualService → compiled routes.

use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;

use crate::compile::Ctx;
use crate::istio::*;
use crate::load::Resource;
use crate::matcher::{RequestMatch, StrMatch};
use crate::snapshot::*;

pub(crate) fn compile_vs(r: &Resource, vs: &VirtualService, ctx: &mut Ctx<'_>) -> Option<VirtualHost> {
    let errors_before = ctx.diags.errors.len();
    if vs.hosts.is_empty() {
        ctx.err(r, "spec.hosts", "at least one host is required");
    }
    check_hosts(r, vs, ctx);
    let mut routes = Vec::with_capacity(vs.http.len());
    for (i, h) in vs.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        if let Some(d) = &h.delegate {
            let expanded = crate::delegate::expand(r, h, d, &path, ctx);
            if routes.len() + expanded.len() > crate::delegate::MAX_ROUTES {
                ctx.err(r, format!("{path}.delegate"), format!("the delegates make over {} routes", crate::delegate::MAX_ROUTES));
                continue;
            }
            for (dr, dh, dpath, k) in expanded {
                if let Some(rt) = compile_route(dr, &dh, &dpath, k, ctx) {
                    routes.push(std::sync::Arc::new(rt));
                }
            }
        } else if let Some(rt) = compile_route(r, h, &path, i, ctx) {
            routes.push(std::sync::Arc::new(rt));
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        ctx.warn(r, "spec.http", "no http routes: requests for these hosts get 404");
    }
    (ctx.diags.errors.len() == errors_before).then(|| VirtualHost {
        name: format!("VirtualService/{}", r.metadata.name),
        routes,
        rate_limits: Vec::new(),
        hedging: None,
        compression: Vec::new(),
        response_cache: Vec::new(),
    })
}

/// Istio's rules on a VirtualService's hosts: `*` only for one bound to gateways alone
/// (never the sidecars' `mesh`), and no two hosts that overlap (`a.com` twice, or
/// `*.com` beside `*.foo.com`).
fn check_hosts(r: &Resource, vs: &VirtualService, ctx: &mut Ctx<'_>) {
    let for_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    for (i, h) in vs.hosts.iter().enumerate() {
        if h == "*" && for_mesh {
            ctx.err(
                r,
                format!("spec.hosts[{i}]"),
                "the wildcard host * is not allowed for a VirtualService bound to the mesh (sidecars): name the hosts, or bind it to gateways",
            );
        }
        for (j, other) in vs.hosts.iter().enumerate().skip(i + 1) {
            if hosts_overlap(&h.to_ascii_lowercase(), &other.to_ascii_lowercase()) {
                ctx.err(r, format!("spec.hosts[{j}]"), format!("duplicate hosts in the VirtualService: {h:?} and {other:?}"));
            }
        }
    }
}

/// Whether two host patterns overlap (one equals or covers the other).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let covers = |w: &str, h: &str| w.strip_prefix('*').is_some_and(|suffix| h.ends_with(suffix));
    a == b || covers(a, b) || covers(b, a)
}

fn compile_route(r: &Resource, h: &HttpRoute, path: &str, index: usize, ctx: &mut Ctx<'_>) -> Option<Route> {
    let mut matches = Vec::with_capacity(h.matches.len());
    let mut elsewhere = 0;
    for (j, m) in h.matches.iter().enumerate() {
        let compiled = compile_match(r, m, &format!("{path}.match[{j}]"), ctx)?;
        // A match naming `gateways` is for those only (`mesh`: the sidecars); one with
        // `sourceLabels`, for the workloads that have them (this proxy's `--label`s).
        let labels_hold = ctx.source_labels.as_ref().is_none_or(|l| m.source_labels.iter().all(|(k, v)| l.get(k) == Some(v)));
        // `sourceNamespace`: the proxy's own namespace (validation keeps the match).
        let namespace_holds = ctx.source_labels.is_none() || m.source_namespace.as_ref().is_none_or(|ns| *ns == ctx.viewer);
        if ctx.binding.in_match(r, &m.gateways) && labels_hold && namespace_holds {
            matches.push(compiled);
        } else {
            elsewhere += 1;
        }
    }
    if elsewhere > 0 && matches.is_empty() {
        return None;
    }
    let actions = [!h.route.is_empty(), h.redirect.is_some(), h.direct_response.is_some()];
    let action = match actions.iter().filter(|a| **a).count() {
        0 => {
            ctx.err(r, path.to_owned(), "one of route, redirect or directResponse is required");
            return None;
        }
        1 if !h.route.is_empty() => Action::Forward(compile_destinations(r, &h.route, &format!("{path}.route"), ctx)?),
        1 if h.redirect.is_some() => Action::Redirect(compile_redirect(r, h.redirect.as_ref()?, &format!("{path}.redirect"), ctx)?),
        1 => {
            let d = h.direct_response.as_ref()?;
            let Ok(status) = StatusCode::from_u16(d.status).map_err(|_| ()).and_then(|s| if d.status >= 200 { Ok(s) } else { Err(()) })
            else {
                ctx.err(r, format!("{path}.directResponse.status"), format!("{} is not a valid HTTP status (200-599)", d.status));
                return None;
            };
            let body = match &d.body {
                Some(HttpBody { string: Some(s), .. }) => bytes::Bytes::from(s.clone()),
                Some(HttpBody { bytes: Some(b), .. }) => match base64_decode(b) {
                    Some(v) => bytes::Bytes::from(v),
                    None => {
                        ctx.err(r, format!("{path}.directResponse.body.bytes"), "not valid base64");
                        return None;
                    }
                },
                _ => bytes::Bytes::new(),
            };
            Action::Direct { status, body }
        }
        _ => {
            ctx.err(r, path.to_owned(), "only one of route, redirect or directResponse may be set");
            return None;
        }
    };
    let (request_headers, response_headers) = header_ops(r, h.headers.as_ref(), &format!("{path}.headers"), ctx)?;
    let rewrite = match &h.rewrite {
        None => None,
        Some(rw) => {
            if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                ctx.err(r, format!("{path}.rewrite"), "only one of uri or uriRegexRewrite may be set");
                return None;
            }
            let authority = match &rw.authority {
                Some(a) => Some(header_value(r, a, &format!("{path}.rewrite.authority"), ctx)?),
                None => None,
            };
            let uri_regex = match &rw.uri_regex_rewrite {
                Some(rr) => match Regex::new(&rr.pattern) {
                    Ok(re) => Some((re, rr.rewrite.replace("\\", "$"))),
                    Err(e) => {
                        ctx.err(
                            r,
                            format!("{path}.rewrite.uriRegexRewrite.match"),
                            format!("invalid regex: {}", first_line(&e.to_string())),
                        );
                        return None;
                    }
                },
                None => None,
            };
            Some(Rewrite { uri: rw.uri.clone(), authority, uri_regex })
        }
    };
    let mirror = match &h.mirror {
        None => None,
        Some(m) => {
            if m.host.is_empty() {
                ctx.err(r, format!("{path}.mirror.host"), "missing field");
                return None;
            }
            let pct = match (&h.mirror_percentage, h.mirror_percent) {
                (Some(p), _) => p.value,
                (None, Some(p)) => p as f64,
                (None, None) => 100.0,
            };
            if !(0.0..=100.0).contains(&pct) {
                ctx.err(r, format!("{path}.mirrorPercentage.value"), format!("{pct} is not a percentage (0-100)"));
                return None;
            }
            Some((destination(r, m, &format!("{path}.mirror"), ctx), pct / 100.0))
        }
    };
    let retry = match &h.retries {
        None => Some(RetryPolicy::istio_default()),
        Some(rt) => compile_retries(r, rt, &format!("{path}.retries"), ctx)?,
    };
    let fault = match &h.fault {
        None => None,
        Some(f) => Some(compile_fault(r, f, &format!("{path}.fault"), ctx)?),
    };
    Some(Route {
        retry,
        fault,
        name: h.name.clone().unwrap_or_else(|| format!("http[{index}]")),
        matches,
        action,
        request_headers,
        response_headers,
        timeout: h.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        rewrite,
        mirror,
    })
}

fn compile_retries(r: &Resource, rt: &HttpRetry, path: &str, ctx: &mut Ctx<'_>) -> Option<Option<RetryPolicy>> {
    if rt.attempts > 100 {
        ctx.err(r, format!("{path}.attempts"), format!("{} retries is more than 100", rt.attempts));
        return None;
    }
    let retry_on = match rt.retry_on.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => weft_resilience::RetryOn::istio_default(),
        Some(s) => match weft_resilience::RetryOn::parse(s) {
            Ok(on) => on,
            Err(e) => {
                ctx.err(r, format!("{path}.retryOn"), e.to_string());
                return None;
            }
        },
    };
    if rt.attempts == 0 {
        return Some(None);
    }
    Some(Some(RetryPolicy {
        attempts: rt.attempts,
        per_try_timeout: rt.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        retry_on,
        remote_localities: rt.retry_remote_localities.unwrap_or(false),
    }))
}

/// gRPC status names as Istio's `grpcStatus` takes them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn fraction(r: &Resource, p: Option<&Percent>, legacy: Option<u32>, path: &str, ctx: &mut Ctx<'_>) -> Option<f64> {
    let pct = p.map(|p| p.value).or(legacy.map(f64::from)).unwrap_or(100.0);
    if !(0.0..=100.0).contains(&pct) {
        ctx.err(r, format!("{path}.percentage.value"), format!("{pct} is not a percentage (0-100)"));
        return None;
    }
    Some(pct / 100.0)
}

fn compile_fault(r: &Resource, f: &HttpFaultInjection, path: &str, ctx: &mut Ctx<'_>) -> Option<Fault> {
    if f.delay.is_none() && f.abort.is_none() {
        // (Istio's validation: "HTTP fault injection must have an abort and/or a delay".)
        ctx.err(r, path.to_owned(), "a fault injects an abort, a delay or both: neither is set");
        return None;
    }
    let mut fault = Fault::default();
    if let Some(d) = &f.delay {
        let p = format!("{path}.delay");
        let Some(delay) = d.fixed_delay else {
            ctx.err(r, format!("{p}.fixedDelay"), "missing field");
            return None;
        };
        fault.delay = Some((delay.0, fraction(r, d.percentage.as_ref(), d.percent, &p, ctx)?));
    }
    if let Some(a) = &f.abort {
        let p = format!("{path}.abort");
        let abort = match (a.http_status, &a.grpc_status) {
            (Some(code), None) => match StatusCode::from_u16(code.min(999) as u16) {
                Ok(s) if (200..=599).contains(&code) => AbortWith::Http(s),
                _ => {
                    ctx.err(r, format!("{p}.httpStatus"), format!("{code} is not a valid HTTP status (200-599)"));
                    return None;
                }
            },
            (None, Some(name)) => match GRPC_CODES.iter().position(|c| c.eq_ignore_ascii_case(name)) {
                Some(i) => AbortWith::Grpc(i as u8),
                None => {
                    ctx.err(r, format!("{p}.grpcStatus"), format!("unknown gRPC status {name:?} (expected e.g. UNAVAILABLE)"));
                    return None;
                }
            },
            _ => {
                ctx.err(r, p, "exactly one of httpStatus or grpcStatus is required");
                return None;
            }
        };
        fault.abort = Some((abort, fraction(r, a.percentage.as_ref(), None, &format!("{path}.abort"), ctx)?));
    }
    Some(fault)
}

pub(crate) fn compile_destinations(
    r: &Resource,
    dests: &[HttpRouteDestination],
    path: &str,
    ctx: &mut Ctx<'_>,
) -> Option<WeightedClusters> {
    let mut targets = Vec::with_capacity(dests.len());
    let mut cumulative = Vec::with_capacity(dests.len());
    let mut total = 0u32;
    for (k, d) in dests.iter().enumerate() {
        let p = format!("{path}[{k}]");
        if d.destination.host.is_empty() {
            ctx.err(r, format!("{p}.destination.host"), "missing field");
            return None;
        }
        // A lone destination with no weight takes all traffic (Istio: weight defaults to 100).
        let weight = d.weight.unwrap_or(if dests.len() == 1 { 100 } else { 0 });
        let (request_headers, response_headers) = header_ops(r, d.headers.as_ref(), &format!("{p}.headers"), ctx)?;
        let cluster = destination(r, &d.destination, &format!("{p}.destination"), ctx);
        total = total.saturating_add(weight);
        cumulative.push(total);
        targets.push(WeightedTarget { cluster, weight, request_headers, response_headers });
    }
    if total == 0 {
        ctx.err(r, path.to_owned(), "the weights of the destinations add up to 0");
        return None;
    }
    Some(WeightedClusters { targets, cumulative, total })
}

fn destination(r: &Resource, d: &Destination, path: &str, ctx: &mut Ctx<'_>) -> ClusterChoice {
    let host = ctx.resolve(r, &d.host);
    if !ctx.services.contains_key(&host) {
        ctx.warn(r, format!("{path}.host"), format!("no ServiceEntry declares host {:?}: requests routed there get 503", d.host));
    }
    if let Some(s) = &d.subset {
        let known = ctx.rule_for(&host).is_some_and(|dr| dr.subsets.iter().any(|x| &x.name == s));
        if !known {
            ctx.warn(
                r,
                format!("{path}.subset"),
                format!("no DestinationRule for {:?} defines subset {s:?}: requests routed there get 503", d.host),
            );
        }
    }
    match d.port.map(|p| p.number) {
        Some(port) if (1..=65535).contains(&port) => {
            ClusterChoice { default: ctx.cluster(&host, port as u16, d.subset.as_deref()), by_port: Vec::new() }
        }
        Some(port) => {
            ctx.err(r, format!("{path}.port.number"), format!("port {port} out of range 1-65535"));
            ClusterChoice { default: 0, by_port: Vec::new() }
        }
        None => ctx.default_choice(&host, d.subset.as_deref()),
    }
}

fn compile_redirect(r: &Resource, rd: &HttpRedirect, path: &str, ctx: &mut Ctx<'_>) -> Option<Redirect> {
    let code = rd.redirect_code.unwrap_or(301);
    let status = match StatusCode::from_u16(code) {
        Ok(s) if matches!(code, 301 | 302 | 303 | 307 | 308) => s,
        _ => {
            ctx.err(r, format!("{path}.redirectCode"), format!("{code} is not a redirect code (301, 302, 303, 307, 308)"));
            return None;
        }
    };
    if let Some(p) = rd.port {
        if p == 0 || p > 65535 {
            ctx.err(r, format!("{path}.port"), format!("port {p} out of range 1-65535"));
            return None;
        }
    }
    Some(Redirect {
        uri: rd.uri.clone(),
        authority: rd.authority.clone(),
        port: rd.port.map(|p| p as u16),
        scheme: rd.scheme.clone(),
        status,
    })
}

/// A weft kind's `spec.match` list, compiled; `None` when an entry has errors (reported).
pub(crate) fn compile_spec_matches(r: &Resource, ms: &[HttpMatchRequest], ctx: &mut Ctx<'_>) -> Option<Vec<RequestMatch>> {
    let mut out = Vec::with_capacity(ms.len());
    let mut ok = true;
    for (i, m) in ms.iter().enumerate() {
        match compile_match(r, m, &format!("spec.match[{i}]"), ctx) {
            Some(m) => out.push(m),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(crate) fn compile_match(r: &Resource, m: &HttpMatchRequest, path: &str, ctx: &mut Ctx<'_>) -> Option<RequestMatch> {
    let mut out = RequestMatch { ignore_uri_case: m.ignore_uri_case, ..Default::default() };
    if let Some(u) = &m.uri {
        let mut sm = string_match(r, u, &format!("{path}.uri"), ctx, m.ignore_uri_case)?;
        if m.ignore_uri_case {
            if let StrMatch::Exact(s) | StrMatch::Prefix(s) = &mut sm {
                *s = s.to_ascii_lowercase();
            }
        }
        out.uri = Some(sm);
    }
    if let Some(x) = &m.method {
        out.method = Some(string_match(r, x, &format!("{path}.method"), ctx, false)?);
    }
    if let Some(x) = &m.authority {
        out.authority = Some(string_match(r, x, &format!("{path}.authority"), ctx, false)?);
    }
    if let Some(x) = &m.scheme {
        out.scheme = Some(string_match(r, x, &format!("{path}.scheme"), ctx, false)?);
    }
    for (field, src, dst) in [("headers", &m.headers, &mut out.headers), ("withoutHeaders", &m.without_headers, &mut out.without_headers)] {
        for (name, sm) in src {
            let p = format!("{path}.{field}.{name}");
            let Ok(hn) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                ctx.err(r, p, format!("{name:?} is not a valid header name"));
                return None;
            };
            dst.push((hn, string_match(r, sm, &p, ctx, false)?));
        }
    }
    for (k, sm) in &m.query_params {
        out.query.push((k.clone(), string_match(r, sm, &format!("{path}.queryParams.{k}"), ctx, false)?));
    }
    if let Some(p) = m.port {
        if p == 0 || p > 65535 {
            ctx.err(r, format!("{path}.port"), format!("port {p} out of range 1-65535"));
            return None;
        }
        out.port = Some(p as u16);
    }
    for (k, e) in crate::rules::labels(&m.source_labels) {
        ctx.err(r, format!("{path}.sourceLabels[{k}]"), e);
    }
    Some(out)
}

fn string_match(r: &Resource, m: &StringMatch, path: &str, ctx: &mut Ctx<'_>, ci: bool) -> Option<StrMatch> {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()].iter().filter(|x| **x).count();
    if set > 1 {
        ctx.err(r, path.to_owned(), "only one of exact, prefix or regex may be set");
        return None;
    }
    Some(if let Some(e) = &m.exact {
        StrMatch::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        StrMatch::Prefix(p.clone())
    } else if let Some(re) = &m.regex {
        let pat = if ci { format!("(?i)^(?:{re})$") } else { format!("^(?:{re})$") };
        match Regex::new(&pat) {
            Ok(x) => StrMatch::Regex(x),
            Err(e) => {
                ctx.err(r, format!("{path}.regex"), format!("invalid regex {re:?}: {}", first_line(&e.to_string())));
                return None;
            }
        }
    } else {
        StrMatch::Present
    })
}

fn header_ops(r: &Resource, h: Option<&Headers>, path: &str, ctx: &mut Ctx<'_>) -> Option<(HeaderOps, HeaderOps)> {
    let Some(h) = h else {
        return Some(Default::default());
    };
    let req = ops(r, h.request.as_ref(), &format!("{path}.request"), ctx)?;
    let resp = ops(r, h.response.as_ref(), &format!("{path}.response"), ctx)?;
    Some((req, resp))
}

fn ops(r: &Resource, o: Option<&HeaderOperations>, path: &str, ctx: &mut Ctx<'_>) -> Option<HeaderOps> {
    let Some(o) = o else {
        return Some(HeaderOps::default());
    };
    let mut out = HeaderOps::default();
    for (field, src, dst) in [("set", &o.set, &mut out.set), ("add", &o.add, &mut out.add)] {
        for (k, v) in src {
            let p = format!("{path}.{field}.{k}");
            let Ok(n) = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) else {
                ctx.err(r, p, format!("{k:?} is not a valid header name"));
                return None;
            };
            dst.push((n, header_value(r, v, &p, ctx)?));
        }
    }
    for (i, k) in o.remove.iter().enumerate() {
        let Ok(n) = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) else {
            ctx.err(r, format!("{path}.remove[{i}]"), format!("{k:?} is not a valid header name"));
            return None;
        };
        out.remove.push(n);
    }
    Some(out)
}

fn header_value(r: &Resource, v: &str, path: &str, ctx: &mut Ctx<'_>) -> Option<HeaderValue> {
    match HeaderValue::from_str(v) {
        Ok(x) => Some(x),
        Err(_) => {
            ctx.err(r, path.to_owned(), format!("{v:?} is not a valid header value"));
            None
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_owned()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = T.iter().position(|&t| t == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
