//! AuthorizationPolicy with real processes: Istio's external authorization task
//! (a CUSTOM policy and its `envoyExtAuthzHttp` provider, declared here as an
//! `ExtensionProvider`) in front of a sidecar's app, the authorizer a separate process
//! behaving as Istio's ext-authz sample; and `weft validate` on hostile policies.

mod common;
use common::*;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// The sample authorizer, killed on drop.
struct Authorizer(Child, u16);

impl Drop for Authorizer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn authorizer() -> Authorizer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ext_authz_server.py");
    let mut child = Command::new("python3").arg(script).stdout(Stdio::piped()).spawn().expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("ready ").and_then(|p| p.parse().ok()).expect("ready <port>");
    Authorizer(child, port)
}

/// Istio's task YAML for the provider and the policy (the provider as a resource).
fn ext_authz_config(authz_port: u16, fail_open: bool) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: foo}}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {authz_port}}}}}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: ExtensionProvider
metadata: {{name: sample-ext-authz-http}}
spec:
  envoyExtAuthzHttp:
    service: "ext-authz.foo.svc.cluster.local"
    port: "8000"
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result", "x-ext-authz-seen"]
    failOpen: {fail_open}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-http
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#
    )
}

fn httpbin_sidecar(config: &str, app: &Proc) -> Proxy {
    let cfg = temp_dir().join("authz.yaml");
    std::fs::write(&cfg, config).unwrap();
    let app_addr = app.addr.to_string();
    let args =
        ["proxy", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0"];
    let rest = ["--service", "httpbin", "--namespace", "foo", "--label", "app=httpbin"];
    let p = spawn(&[&args[..], &["--app", app_addr.as_str()], &rest[..]].concat());
    Proxy { p, cfg }
}

#[test]
fn a_custom_policy_asks_the_external_authorizer() {
    let authz = authorizer();
    let app = backend("httpbin", &[]);
    let p = httpbin_sidecar(&ext_authz_config(authz.1, false), &app);
    let inbound = p.p.inbound().unwrap();
    let call = |path: &str, header: &str| curl(&["-s", "-i", "-H", header, "-H", "cookie: secret=1", &format!("http://{inbound}{path}")]);
    // Denied: the authorizer's status, body and the chosen header come back as it sent them.
    let (_, out, _) = call("/headers", "x-ext-authz: deny");
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.ends_with("denied by ext_authz for not found header `x-ext-authz: allow` in the request"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-ext-authz-check-result: denied"), "{out}");
    // Allowed: the app answers, and sees the headers the authorizer added — which show
    // that the check carried the chosen header and not the cookie.
    let (_, out, _) = call("/headers", "x-ext-authz: allow");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let echo: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("{}")).unwrap();
    assert_eq!(echo["headers"]["x-ext-authz-check-result"], "allowed", "{echo:#}");
    let seen = echo["headers"]["x-ext-authz-seen"].as_str().unwrap_or_default();
    assert!(seen.contains("x-ext-authz") && !seen.contains("cookie"), "{seen}");
    // Paths the policy does not name are not checked.
    let (_, out, _) = call("/ip", "x-ext-authz: deny");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The authorizer gone: fail closed (403, flag UAEX)...
    drop(authz);
    let (_, out, _) = call("/headers", "x-ext-authz: allow");
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let metrics = p.admin("/metrics");
    assert!(metric_sum(&metrics, "istio_requests_total", &["response_flags=\"UAEX\""]) >= 2.0, "{metrics}");
}

#[test]
fn fail_open_lets_requests_through_when_the_authorizer_is_gone() {
    let gone = authorizer();
    let port = gone.1;
    drop(gone);
    let app = backend("httpbin", &[]);
    let p = httpbin_sidecar(&ext_authz_config(port, true), &app);
    let inbound = p.p.inbound().unwrap();
    let (_, out, _) = curl(&["-s", "-i", &format!("http://{inbound}/headers")]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn validate_refuses_hostile_policies_with_field_paths() {
    let bad = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  action: DENY
  provider: {name: sample-ext-authz-http}
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/33"]}}]
    to: [{operation: {paths: ["/a/{**}/b"]}}]
    when: [{key: "request.headers[x\ny]", values: ["v"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: both, namespace: foo}
spec:
  selector: {matchLabels: {app: x}}
  targetRefs: [{kind: Service, name: x}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom-nowhere, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: nobody}
  rules: [{}]
"#;
    let f = temp_dir().join("bad.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = Command::new(weft()).args(["validate", "--file", f.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for path in [
        "spec.provider",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "spec.rules[0].to[0].operation.paths[0]",
        "spec.rules[0].when[0].key",
        "spec.selector",
        "spec.provider.name",
    ] {
        assert!(text.contains(path), "{path} in:\n{text}");
    }
    assert!(text.contains("no ExtensionProvider named \"nobody\""), "{text}");
}
