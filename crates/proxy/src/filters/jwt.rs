//! RequestAuthentication on the inbound side: the JWT a request carries verified by
//! the workload's rules ([`weft_authz::jwt`]) before AuthorizationPolicy looks at it.
//! As in Istio, a request without a token passes (a policy with
//! `requestPrincipals` decides whether one is required); a token that fails gets
//! Envoy's answer, `401 Jwt verification fails` (gRPC: `UNAUTHENTICATED`). A verified
//! token becomes the request's principal and claims, its payload and claims are
//! copied into headers as the rule asks, and the token's header is removed unless
//! `forwardOriginalToken`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use weft_authz::jwt::{Authenticator, CompiledRule, Location, Outcome, TokenSources};
use weft_telemetry::ResponseFlags;

use super::{Flow, Local};
use crate::jwks::RemoteJwks;
use crate::request::RequestCtx;

/// gRPC's UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: u8 = 16;

#[derive(Clone)]
pub struct Jwt {
    pub authn: Arc<Authenticator>,
    /// The keys fetched for the rules' `jwksUri`s.
    pub remote: Arc<RemoteJwks>,
    /// The headers the rules write (`outputPayloadToHeader`, `outputClaimToHeaders`):
    /// removed from every request first, so that the app never takes a client's own
    /// for a verified claim.
    output_headers: Arc<[HeaderName]>,
}

impl Jwt {
    pub fn new(authn: Arc<Authenticator>, remote: Arc<RemoteJwks>) -> Jwt {
        let mut output_headers: Vec<HeaderName> = Vec::new();
        for rule in &authn.rules {
            let written = rule.output_payload_to_header.iter().chain(rule.output_claim_to_headers.iter().map(|c| &c.header));
            output_headers.extend(written.cloned());
        }
        output_headers.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        output_headers.dedup();
        Jwt { authn, remote, output_headers: output_headers.into() }
    }

    pub fn on_request(&self, cx: &mut RequestCtx, head: &mut Parts) -> Flow {
        for name in self.output_headers.iter() {
            head.headers.remove(name);
        }
        let req = TokenSources { headers: &head.headers, query: head.uri.query() };
        let counters = &cx.conn.shared.metrics.counters;
        let (jwt, edits) = match self.authn.authenticate(&req, unix_now(), &*self.remote) {
            Outcome::NoToken => return Flow::Next,
            Outcome::Refused(e) => {
                counters.jwt_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = head.uri.path(), "JWT refused: {e}");
                let mut local = Local::new(StatusCode::UNAUTHORIZED, ResponseFlags::NONE, "Jwt verification fails");
                local.grpc = cx.grpc.then_some(GRPC_UNAUTHENTICATED);
                local.www_authenticate = Some(www_authenticate(head));
                return Flow::Reject(local);
            }
            Outcome::Verified { jwt, rule, location, payload } => {
                let edits = HeaderEdits::for_rule(rule, location, payload, &jwt.claims);
                (jwt, edits)
            }
        };
        counters.jwt_verified.fetch_add(1, Ordering::Relaxed);
        edits.apply(&mut head.headers);
        cx.filters.auth.get_or_insert_with(Default::default).jwt = Some(jwt);
        Flow::Next
    }
}

/// What a verified token changes in the request's headers.
struct HeaderEdits {
    remove: Option<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    fn for_rule(rule: &CompiledRule, location: &Location, payload: &str, claims: &Value) -> HeaderEdits {
        let remove = match location {
            Location::Header { name, .. } if !rule.forward_original_token => Some(name.clone()),
            _ => None,
        };
        let mut set = Vec::new();
        if let (Some(h), Ok(v)) = (&rule.output_payload_to_header, HeaderValue::from_str(payload)) {
            set.push((h.clone(), v));
        }
        for c in &rule.output_claim_to_headers {
            if let Some(v) = claim_value(claims, &c.claim) {
                set.push((c.header.clone(), v));
            }
        }
        HeaderEdits { remove, set }
    }

    fn apply(self, headers: &mut HeaderMap) {
        if let Some(name) = self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }
}

/// A claim as a header value: a string, number or boolean as written, a list of
/// those joined with `,` (as Envoy's `claim_to_headers`); anything else is skipped.
fn claim_value(claims: &Value, path: &[String]) -> Option<HeaderValue> {
    let mut v = claims;
    for key in path {
        v = v.get(key.as_str())?;
    }
    let text = match v {
        Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(","),
        other => scalar(other)?,
    };
    HeaderValue::from_str(&text).ok()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Envoy's challenge for a refused token: `Bearer realm="http://<host><path>",
/// error="invalid_token"` (without the realm when the request's host and path do not
/// make a header value).
fn www_authenticate(head: &Parts) -> HeaderValue {
    let host = head.uri.authority().map(|a| a.as_str()).or_else(|| head.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
    let realm = host.map(|h| format!("http://{h}{}", head.uri.path())).filter(|r| !r.contains(['"', '\\']));
    realm
        .and_then(|r| HeaderValue::from_str(&format!("Bearer realm=\"{r}\", error=\"invalid_token\"")).ok())
        .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_header_values_as_envoy_writes_them() {
        let claims = serde_json::json!({"sub": "alice", "n": 3, "ok": true, "groups": ["a", "b"], "nested": {"k": "v"}, "obj": {}});
        let at = |p: &str| claim_value(&claims, &p.split('.').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(at("sub").unwrap(), "alice");
        assert_eq!(at("n").unwrap(), "3");
        assert_eq!(at("ok").unwrap(), "true");
        assert_eq!(at("groups").unwrap(), "a,b");
        assert_eq!(at("nested.k").unwrap(), "v");
        assert!(at("obj").is_none());
        assert!(at("missing").is_none());
    }
}
