//! Compiled request matchers: Istio's `HTTPMatchRequest`, evaluated on the request
//! path with no allocation.

use http::HeaderMap;
use regex::Regex;

/// A compiled `StringMatch`.
#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends: Envoy's RE2 `safe_regex` matches the whole value.
    Regex(Regex),
    /// `{}`: the value is present, whatever it is.
    Present,
}

impl StrMatch {
    #[inline]
    pub fn is_match(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
            StrMatch::Present => true,
        }
    }

    /// Case-insensitive form used for `ignoreUriCase` (the pattern is lowered at compile time).
    #[inline]
    fn is_match_ci(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => v.len() >= p.len() && v.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Regex(r) => r.is_match(v),
            StrMatch::Present => true,
        }
    }
}

/// Regexes compare by their source text: what a reload needs to tell an unchanged
/// policy from a changed one.
impl PartialEq for StrMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StrMatch::Exact(a), StrMatch::Exact(b)) | (StrMatch::Prefix(a), StrMatch::Prefix(b)) => a == b,
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            (StrMatch::Present, StrMatch::Present) => true,
            _ => false,
        }
    }
}

/// What a matcher sees of a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Host without port.
    pub authority: &'a str,
    pub scheme: &'a str,
    pub port: u16,
    pub headers: &'a HeaderMap,
}

/// One compiled `match[]` entry; every condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestMatch {
    pub uri: Option<StrMatch>,
    pub ignore_uri_case: bool,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub scheme: Option<StrMatch>,
    pub headers: Vec<(http::HeaderName, StrMatch)>,
    pub without_headers: Vec<(http::HeaderName, StrMatch)>,
    pub query: Vec<(String, StrMatch)>,
    pub port: Option<u16>,
}

impl RequestMatch {
    pub fn is_match(&self, r: &RequestView<'_>) -> bool {
        if let Some(m) = &self.uri {
            let ok = if self.ignore_uri_case { m.is_match_ci(r.path) } else { m.is_match(r.path) };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.is_match(r.method) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.is_match(r.authority) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.is_match(r.scheme) {
                return false;
            }
        }
        if let Some(p) = self.port {
            if p != r.port {
                return false;
            }
        }
        for (name, m) in &self.headers {
            match r.headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(v) if m.is_match(v) => {}
                _ => return false,
            }
        }
        for (name, m) in &self.without_headers {
            if let Some(v) = r.headers.get(name).and_then(|v| v.to_str().ok()) {
                if m.is_match(v) {
                    return false;
                }
            }
        }
        for (key, m) in &self.query {
            match query_param(r.query, key) {
                Some(v) if m.is_match(v) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The raw value of the first `key=` in a query string (no percent-decoding, as Envoy).
pub fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, query: Option<&'a str>, h: &'a HeaderMap) -> RequestView<'a> {
        RequestView { method: "GET", path, query, authority: "reviews", scheme: "http", port: 80, headers: h }
    }

    #[test]
    fn table() {
        let h = {
            let mut h = HeaderMap::new();
            h.insert("end-user", "jason".parse().unwrap());
            h
        };
        let re = |s: &str| StrMatch::Regex(Regex::new(&format!("^(?:{s})$")).unwrap());
        let cases: Vec<(RequestMatch, &str, Option<&str>, bool)> = vec![
            (RequestMatch { uri: Some(StrMatch::Prefix("/api".into())), ..Default::default() }, "/api/v1", None, true),
            (RequestMatch { uri: Some(StrMatch::Prefix("/api".into())), ..Default::default() }, "/web", None, false),
            (RequestMatch { uri: Some(StrMatch::Exact("/a".into())), ..Default::default() }, "/a/", None, false),
            (RequestMatch { uri: Some(StrMatch::Exact("/a".into())), ignore_uri_case: true, ..Default::default() }, "/A", None, true),
            (RequestMatch { uri: Some(re("/v[0-9]+")), ..Default::default() }, "/v12", None, true),
            (RequestMatch { uri: Some(re("/v[0-9]+")), ..Default::default() }, "/v12/x", None, false),
            (
                RequestMatch { headers: vec![("end-user".parse().unwrap(), StrMatch::Exact("jason".into()))], ..Default::default() },
                "/",
                None,
                true,
            ),
            (RequestMatch { headers: vec![("x-missing".parse().unwrap(), StrMatch::Present)], ..Default::default() }, "/", None, false),
            (
                RequestMatch { without_headers: vec![("end-user".parse().unwrap(), StrMatch::Present)], ..Default::default() },
                "/",
                None,
                false,
            ),
            (RequestMatch { query: vec![("v".into(), StrMatch::Exact("2".into()))], ..Default::default() }, "/", Some("a=1&v=2"), true),
            (RequestMatch { query: vec![("v".into(), StrMatch::Exact("2".into()))], ..Default::default() }, "/", Some("v=3"), false),
            (RequestMatch { method: Some(StrMatch::Exact("POST".into())), ..Default::default() }, "/", None, false),
        ];
        for (i, (m, path, q, want)) in cases.iter().enumerate() {
            assert_eq!(m.is_match(&view(path, *q, &h)), *want, "case {i}");
        }
    }
}
