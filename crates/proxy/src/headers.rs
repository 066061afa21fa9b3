//! Header work on the request path: the request's authority, hop-by-hop headers,
//! URI rewrites and redirects.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use weft_config::matcher::StrMatch;
use weft_config::{Redirect, Route};

/// Most bytes of a host name kept for lower-casing on the stack.
pub const MAX_HOST: usize = 255;

/// The request's authority: the URI's (absolute form, HTTP/2 `:authority`, CONNECT)
/// or else the `Host` header. Returns (authority, host without port, port).
pub fn authority<B>(req: &Request<B>) -> Option<(&str, &str, Option<u16>)> {
    let a = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let (host, port) = split_host_port(a)?;
    Some((a, host, port))
}

/// The request's `Host` headers, looked up once for [`authority_value_in`] and
/// [`conflicting_host_in`]: the first, and whether another follows.
#[derive(Clone, Copy)]
pub struct Hosts<'a> {
    first: Option<&'a HeaderValue>,
    more: bool,
}

impl<'a> Hosts<'a> {
    pub fn of<B>(req: &'a Request<B>) -> Hosts<'a> {
        let mut all = req.headers().get_all(header::HOST).iter();
        Hosts { first: all.next(), more: all.next().is_some() }
    }
}

/// `host:port`, `[v6]:port` or a bare host.
pub fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    if a.is_empty() {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((h, port));
    }
    // (A byte scan: `rsplit_once` searches for a char, ~150 instructions more a request.)
    match a.as_bytes().iter().rposition(|&b| b == b':') {
        Some(i) => Some((&a[..i], Some(a[i + 1..].parse().ok()?))),
        None => Some((a, None)),
    }
}

/// A lower-cased host name held on the stack, so routing allocates nothing.
pub struct HostBuf {
    buf: [u8; MAX_HOST],
    len: u8,
}

impl HostBuf {
    pub fn new(host: &str) -> Option<HostBuf> {
        let n = host.len();
        if n > MAX_HOST {
            return None;
        }
        let mut buf = [0u8; MAX_HOST];
        buf[..n].copy_from_slice(host.as_bytes());
        buf[..n].make_ascii_lowercase();
        Some(HostBuf { buf, len: n as u8 })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

/// `host` lower-cased: `host` itself when it has no upper-case letter (the usual
/// case: no copy), else its lower-cased copy, held in `copy`. `None` past [`MAX_HOST`].
pub fn lowercase_host<'a>(host: &'a str, copy: &'a mut Option<HostBuf>) -> Option<&'a str> {
    if host.len() > MAX_HOST {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(host);
    }
    Some(copy.insert(HostBuf::new(host)?).as_str())
}

/// The request's authority as a header value (a cheap clone of the `Host` header).
pub fn authority_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    authority_value_in(req, Hosts::of(req))
}

/// [`authority_value`], with the request's `Host` headers already looked up.
pub fn authority_value_in<B>(req: &Request<B>, hosts: Hosts<'_>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => hosts.first.cloned(),
    }
}

static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-authenticate"),
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
/// `TE: trailers` stays: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass to see whether there is anything to do (usually there is not); the
    // length test rules out most names without comparing bytes.
    let any = h.keys().any(|k| matches!(k.as_str().len(), 2 | 7 | 10 | 16 | 17 | 18) && (HOP_BY_HOP.contains(k) || k == header::TE));
    if !any {
        return;
    }
    if let Some(c) = h.get(header::CONNECTION) {
        let v = c.as_bytes();
        // `keep-alive` and `close` name no other header (the common values).
        if !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close") {
            if let Ok(list) = c.to_str() {
                let named: Vec<HeaderName> = list.split(',').filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()).collect();
                for n in named {
                    if n != header::TE {
                        h.remove(n);
                    }
                }
            }
        }
    }
    for n in &HOP_BY_HOP {
        if h.contains_key(n) {
            h.remove(n);
        }
    }
    if let Some(te) = h.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            h.remove(header::TE);
        }
    }
}

/// True for an HTTP/1.1 `Connection: upgrade` + `Upgrade: x` request.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// What an HTTP/1.1 request's `Upgrade` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeKind {
    /// `websocket` among the offered protocols (any case), with `Connection: upgrade`.
    WebSocket,
    /// `h2c` only, or an `Upgrade` that `Connection` does not name: the headers are
    /// dropped and the request goes on as plain HTTP/1.1.
    Stripped,
    /// Any other protocol: refused.
    Other,
}

/// Classifies a request that has an `Upgrade` header.
pub fn upgrade_kind(h: &HeaderMap) -> UpgradeKind {
    if !is_upgrade(h) {
        return UpgradeKind::Stripped;
    }
    let tokens = || {
        h.get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().split('/').next().unwrap_or("").trim())
            .filter(|t| !t.is_empty())
    };
    if tokens().any(|t| t.eq_ignore_ascii_case("websocket")) {
        UpgradeKind::WebSocket
    } else if tokens().all(|t| t.eq_ignore_ascii_case("h2c")) {
        UpgradeKind::Stripped
    } else {
        UpgradeKind::Other
    }
}

/// Why a request's host is ambiguous (answered 400), if it is: more than one `Host`
/// (RFC 9112 §3.2), or, over HTTP/2, a `Host` naming another authority than
/// `:authority` (RFC 9113 §8.3.1). An HTTP/1.1 absolute-form request's `Host` is
/// ignored and replaced by the URI's authority (RFC 9112 §3.2.2), as forwarding does.
pub fn conflicting_host<B>(req: &Request<B>, version: http::Version) -> Option<&'static str> {
    conflicting_host_in(req, Hosts::of(req), version)
}

/// [`conflicting_host`], with the request's `Host` headers already looked up.
pub fn conflicting_host_in<B>(req: &Request<B>, hosts: Hosts<'_>, version: http::Version) -> Option<&'static str> {
    let first = hosts.first?;
    if hosts.more {
        return Some("bad request: more than one Host header\n");
    }
    match req.uri().authority() {
        Some(a) if version == http::Version::HTTP_2 && !a.as_str().as_bytes().eq_ignore_ascii_case(first.as_bytes()) => {
            Some("bad request: Host differs from :authority\n")
        }
        _ => None,
    }
}

/// Replaces the request's path, keeping its query (and scheme and authority).
pub fn set_path<B>(req: &mut Request<B>, path: &str) -> Option<()> {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    *req.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(())
}

/// Applies `rewrite.uri` / `uriRegexRewrite` to a path-and-query. A prefix match's
/// prefix is replaced; an exact or regex match replaces the whole path (Envoy's
/// `prefix_rewrite` and `regex_rewrite`).
pub fn rewrite_path(route: &Route, matched_uri: Option<&StrMatch>, path: &str, query: Option<&str>) -> Option<String> {
    let rw = route.rewrite.as_ref()?;
    let new_path = if let Some(u) = &rw.uri {
        match matched_uri {
            Some(StrMatch::Prefix(p)) if path.len() >= p.len() => {
                let rest = &path[p.len()..];
                // "/api/" + rewrite "/" must not give "//x".
                if u.ends_with('/') && rest.starts_with('/') {
                    format!("{u}{}", &rest[1..])
                } else {
                    format!("{u}{rest}")
                }
            }
            _ => u.clone(),
        }
    } else if let Some((re, with)) = &rw.uri_regex {
        re.replace_all(path, with.as_str()).into_owned()
    } else {
        return None;
    };
    Some(match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    })
}

/// The `Location` of a redirect: the request's parts with the redirect's replacements.
pub fn redirect_location(r: &Redirect, host: &str, port: Option<u16>, path_and_query: &str) -> Option<HeaderValue> {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.authority.as_deref().unwrap_or(host);
    let port = r.port.or(if r.authority.is_some() { None } else { port });
    let path = r.uri.as_deref().unwrap_or(path_and_query);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let loc = match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    };
    HeaderValue::from_str(&loc).ok()
}

/// An absolute URI for an HTTP/2 upstream request.
pub fn absolute_uri(authority: &str, path_and_query: &str) -> Option<Uri> {
    Uri::builder().scheme("http").authority(authority).path_and_query(path_and_query).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.b:8080"), Some(("a.b", Some(8080))));
        assert_eq!(split_host_port("a.b"), Some(("a.b", None)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_host_port("a:xx"), None);
        let mut copy = None;
        assert_eq!(lowercase_host("a.b", &mut copy), Some("a.b"));
        assert_eq!(lowercase_host("Svc.NS", &mut copy), Some("svc.ns"));
        assert_eq!(lowercase_host(&"a".repeat(MAX_HOST + 1), &mut copy), None);
        assert_eq!(HostBuf::new("ReViews").unwrap().as_str(), "reviews");
    }

    #[test]
    fn upgrades() {
        let kind = |c: &str, u: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert("connection", c.parse().unwrap());
            for v in u {
                h.append("upgrade", v.parse().unwrap());
            }
            upgrade_kind(&h)
        };
        assert_eq!(kind("Upgrade", &["WebSocket"]), UpgradeKind::WebSocket);
        assert_eq!(kind("keep-alive, upgrade", &["h2c, websocket/13"]), UpgradeKind::WebSocket);
        assert_eq!(kind("Upgrade, HTTP2-Settings", &["h2c"]), UpgradeKind::Stripped);
        assert_eq!(kind("close", &["websocket"]), UpgradeKind::Stripped);
        assert_eq!(kind("upgrade", &["foo"]), UpgradeKind::Other);
        assert_eq!(kind("upgrade", &["h2c", "tls/1.3"]), UpgradeKind::Other);
    }

    #[test]
    fn hosts() {
        let req = |uri: &str, hosts: &[&str]| {
            let mut r = Request::builder().uri(uri);
            for h in hosts {
                r = r.header("host", *h);
            }
            r.body(()).unwrap()
        };
        assert!(conflicting_host(&req("/", &["a", "b"]), http::Version::HTTP_11).is_some());
        assert!(conflicting_host(&req("/", &["a", "a"]), http::Version::HTTP_11).is_some());
        assert!(conflicting_host(&req("/", &["a"]), http::Version::HTTP_11).is_none());
        assert!(conflicting_host(&req("http://a/", &["b"]), http::Version::HTTP_11).is_none());
        assert!(conflicting_host(&req("http://a/", &["b"]), http::Version::HTTP_2).is_some());
        assert!(conflicting_host(&req("http://A/", &["a"]), http::Version::HTTP_2).is_none());
        let mut r = req("/a/../b?x=1", &["a"]);
        set_path(&mut r, "/b").unwrap();
        assert_eq!(r.uri().to_string(), "/b?x=1");
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-foo".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("te") && h.contains_key("x-keep"));
    }
}
