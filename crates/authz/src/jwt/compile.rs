//! `jwtRules` checked and compiled.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::keys::KeySet;
use super::locate::Location;
use crate::spec::{JwtRule, RequestAuthentication};

/// The path, under the issuer, of its OpenID Connect configuration: a remote key source
/// ending with it is discovered (its `jwks_uri` fetched), not read as a JWKS.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

/// Istio's default for fetching a `jwksUri`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a rule's keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// `jwks`, inline.
    Inline(KeySet),
    /// `jwksUri`, fetched by the proxy (and the rule's `timeout` for each fetch).
    Remote { uri: String, timeout: Duration },
}

/// A claim copied into a request header (`outputClaimToHeaders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub header: HeaderName,
    /// The claim's path (`a.b` is claim `b` inside object claim `a`).
    pub claim: Vec<String>,
}

/// One `jwtRules[]` entry, compiled.
#[derive(Debug)]
pub struct CompiledRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub locations: Vec<Location>,
    pub output_payload_to_header: Option<HeaderName>,
    pub output_claim_to_headers: Vec<ClaimHeader>,
    pub forward_original_token: bool,
    /// `spaceDelimitedClaims`, each as a path.
    pub space_delimited: Vec<Vec<String>>,
    /// `presence: REQUIRED`.
    pub required: bool,
    /// The rule as written (two compiled rules are the same when these are).
    pub source: JwtRule,
}

impl PartialEq for CompiledRule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The JWT rules of one workload (of one RequestAuthentication, or all that apply
/// to a workload, merged as Istio merges them).
#[derive(Debug, Default, PartialEq)]
pub struct Authenticator {
    pub rules: Vec<Arc<CompiledRule>>,
}

impl Authenticator {
    /// All the rules of `parts` (Istio: every RequestAuthentication that applies to a
    /// workload counts).
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Authenticator>) -> Authenticator {
        Authenticator { rules: parts.into_iter().flat_map(|a| a.rules.iter().cloned()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The `jwksUri`s the rules need fetched, with each one's timeout.
    pub fn remote_uris(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.rules.iter().filter_map(|r| match &r.keys {
            KeySource::Remote { uri, timeout } => Some((uri.as_str(), *timeout)),
            KeySource::Inline(_) => None,
        })
    }
}

/// Checks and compiles `spec.jwtRules`; every problem with its field path.
pub fn compile(ra: &RequestAuthentication) -> Result<Authenticator, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let mut rules = Vec::new();
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        let mut err = |field: &str, msg: String| errs.push((format!("{at}.{field}"), msg));
        if let Some(r) = compile_rule(rule, &mut err) {
            rules.push(Arc::new(r));
        }
    }
    if errs.is_empty() {
        Ok(Authenticator { rules })
    } else {
        Err(errs)
    }
}

fn compile_rule(rule: &JwtRule, err: &mut impl FnMut(&str, String)) -> Option<CompiledRule> {
    let mut ok = true;
    let mut fail = |field: &str, msg: String| {
        ok = false;
        err(field, msg)
    };
    if rule.issuer.is_empty() {
        fail("issuer", "missing field".into());
    }
    let keys = key_source(rule, &mut fail);
    let locations = locations(rule, &mut fail);
    let output_payload_to_header =
        rule.output_payload_to_header.as_deref().and_then(|h| header_name(h, "outputPayloadToHeader", &mut fail));
    let mut output_claim_to_headers = Vec::new();
    for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
        let header = header_name(&c.header, &format!("outputClaimToHeaders[{j}].header"), &mut fail);
        if c.claim.is_empty() {
            fail(&format!("outputClaimToHeaders[{j}].claim"), "missing field".into());
        }
        if let Some(header) = header {
            output_claim_to_headers.push(ClaimHeader { header, claim: c.claim.split('.').map(str::to_owned).collect() });
        }
    }
    for (j, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            fail(&format!("audiences[{j}]"), "must not be empty".into());
        }
    }
    for (j, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() || c.split('.').any(str::is_empty) {
            fail(&format!("spaceDelimitedClaims[{j}]"), format!("{:?} is no claim name", cut(c)));
        }
    }
    if rule.space_delimited_claims.len() > 64 {
        fail("spaceDelimitedClaims", "at most 64 claims".into());
    }
    let required = match rule.presence.as_deref() {
        None | Some("OPTIONAL") => false,
        Some("REQUIRED") => true,
        Some(other) => {
            fail("presence", format!("unknown value {:?} (expected OPTIONAL or REQUIRED)", cut(other)));
            false
        }
    };
    let keys = keys?;
    ok.then(|| CompiledRule {
        space_delimited: rule.space_delimited_claims.iter().map(|c| c.split('.').map(str::to_owned).collect()).collect(),
        required,
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        keys,
        locations,
        output_payload_to_header,
        output_claim_to_headers,
        forward_original_token: rule.forward_original_token,
        source: rule.clone(),
    })
}

fn key_source(rule: &JwtRule, fail: &mut impl FnMut(&str, String)) -> Option<KeySource> {
    // Both checked when both are given, as Istio's validation does; the inline `jwks`
    // is the one used.
    let remote = rule.jwks_uri.as_deref().and_then(|uri| remote_source(uri, rule.timeout.as_deref(), fail));
    match (&rule.jwks, &rule.jwks_uri) {
        (Some(jwks), _) => KeySet::parse(jwks).map(KeySource::Inline).map_err(|e| fail("jwks", e)).ok(),
        (None, Some(_)) => remote,
        // OpenID Connect discovery, as Istio does: the issuer's
        // `/.well-known/openid-configuration` names the `jwks_uri` (an issuer written
        // without a scheme is taken as https://).
        (None, None) => {
            let base = match rule.issuer.starts_with("http://") || rule.issuer.starts_with("https://") {
                true => rule.issuer.trim_end_matches('/').to_owned(),
                false => format!("https://{}", rule.issuer.trim_end_matches('/')),
            };
            let uri = format!("{base}{OPENID_CONFIGURATION}");
            // (An issuer with user info, `testing@secure.istio.io`, names no server.)
            let mut bad = rule.issuer.contains('@');
            let source = remote_source(&uri, rule.timeout.as_deref(), &mut |f, m| {
                bad |= f == "jwksUri";
                if f != "jwksUri" {
                    fail(f, m)
                }
            });
            if bad {
                fail("jwksUri", format!("needed: the issuer {:?} gives no URL to discover its keys from", cut(&rule.issuer)));
                return None;
            }
            source
        }
    }
}

fn remote_source(uri: &str, timeout: Option<&str>, fail: &mut impl FnMut(&str, String)) -> Option<KeySource> {
    let timeout = match timeout.map(parse_timeout) {
        None => Some(DEFAULT_FETCH_TIMEOUT),
        Some(Some(t)) if !t.is_zero() => Some(t),
        Some(_) => {
            fail("timeout", "a duration above zero, such as \"5s\"".into());
            None
        }
    };
    let uri_ok = uri.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.host().is_some_and(|h| !h.is_empty())
            // (A port written must be one: `host:99999` is no URL, not host:443.)
            && {
                let auth = u.authority().map_or("", |a| a.as_str());
                let after_host = auth.rsplit(']').next().unwrap_or(auth);
                !after_host.contains(':') || u.port_u16().is_some_and(|n| n > 0)
            }
    });
    if !uri_ok {
        fail("jwksUri", format!("an http:// or https:// URL, not {:?}", cut(uri)));
    }
    Some(KeySource::Remote { uri: uri.to_owned(), timeout: timeout? }).filter(|_| uri_ok)
}

/// A protobuf duration (`"5s"`, `"0.5s"`) or a humantime one (`"500ms"`).
fn parse_timeout(s: &str) -> Option<Duration> {
    let seconds = s.strip_suffix('s').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    match seconds {
        Some(n) => Duration::try_from_secs_f64(n.parse().ok()?).ok(),
        None => humantime::parse_duration(s).ok(),
    }
}

fn locations(rule: &JwtRule, fail: &mut impl FnMut(&str, String)) -> Vec<Location> {
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        return Location::defaults();
    }
    let mut out = Vec::new();
    for (j, h) in rule.from_headers.iter().enumerate() {
        if let Some(name) = header_name(&h.name, &format!("fromHeaders[{j}].name"), fail) {
            out.push(Location::Header { name, prefix: h.prefix.clone().unwrap_or_default() });
        }
    }
    for (field, names, make) in [
        ("fromParams", &rule.from_params, Location::Param as fn(String) -> Location),
        ("fromCookies", &rule.from_cookies, Location::Cookie),
    ] {
        for (j, name) in names.iter().enumerate() {
            if name.is_empty() {
                fail(&format!("{field}[{j}]"), "an empty name".into());
            } else {
                out.push(make(name.clone()));
            }
        }
    }
    out
}

fn header_name(name: &str, field: &str, fail: &mut impl FnMut(&str, String)) -> Option<HeaderName> {
    if name.is_empty() {
        fail(field, "missing field".into());
        return None;
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| fail(field, format!("{:?} is not a valid header name", cut(name)))).ok()
}

/// At most 64 characters of a value, for messages.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
