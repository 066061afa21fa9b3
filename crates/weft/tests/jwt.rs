//! RequestAuthentication with real processes: a `weft proxy` sidecar whose keys come
//! from a `jwksUri` served by this test, tokens signed here, curl as the caller; and
//! `weft validate` on hostile `jwtRules`.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use weft_authz::jwt::testing::{jwks, TestKey};

const ISS: &str = "testing@secure.istio.io";

/// Serves `body` as the answer to every request, on a thread of its own; the port.
fn jwks_server(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut sock in listener.incoming().flatten() {
            let mut buf = [0; 4096];
            let _ = sock.read(&mut buf);
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = sock.write_all(resp.as_bytes());
        }
    });
    port
}

fn config(jwks_port: u16) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: "{ISS}"
    jwksUri: "http://127.0.0.1:{jwks_port}/jwks.json"
    outputClaimToHeaders: [{{header: x-jwt-groups, claim: groups}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISS}/{ISS}"]}}}}]
"#
    )
}

#[test]
fn a_sidecar_fetches_the_jwks_and_checks_tokens() {
    let key = TestKey::rsa("rsa-1");
    let port = jwks_server(jwks(&[&key]));
    let app = backend("httpbin", &[]);
    let cfg = temp_dir().join("jwt.yaml");
    std::fs::write(&cfg, config(port)).unwrap();
    let app_addr = app.addr.to_string();
    let p = spawn(&[
        "proxy",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--inbound",
        "127.0.0.1:0",
        "--app",
        &app_addr,
        "--service",
        "httpbin",
        "--namespace",
        "foo",
        "--label",
        "app=httpbin",
    ]);
    let inbound = p.inbound().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = key.sign(&json!({"iss": ISS, "sub": ISS, "exp": now + 3600, "groups": ["group1"]}));
    let call = |auth: Option<&str>| {
        let mut args = vec!["-s".to_owned(), "-i".to_owned()];
        if let Some(t) = auth {
            args.extend(["-H".to_owned(), format!("Authorization: Bearer {t}")]);
        }
        args.push(format!("http://{inbound}/headers"));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).1
    };
    // The keys are fetched at start, from the config the proxy was started with.
    wait_until("a token accepted", || call(Some(&token)).starts_with("HTTP/1.1 200"));
    let out = call(Some(&token));
    let echo: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("{}")).unwrap();
    assert_eq!(echo["headers"]["x-jwt-groups"], "group1", "{echo:#}");
    assert!(echo["headers"].get("authorization").is_none(), "the token is not forwarded: {echo:#}");
    let out = call(None);
    assert!(out.starts_with("HTTP/1.1 403") && out.ends_with("RBAC: access denied"), "{out}");
    let out = call(Some("a.b.c"));
    assert!(out.starts_with("HTTP/1.1 401") && out.ends_with("Jwt verification fails"), "{out}");
}

#[test]
fn validate_refuses_hostile_jwt_rules_with_field_paths() {
    let bad = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: bad, namespace: foo}
spec:
  jwtRules:
  - jwks: "{not json"
    fromHeaders: [{name: "x y"}]
  - issuer: b@example
  - issuer: c
    jwksUri: "ftp://keys.example/jwks"
"#;
    let f = temp_dir().join("bad-ra.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = Command::new(weft()).args(["validate", "--file", f.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for path in [
        "spec.jwtRules[0].issuer",
        "spec.jwtRules[0].jwks",
        "spec.jwtRules[0].fromHeaders[0].name",
        "spec.jwtRules[1].jwksUri",
        "spec.jwtRules[2].jwksUri",
    ] {
        assert!(text.contains(path), "{path} in:\n{text}");
    }
}
