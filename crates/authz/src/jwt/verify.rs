//! A request's token found and checked against a workload's rules.

use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::Value;

use super::compile::{Authenticator, CompiledRule, KeySource};
use super::keys::KeySet;
use super::locate::{Location, TokenSources};
use super::JwtError;
use crate::attrs::VerifiedJwt;

/// The longest token weft reads (a larger one is refused unread).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Clock skew allowed on `exp` and `nbf` (Envoy's default).
const CLOCK_SKEW_SECS: u64 = 60;

/// base64url, with or without padding (JWTs have none; some encoders add it).
const B64URL: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// The keys fetched for `jwksUri`s (the proxy's cache); `None`: not fetched yet.
pub trait RemoteKeys {
    fn keys(&self, uri: &str) -> Option<Arc<KeySet>>;
}

/// No remote keys at all (inline `jwks` only, and tests).
impl RemoteKeys for () {
    fn keys(&self, _: &str) -> Option<Arc<KeySet>> {
        None
    }
}

/// What became of a request's token.
#[derive(Debug)]
pub enum Outcome<'r, 'q> {
    /// The request carries no token where any rule looks.
    NoToken,
    /// Verified by `rule`, found at `location`; `payload` is the token's payload
    /// segment as sent (base64url), for `outputPayloadToHeader`.
    Verified {
        jwt: VerifiedJwt,
        rule: &'r CompiledRule,
        location: &'r Location,
        payload: &'q str,
    },
    Refused(JwtError),
}

impl Authenticator {
    /// Finds the first token where a rule looks and verifies it at time `now`
    /// (seconds since the Unix epoch).
    pub fn authenticate<'r, 'q>(&'r self, req: &TokenSources<'q>, now: u64, remote: &dyn RemoteKeys) -> Outcome<'r, 'q> {
        let found = self.rules.iter().flat_map(|r| r.locations.iter()).find_map(|loc| Some((loc, loc.find(req)?)));
        let Some((location, token)) = found else {
            // (Istio's `presence: REQUIRED` on any rule: no token is a 401.)
            if self.rules.iter().any(|r| r.required) {
                return Outcome::Refused(JwtError::Missing);
            }
            return Outcome::NoToken;
        };
        let candidates = self.rules.iter().filter(|r| r.locations.contains(location));
        match verify_any(token, candidates.map(|r| &**r), now, remote) {
            Ok((jwt, rule)) => {
                let payload = token.split('.').nth(1).unwrap_or_default();
                Outcome::Verified { jwt, rule, location, payload }
            }
            Err(e) => Outcome::Refused(e),
        }
    }

    /// Verifies `token` against every rule (whatever its locations).
    pub fn verify(&self, token: &str, now: u64, remote: &dyn RemoteKeys) -> Result<VerifiedJwt, JwtError> {
        verify_any(token, self.rules.iter().map(|r| &**r), now, remote).map(|(jwt, _)| jwt)
    }
}

/// The parts of a compact JWS, decoded as far as choosing a rule needs.
struct Parsed<'t> {
    /// The whole compact token.
    token: &'t str,
    signed: &'t str,
    signature: &'t str,
    alg: Algorithm,
    kid: Option<String>,
    claims: Value,
}

fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (_, payload) = signed.split_once('.').ok_or(JwtError::Malformed)?;
    if payload.contains('.') || signature.is_empty() {
        return Err(JwtError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::BadHeader)?;
    if header.alg.family() == AlgorithmFamily::Hmac {
        return Err(JwtError::BadHeader);
    }
    let bytes = B64URL.decode(payload).map_err(|_| JwtError::BadPayload)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::BadPayload)?;
    if !claims.is_object() {
        return Err(JwtError::BadPayload);
    }
    Ok(Parsed { token, signed, signature, alg: header.alg, kid: header.kid, claims })
}

fn verify_any<'r>(
    token: &str,
    rules: impl Iterator<Item = &'r CompiledRule>,
    now: u64,
    remote: &dyn RemoteKeys,
) -> Result<(VerifiedJwt, &'r CompiledRule), JwtError> {
    let parsed = parse(token)?;
    let iss = parsed.claims.get("iss").and_then(Value::as_str).ok_or(JwtError::UnknownIssuer)?;
    let mut last = JwtError::UnknownIssuer;
    for rule in rules.filter(|r| r.issuer == iss) {
        match verify_with(&parsed, rule, now, remote) {
            Ok(()) => {
                let sub = parsed.claims.get("sub").and_then(Value::as_str).unwrap_or_default();
                let principal = format!("{iss}/{sub}");
                let mut claims = parsed.claims;
                split_space_delimited(&mut claims, &rule.space_delimited);
                return Ok((VerifiedJwt { principal, claims }, rule));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn verify_with(t: &Parsed<'_>, rule: &CompiledRule, now: u64, remote: &dyn RemoteKeys) -> Result<(), JwtError> {
    let fetched;
    let keys = match &rule.keys {
        KeySource::Inline(k) => k,
        KeySource::Remote { uri, .. } => {
            fetched = remote.keys(uri).filter(|k| !k.is_empty()).ok_or(JwtError::KeysNotFetched)?;
            &*fetched
        }
    };
    check_signature(t, keys)?;
    check_times(&t.claims, now)?;
    check_audience(&t.claims, &rule.audiences)
}

fn check_signature(t: &Parsed<'_>, keys: &KeySet) -> Result<(), JwtError> {
    if keys.verified.contains(t.token) {
        return Ok(());
    }
    let mut any = false;
    for key in keys.candidates(t.kid.as_deref(), t.alg) {
        any = true;
        if let Ok(true) = jsonwebtoken::crypto::verify(t.signature, t.signed.as_bytes(), &key.key, t.alg) {
            keys.verified.insert(t.token);
            return Ok(());
        }
    }
    Err(if any { JwtError::BadSignature } else { JwtError::NoMatchingKey })
}

fn check_times(claims: &Value, now: u64) -> Result<(), JwtError> {
    if let Some(exp) = numeric_claim(claims, "exp")? {
        if now > exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = numeric_claim(claims, "nbf")? {
        if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(())
}

/// A NumericDate claim (seconds; a fraction is cut, a negative one is 0).
fn numeric_claim(claims: &Value, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)).unwrap_or_default())),
        Some(_) => Err(JwtError::BadClaim),
    }
}

/// With `audiences` given, the token's `aud` (a string or a list) must hold one.
fn check_audience(claims: &Value, audiences: &[String]) -> Result<(), JwtError> {
    if audiences.is_empty() {
        return Ok(());
    }
    let accepted = |a: &Value| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a));
    match claims.get("aud") {
        Some(aud @ Value::String(_)) => accepted(aud).then_some(()).ok_or(JwtError::Audience),
        Some(Value::Array(list)) => list.iter().any(accepted).then_some(()).ok_or(JwtError::Audience),
        None => Err(JwtError::Audience),
        Some(_) => Err(JwtError::BadClaim),
    }
}

/// `spaceDelimitedClaims`: each named claim holding a string becomes the list of its
/// space-separated words (a claim literally named `a.b` first, else `b` inside `a`).
fn split_space_delimited(claims: &mut Value, paths: &[Vec<String>]) {
    for path in paths {
        let literal = path.join(".");
        let slot = match claims.get(&literal) {
            Some(_) => claims.get_mut(&literal),
            None => path.iter().try_fold(&mut *claims, |v, k| v.get_mut(k)),
        };
        if let Some(v) = slot {
            if let Some(s) = v.as_str() {
                *v = Value::Array(s.split_whitespace().map(|w| Value::String(w.to_owned())).collect());
            }
        }
    }
}
