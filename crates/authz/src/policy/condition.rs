//! An AuthorizationPolicy's `when` conditions: Istio's keys (`request.headers[…]`,
//! `source.ip`, `request.auth.claims[…]`, …) parsed, and evaluated against a request.

use http::HeaderName;
use serde_json::Value;

use super::{cut, field, Eval, Field};
use crate::matchers::{parse_port, Cidr, StrMatch};
use crate::spec;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Condition {
    pub(super) key: Key,
    values: Field<Value_>,
}

/// A `when` value, parsed for its key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value_ {
    Str(StrMatch),
    Ip(Cidr),
    Port(u16),
}

/// Istio's condition keys.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Key {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    RequestPrincipal,
    Audiences,
    Presenter,
    Claim(Vec<String>),
    DestinationIp,
    DestinationPort,
    Sni,
    /// `source.trustDomain`: the trust domain of the peer's SPIFFE identity.
    SourceTrustDomain,
    /// `experimental.envoy.filters.*`: Envoy filter metadata, which weft does not have:
    /// an attribute weft cannot know (matches nothing in ALLOW, everything in DENY).
    Unknowable,
}

pub(super) fn condition(at: &str, c: &spec::Condition, err: &mut impl FnMut(String, String)) -> Option<Condition> {
    let key = match parse_key(&c.key) {
        Ok(k) => k,
        Err(e) => {
            err(format!("{at}.key"), e);
            return None;
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        err(at.to_owned(), "values or notValues must be set".into());
        return None;
    }
    let parse = |v: &str| match key {
        Key::SourceIp | Key::RemoteIp | Key::DestinationIp => Cidr::parse(v).map(Value_::Ip),
        Key::DestinationPort => parse_port(v).map(Value_::Port),
        _ => StrMatch::parse(v).map(Value_::Str),
    };
    let values = field(at, "values", &c.values, &c.not_values, parse, err);
    Some(Condition { key, values })
}

fn parse_key(k: &str) -> Result<Key, String> {
    let bracketed = |rest: &str| -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut r = rest;
        while !r.is_empty() {
            let inner = r.strip_prefix('[')?;
            let end = inner.find(']')?;
            let name = &inner[..end];
            if name.is_empty() {
                return None;
            }
            out.push(name.to_owned());
            r = &inner[end + 1..];
        }
        (!out.is_empty()).then_some(out)
    };
    let key = match k {
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "source.namespace" => Key::SourceNamespace,
        "source.principal" => Key::SourcePrincipal,
        "request.auth.principal" => Key::RequestPrincipal,
        "request.auth.audiences" => Key::Audiences,
        "request.auth.presenter" => Key::Presenter,
        "destination.ip" => Key::DestinationIp,
        "destination.port" => Key::DestinationPort,
        "connection.sni" => Key::Sni,
        "source.trustDomain" => Key::SourceTrustDomain,
        k if k.starts_with("experimental.envoy.filters.") => Key::Unknowable,
        _ => {
            if let Some(rest) = k.strip_prefix("request.headers") {
                match bracketed(rest).as_deref() {
                    Some([name]) => match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(h) => Key::Header(h),
                        Err(_) => return Err(format!("{:?} is no header name", cut(name))),
                    },
                    _ => return Err("request.headers[<name>] names one header".into()),
                }
            } else if let Some(rest) = k.strip_prefix("request.auth.claims") {
                match bracketed(rest) {
                    Some(path) => Key::Claim(path),
                    None => return Err("request.auth.claims[<name>] (nested: [a][b])".into()),
                }
            } else if k.is_empty() {
                return Err("must be set".into());
            } else {
                return Err(format!("unknown key {:?}", cut(k)));
            }
        }
    };
    Ok(key)
}

impl Condition {
    pub(super) fn matches<'e>(&'e self, e: &Eval<'e, '_>, unknown: bool) -> bool {
        let a = e.a;
        let s = |m: &Value_, v: &str| matches!(m, Value_::Str(m) if m.matches(v));
        let ip = |m: &Value_, v: std::net::IpAddr| matches!(m, Value_::Ip(c) if c.contains(v));
        let f = &self.values;
        match &self.key {
            Key::Header(h) => {
                let mut all = e.header(h).filter_map(|v| v.to_str().ok()).peekable();
                if all.peek().is_none() {
                    return f.any.is_empty();
                }
                all.any(|v| f.check_known(Some(v), s))
            }
            Key::SourceIp => f.check(a.source_ip, unknown, ip),
            Key::RemoteIp => f.check(a.remote_ip.or(a.source_ip), unknown, ip),
            Key::DestinationIp => f.check(a.destination_ip, unknown, ip),
            Key::DestinationPort => f.check_known(Some(a.destination_port), |m, v| matches!(m, Value_::Port(p) if *p == v)),
            Key::SourceNamespace => f.check(a.principal.map(|_| a.source_namespace().unwrap_or("")), unknown, s),
            Key::SourcePrincipal => f.check(a.principal, unknown, s),
            Key::RequestPrincipal => f.check_known(a.request_principal, s),
            Key::Sni => f.check_known(a.sni, s),
            Key::SourceTrustDomain => f.check(a.principal.map(|p| p.split('/').next().unwrap_or("")), unknown, s),
            Key::Unknowable => f.check(None, unknown, s),
            Key::Audiences => claim_check(f, a.claim(&["aud"]), s),
            Key::Presenter => f.check_known(a.claim(&["azp"]).and_then(Value::as_str), s),
            Key::Claim(path) => claim_check(f, a.claim(path), s),
        }
    }
}

/// A claim that is a string, or a list of strings (any of which may match; `not`
/// excludes when any does), as Istio treats `aud` and list claims such as `groups`.
fn claim_check(f: &Field<Value_>, v: Option<&Value>, s: impl Fn(&Value_, &str) -> bool + Copy) -> bool {
    match v {
        Some(Value::String(one)) => f.check_known(Some(one.as_str()), s),
        Some(Value::Array(list)) => {
            let strs = || list.iter().filter_map(Value::as_str);
            (f.any.is_empty() || strs().any(|v| f.any.iter().any(|m| s(m, v)))) && !strs().any(|v| f.not.iter().any(|m| s(m, v)))
        }
        Some(Value::Bool(b)) => f.check_known(Some(if *b { "true" } else { "false" }), s),
        _ => f.any.is_empty(),
    }
}
