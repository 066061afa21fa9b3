use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::testing::{jwks, TestKey};
use super::*;
use crate::spec::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication};

const ISS: &str = "testing@secure.istio.io";
/// 2026-11-29, the tests' "now".
const NOW: u64 = 1_795_900_000;

fn rule(jwks_json: &str) -> JwtRule {
    JwtRule { issuer: ISS.into(), jwks: Some(jwks_json.into()), ..Default::default() }
}

fn authn(rules: Vec<JwtRule>) -> Authenticator {
    compile(&RequestAuthentication { jwt_rules: rules, ..Default::default() }).expect("compiles")
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": ISS, "exp": NOW + 3600, "groups": ["group1"], "foo": "bar"})
}

fn verify(a: &Authenticator, token: &str) -> Result<crate::VerifiedJwt, JwtError> {
    a.verify(token, NOW, &())
}

#[test]
fn tokens_signed_by_each_supported_key_type_verify() {
    let keys = [TestKey::rsa("rsa"), TestKey::es256("p256"), TestKey::es384("p384"), TestKey::ed25519("ed")];
    let a = authn(vec![rule(&jwks(&keys.iter().collect::<Vec<_>>()))]);
    for k in &keys {
        let jwt = verify(&a, &k.sign(&claims())).unwrap_or_else(|e| panic!("{}: {e}", k.kid));
        assert_eq!(jwt.principal, "testing@secure.istio.io/testing@secure.istio.io");
        assert_eq!(jwt.claims["groups"], json!(["group1"]));
    }
}

#[test]
fn every_rsa_algorithm_verifies_with_one_rsa_key() {
    let k = TestKey::rsa("rsa");
    let a = authn(vec![rule(&jwks(&[&k]))]);
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let t = k.sign_with(&json!({"alg": alg, "kid": "rsa"}), &claims());
        assert!(verify(&a, &t).is_ok(), "{alg}");
    }
}

#[test]
fn without_kid_every_key_of_the_algorithms_type_is_tried() {
    let (other, signer) = (TestKey::rsa("a"), TestKey::rsa("b"));
    let a = authn(vec![rule(&jwks(&[&other, &signer]))]);
    let t = signer.sign_with(&json!({"alg": "RS256"}), &claims());
    assert!(verify(&a, &t).is_ok());
    // A kid names one key: the right signature under another kid fails.
    let t = signer.sign_with(&json!({"alg": "RS256", "kid": "a"}), &claims());
    assert_eq!(verify(&a, &t), Err(JwtError::BadSignature));
    let t = signer.sign_with(&json!({"alg": "RS256", "kid": "nope"}), &claims());
    assert_eq!(verify(&a, &t), Err(JwtError::NoMatchingKey));
    // A key without a kid is tried whatever kid the token names.
    let mut anonymous = signer.jwk();
    anonymous.as_object_mut().unwrap().remove("kid");
    let a = authn(vec![rule(&json!({"keys": [other.jwk(), anonymous]}).to_string())]);
    assert!(verify(&a, &t).is_ok());
}

#[test]
fn a_token_by_an_unknown_key_is_refused() {
    let (known, stranger) = (TestKey::rsa("k"), TestKey::rsa("k"));
    let a = authn(vec![rule(&jwks(&[&known]))]);
    assert_eq!(verify(&a, &stranger.sign(&claims())), Err(JwtError::BadSignature));
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let k = TestKey::es256("k");
    let a = authn(vec![rule(&jwks(&[&k]))]);
    // An EC key does not verify RS256 or ES384, whatever the signature.
    let t = k.sign_with(&json!({"alg": "RS256", "kid": "k"}), &claims());
    assert_eq!(verify(&a, &t), Err(JwtError::NoMatchingKey));
    let t = k.sign_with(&json!({"alg": "ES384", "kid": "k"}), &claims());
    assert_eq!(verify(&a, &t), Err(JwtError::NoMatchingKey));
}

#[test]
fn alg_none_and_hmac_are_refused() {
    let k = TestKey::rsa("k");
    let a = authn(vec![rule(&jwks(&[&k]))]);
    let good = k.sign(&claims());
    let payload = good.split('.').nth(1).unwrap();
    let b64 = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    for alg in ["none", "None", "HS256"] {
        let unsigned = format!("{}.{payload}.", b64(&json!({"alg": alg})));
        assert!(verify(&a, &unsigned).is_err(), "{alg} with no signature");
        let resigned = format!("{}.{payload}.{}", b64(&json!({"alg": alg})), good.rsplit('.').next().unwrap());
        assert!(verify(&a, &resigned).is_err(), "{alg} with another's signature");
    }
}

#[test]
fn exp_and_nbf_allow_sixty_seconds_of_skew() {
    let k = TestKey::es256("k");
    let a = authn(vec![rule(&jwks(&[&k]))]);
    let with = |extra: Value| {
        let mut c = claims();
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        k.sign(&c)
    };
    assert!(verify(&a, &with(json!({"exp": NOW - 60}))).is_ok(), "within the skew");
    assert_eq!(verify(&a, &with(json!({"exp": NOW - 61}))), Err(JwtError::Expired));
    assert!(verify(&a, &with(json!({"nbf": NOW + 60}))).is_ok());
    assert_eq!(verify(&a, &with(json!({"nbf": NOW + 61}))), Err(JwtError::NotYetValid));
    assert_eq!(verify(&a, &with(json!({"exp": "tomorrow"}))), Err(JwtError::BadClaim));
    // The time is the caller's: the same token expires when the clock moves on.
    let t = with(json!({"exp": NOW + 10}));
    assert!(a.verify(&t, NOW, &()).is_ok());
    assert_eq!(a.verify(&t, NOW + 71, &()), Err(JwtError::Expired));
}

#[test]
fn audiences_when_given_must_meet_the_tokens_aud() {
    let k = TestKey::es256("k");
    let mut r = rule(&jwks(&[&k]));
    r.audiences = vec!["bookstore.example".into(), "other".into()];
    let a = authn(vec![r]);
    let with_aud = |aud: Value| {
        let mut c = claims();
        c["aud"] = aud;
        k.sign(&c)
    };
    assert!(verify(&a, &with_aud(json!("other"))).is_ok());
    assert!(verify(&a, &with_aud(json!(["x", "bookstore.example"]))).is_ok());
    assert_eq!(verify(&a, &with_aud(json!("wrong"))), Err(JwtError::Audience));
    assert_eq!(verify(&a, &with_aud(json!(["x", "y"]))), Err(JwtError::Audience));
    assert_eq!(verify(&a, &k.sign(&claims())), Err(JwtError::Audience), "no aud at all");
    // Without audiences, any aud passes.
    let open = authn(vec![rule(&jwks(&[&k]))]);
    assert!(verify(&open, &with_aud(json!("wrong"))).is_ok());
}

#[test]
fn the_tokens_issuer_picks_the_rule() {
    let (k1, k2) = (TestKey::es256("one"), TestKey::rsa("two"));
    let second = JwtRule { issuer: "https://issuer.two".into(), jwks: Some(jwks(&[&k2])), ..Default::default() };
    let a = authn(vec![rule(&jwks(&[&k1])), second]);
    let mut c = claims();
    c["iss"] = json!("https://issuer.two");
    c["sub"] = json!("alice");
    assert_eq!(verify(&a, &k2.sign(&c)).unwrap().principal, "https://issuer.two/alice");
    // Signed by issuer one's key but claiming issuer two: issuer two's keys decide.
    assert!(verify(&a, &k1.sign(&c)).is_err());
    c["iss"] = json!("https://evil.example");
    assert_eq!(verify(&a, &k2.sign(&c)), Err(JwtError::UnknownIssuer));
}

#[test]
fn malformed_tokens_are_refused_without_panic() {
    let k = TestKey::rsa("k");
    let a = authn(vec![rule(&jwks(&[&k]))]);
    let good = k.sign(&claims());
    let header_only = good.split('.').next().unwrap().to_owned();
    let oversized = format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES));
    let two_parts = good.rsplit_once('.').unwrap().0.to_owned();
    let four_parts = format!("{good}.x");
    let tampered = good.replacen('.', ".e30", 1);
    for (name, t) in [
        ("empty", ""),
        ("garbage", "garbage"),
        ("dots", ".."),
        ("header only", &header_only),
        ("two parts", &two_parts),
        ("four parts", &four_parts),
        ("tampered payload", &tampered),
        ("oversized", &oversized),
        ("not base64", "!!!.###.$$$"),
    ] {
        assert!(verify(&a, t).is_err(), "{name} passed");
    }
    assert_eq!(verify(&a, &oversized), Err(JwtError::TooLarge));
}

#[test]
fn remote_keys_are_used_once_fetched() {
    struct Fetched(Arc<KeySet>);
    impl RemoteKeys for Fetched {
        fn keys(&self, uri: &str) -> Option<Arc<KeySet>> {
            (uri == "https://example.com/jwks").then(|| self.0.clone())
        }
    }
    let k = TestKey::es256("k");
    let r = JwtRule { issuer: ISS.into(), jwks_uri: Some("https://example.com/jwks".into()), ..Default::default() };
    let a = authn(vec![r]);
    let t = k.sign(&claims());
    assert_eq!(a.verify(&t, NOW, &()), Err(JwtError::KeysNotFetched));
    let cache = JwksCache::default();
    assert!(cache.update("{not json").is_err());
    assert!(cache.load().is_empty());
    assert_eq!(cache.update(&jwks(&[&k])), Ok(1));
    assert!(a.verify(&t, NOW, &Fetched(cache.load())).is_ok());
    // A bad refresh keeps the keys that work.
    assert!(cache.update(r#"{"keys": []}"#).is_err());
    assert!(a.verify(&t, NOW, &Fetched(cache.load())).is_ok());
}

/// A verified token's signature is remembered by its key set: presented again, it
/// passes without a new verification — but its times and audiences are checked every
/// time, a token one byte different is verified afresh, and new keys remember nothing.
#[test]
fn a_verified_signature_is_remembered_by_its_keys_only() {
    struct Fetched(Arc<KeySet>);
    impl RemoteKeys for Fetched {
        fn keys(&self, _: &str) -> Option<Arc<KeySet>> {
            Some(self.0.clone())
        }
    }
    let (k, other) = (TestKey::rsa("k"), TestKey::rsa("other"));
    let r = JwtRule { issuer: ISS.into(), jwks_uri: Some("https://example.com/jwks".into()), ..Default::default() };
    let a = authn(vec![r]);
    let cache = JwksCache::default();
    cache.update(&jwks(&[&k])).unwrap();
    let t = k.sign(&claims());
    assert!(a.verify(&t, NOW, &Fetched(cache.load())).is_ok());
    assert!(cache.load().verified.contains(&t), "remembered");
    assert!(a.verify(&t, NOW, &Fetched(cache.load())).is_ok(), "again, from memory");
    assert_eq!(a.verify(&t, NOW + 7200, &Fetched(cache.load())), Err(JwtError::Expired), "exp still checked");
    // The same claims and header with another signature: not the remembered token.
    let (signed, _) = t.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", other.sign(&claims()).rsplit_once('.').unwrap().1);
    assert_eq!(a.verify(&forged, NOW, &Fetched(cache.load())), Err(JwtError::BadSignature));
    // The key rotated away: the token is checked against the new keys, and fails.
    cache.update(&jwks(&[&other])).unwrap();
    assert!(!cache.load().verified.contains(&t));
    assert!(a.verify(&t, NOW, &Fetched(cache.load())).is_err());
    // Audiences are per rule and checked every time.
    let strict = authn(vec![JwtRule { audiences: vec!["bookinfo".into()], ..rule(&jwks(&[&k])) }]);
    assert_eq!(strict.verify(&t, NOW, &()), Err(JwtError::Audience));
}

#[test]
fn the_token_is_found_where_the_rule_says() {
    let k = TestKey::es256("k");
    let t = k.sign(&claims());
    let default_rule = authn(vec![rule(&jwks(&[&k]))]);
    let mut custom = rule(&jwks(&[&k]));
    custom.from_headers = vec![JwtHeader { name: "x-jwt-assertion".into(), prefix: None }];
    custom.from_cookies = vec!["session".into()];
    let custom = authn(vec![custom]);
    let found = |a: &Authenticator, headers: &[(&'static str, String)], query: Option<&str>| {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        let req = TokenSources { headers: &h, query };
        match a.authenticate(&req, NOW, &()) {
            Outcome::NoToken => "none",
            Outcome::Verified { .. } => "verified",
            Outcome::Refused(_) => "refused",
        }
    };
    assert_eq!(found(&default_rule, &[("authorization", format!("Bearer {t}"))], None), "verified");
    assert_eq!(found(&default_rule, &[("authorization", format!("bearer {t}"))], None), "verified");
    assert_eq!(found(&default_rule, &[], Some(&format!("a=1&access_token={t}"))), "verified");
    assert_eq!(found(&default_rule, &[("authorization", "Basic dXNlcjpwdw==".into())], None), "none");
    assert_eq!(found(&default_rule, &[("authorization", "Bearer junk".into())], None), "refused");
    assert_eq!(found(&default_rule, &[], None), "none");
    assert_eq!(found(&custom, &[("x-jwt-assertion", t.clone())], None), "verified");
    assert_eq!(found(&custom, &[("cookie", format!("a=b; session={t}"))], None), "verified");
    assert_eq!(found(&custom, &[("authorization", format!("Bearer {t}"))], None), "none", "defaults are off");
}

#[test]
fn rules_are_checked_with_field_paths() {
    let errs = |r: JwtRule| compile(&RequestAuthentication { jwt_rules: vec![rule("{}"), r], ..Default::default() }).unwrap_err();
    let paths = |r: JwtRule| errs(r).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    let k = TestKey::es256("k");
    let ok = rule(&jwks(&[&k]));
    assert!(errs(ok.clone()).iter().all(|(p, _)| p.starts_with("spec.jwtRules[0].")), "rule 0's jwks {{}} is not a JWKS");
    let fixed = |r: JwtRule| {
        compile(&RequestAuthentication { jwt_rules: vec![r], ..Default::default() })
            .unwrap_err()
            .into_iter()
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(ok.clone())[0], "spec.jwtRules[0].jwks");
    assert_eq!(fixed(JwtRule { issuer: String::new(), ..ok.clone() }), ["spec.jwtRules[0].issuer"]);
    assert_eq!(fixed(JwtRule { jwks: None, ..ok.clone() }), ["spec.jwtRules[0].jwksUri"]);
    assert_eq!(fixed(JwtRule { jwks: None, jwks_uri: Some("ftp://x/keys".into()), ..ok.clone() }), ["spec.jwtRules[0].jwksUri"]);
    assert_eq!(
        fixed(JwtRule { jwks: None, jwks_uri: Some("https://x/keys".into()), timeout: Some("soon".into()), ..ok.clone() }),
        ["spec.jwtRules[0].timeout"]
    );
    let bad_headers = JwtRule {
        from_headers: vec![JwtHeader { name: "bad header".into(), prefix: None }],
        output_claim_to_headers: vec![ClaimToHeader { header: "x:y".into(), claim: "sub".into() }],
        output_payload_to_header: Some(String::new()),
        from_params: vec![String::new()],
        ..ok.clone()
    };
    assert_eq!(
        fixed(bad_headers),
        [
            "spec.jwtRules[0].fromHeaders[0].name",
            "spec.jwtRules[0].fromParams[0]",
            "spec.jwtRules[0].outputPayloadToHeader",
            "spec.jwtRules[0].outputClaimToHeaders[0].header"
        ]
    );
    // jwksUri is checked even beside an inline jwks (which is the one used).
    assert_eq!(fixed(JwtRule { jwks_uri: Some("keys.json".into()), ..ok.clone() }), ["spec.jwtRules[0].jwksUri"]);
    let both = authn(vec![JwtRule { jwks_uri: Some("https://x/keys".into()), ..ok.clone() }]);
    assert_eq!(both.remote_uris().count(), 0);
    let half_second = authn(vec![JwtRule { jwks: None, jwks_uri: Some("https://x/k".into()), timeout: Some("0.5s".into()), ..ok.clone() }]);
    assert_eq!(half_second.remote_uris().next().unwrap().1, std::time::Duration::from_millis(500));
    // A jwksUri that is fine compiles, to be fetched.
    let remote = authn(vec![JwtRule { jwks: None, jwks_uri: Some("http://keys.example:8080/jwks".into()), ..ok }]);
    assert_eq!(remote.remote_uris().collect::<Vec<_>>(), [("http://keys.example:8080/jwks", std::time::Duration::from_secs(5))]);
}

#[test]
fn a_jwks_keeps_its_usable_keys() {
    let k = TestKey::ed25519("ed");
    let mixed = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "weird", "alg": "XX999"},
        k.jwk(),
    ]});
    assert_eq!(KeySet::parse(&mixed.to_string()).unwrap().keys.len(), 1);
    assert!(KeySet::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err(), "HMAC keys are not used");
    assert!(KeySet::parse("[]").is_err());
}

/// `PROPTEST_CASES` (the long run, `scripts/fuzz.sh`), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One key, its authenticator and a valid token, made once for every case.
fn fixture() -> &'static (Authenticator, String) {
    static F: std::sync::OnceLock<(Authenticator, String)> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let k = TestKey::es256("k");
        (authn(vec![rule(&jwks(&[&k]))]), k.sign(&claims()))
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_jwt_verify_hostile(token in "[A-Za-z0-9_.=+/-]{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (a, _) = fixture();
        prop_assert!(verify(a, &token).is_err());
        let lossy = String::from_utf8_lossy(&raw);
        prop_assert!(verify(a, &lossy).is_err());
        // Valid base64url parts around arbitrary bytes.
        let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let crafted = format!("{}.{}.{}", b64(&raw), b64(token.as_bytes()), b64(&raw));
        prop_assert!(verify(a, &crafted).is_err());
    }

    /// A valid token with characters replaced: refused unless nothing changed.
    #[test]
    fn fuzz_jwt_verify_mutated(edits in proptest::collection::vec((any::<usize>(), "[A-Za-z0-9_.=-]"), 1..4)) {
        let (a, good) = fixture();
        let mut t = good.clone();
        for (at, with) in &edits {
            let i = at % t.len();
            t.replace_range(i..i + 1, with);
        }
        prop_assert_eq!(verify(a, &t).is_ok(), t == *good);
    }
}

#[test]
fn presence_required_refuses_a_request_without_a_token() {
    let k = TestKey::es256("k");
    let no_token = HeaderMap::new();
    let req = TokenSources { headers: &no_token, query: None };
    let optional = authn(vec![rule(&jwks(&[&k]))]);
    assert!(matches!(optional.authenticate(&req, NOW, &()), Outcome::NoToken));
    let required = authn(vec![JwtRule { presence: Some("REQUIRED".into()), ..rule(&jwks(&[&k])) }]);
    assert!(matches!(required.authenticate(&req, NOW, &()), Outcome::Refused(JwtError::Missing)));
    // With a good token it verifies as before.
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_str(&format!("Bearer {}", k.sign(&claims()))).unwrap());
    assert!(matches!(required.authenticate(&TokenSources { headers: &h, query: None }, NOW, &()), Outcome::Verified { .. }));
}

#[test]
fn space_delimited_claims_become_lists() {
    let k = TestKey::es256("k");
    let r =
        JwtRule { space_delimited_claims: vec!["scope".into(), "provider.login.scope".into(), "dotted.name".into()], ..rule(&jwks(&[&k])) };
    let a = authn(vec![r]);
    let mut c = claims();
    c["scope"] = json!("read  write admin");
    c["provider"] = json!({"login": {"scope": "openid email"}});
    c["dotted.name"] = json!("a b");
    c["other"] = json!("x y");
    let jwt = verify(&a, &k.sign(&c)).unwrap();
    assert_eq!(jwt.claims["scope"], json!(["read", "write", "admin"]));
    assert_eq!(jwt.claims["provider"]["login"]["scope"], json!(["openid", "email"]));
    assert_eq!(jwt.claims["dotted.name"], json!(["a", "b"]));
    assert_eq!(jwt.claims["other"], json!("x y"), "only the claims named are split");
}

#[test]
fn an_issuer_or_uri_with_a_port_out_of_range_is_refused() {
    for r in [
        JwtRule { issuer: "idp.example.com:99999".into(), ..Default::default() },
        JwtRule { issuer: "x".into(), jwks_uri: Some("https://idp.example.com:0/keys".into()), ..Default::default() },
        JwtRule { issuer: "x".into(), jwks_uri: Some("https://idp.example.com:70000/keys".into()), ..Default::default() },
    ] {
        let e = compile(&RequestAuthentication { jwt_rules: vec![r.clone()], ..Default::default() }).unwrap_err();
        assert!(e.iter().any(|(p, _)| p == "spec.jwtRules[0].jwksUri"), "{r:?}: {e:?}");
    }
}
