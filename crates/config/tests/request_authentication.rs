//! RequestAuthentication: `jwtRules` checked with field paths, and the rules that
//! apply to a workload merged on its inbound side.

use std::collections::BTreeMap;

use weft_config::{build_str, InboundSpec};

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fn ra(name: &str, extra: &str, rules: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{extra}  jwtRules:\n{rules}")
}

fn errors(text: &str) -> Vec<String> {
    let (_, _, d) = build_str("mesh.yaml", text);
    d.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn bad_jwt_rules_are_errors_with_field_paths() {
    let text = ra(
        "jwt",
        "",
        "  - {jwks: '{\"keys\": 1}'}\n  - {issuer: a, jwksUri: 'file:///etc/keys'}\n  - {issuer: b, jwksUri: 'https://keys.example/jwks', fromHeaders: [{name: 'bad name'}], outputClaimToHeaders: [{header: '', claim: sub}]}\n  - {issuer: c@example}\n  - {issuer: d, audiences: [''], presence: MANDATORY, spaceDelimitedClaims: ['', a..b]}\n",
    );
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.split(": ").nth(2).unwrap_or_default()).collect();
    assert_eq!(
        paths,
        [
            "spec.jwtRules[0].issuer",
            "spec.jwtRules[0].jwks",
            "spec.jwtRules[1].jwksUri",
            "spec.jwtRules[2].fromHeaders[0].name",
            "spec.jwtRules[2].outputClaimToHeaders[0].header",
            "spec.jwtRules[3].jwksUri",
            "spec.jwtRules[4].audiences[0]",
            "spec.jwtRules[4].spaceDelimitedClaims[0]",
            "spec.jwtRules[4].spaceDelimitedClaims[1]",
            "spec.jwtRules[4].presence",
        ],
        "{errs:#?}"
    );
    assert!(errs[5].contains("discover its keys"), "{}", errs[5]);
    // An issuer alone is fine: its keys are discovered (OpenID Connect), as Istio does.
    assert!(errors(&ra("ok", "", "  - {issuer: example.com}\n  - {issuer: 'https://accounts.example'}\n")).is_empty());
}

#[test]
fn the_rules_that_apply_to_the_workload_are_merged() {
    let text = [
        ra("all", "", &format!("  - {{issuer: one, jwks: '{JWKS}'}}\n")),
        ra("mine", "  selector: {matchLabels: {app: httpbin}}\n", &format!("  - {{issuer: two, jwks: '{JWKS}'}}\n")),
        ra("theirs", "  selector: {matchLabels: {app: other}}\n", &format!("  - {{issuer: three, jwks: '{JWKS}'}}\n")),
    ]
    .join("---\n");
    let (_, mut snap, d) = build_str("mesh.yaml", &text);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let spec = InboundSpec { app: "127.0.0.1:8080".parse().unwrap(), service: "httpbin".into(), namespace: "default".into() };
    snap.add_inbound(&spec, &BTreeMap::from([("app".to_owned(), "httpbin".to_owned())]));
    let authn = snap.inbound_request_authn.expect("rules apply");
    let issuers: Vec<&str> = authn.rules.iter().map(|r| r.issuer.as_str()).collect();
    assert_eq!(issuers, ["one", "two"]);

    let (_, mut snap, _) =
        build_str("mesh.yaml", &ra("theirs", "  selector: {matchLabels: {app: other}}\n", &format!("  - {{issuer: x, jwks: '{JWKS}'}}\n")));
    snap.add_inbound(&spec, &BTreeMap::new());
    assert!(snap.inbound_request_authn.is_none());
}
