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
    // An answer far past 64 KiB is not read whole: the check fails, closed, and none of
    // it reaches the client.
    let (_, out, _) = call("/headers", "x-ext-authz: huge");
    assert!(out.starts_with("HTTP/1.1 403") && out.len() < 4096, "{} bytes: {}", out.len(), &out[..out.len().min(300)]);
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
fn xff_trusted_hops_out_of_range_is_refused_at_start() {
    let out = Command::new(weft()).args(["proxy", "--listen", "127.0.0.1:0", "--xff-trusted-hops", "33"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("--xff-trusted-hops"), "{text}");
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
    to: [{operation: {paths: ["/a/{**}/{*}"]}}]
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

fn workload_token(cp: &Plane, ns: &str, sa: &str) -> std::path::PathBuf {
    let out = cp.weft(&["token", "create", "--namespace", ns, "--service-account", sa]);
    assert!(out.status.success(), "{}", text(&out));
    let f = temp_dir().join(format!("{ns}-{sa}.token"));
    std::fs::write(&f, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    f
}

/// A sidecar following `cp` as `sa` in namespace foo; with `app`, in front of it.
fn sidecar(cp: &Plane, sa: &str, app: Option<&Proc>) -> Proxy {
    let token = workload_token(cp, "foo", sa);
    let (url, ca, app_addr) = (cp.url(), cp.ca_file().to_str().unwrap().to_owned(), app.map(|a| a.addr.to_string()));
    let node = format!("{sa}-1");
    let label = format!("app={sa}");
    let mut args = vec!["proxy", "--control-plane", &url, "--ca-file", &ca, "--token-file", token.to_str().unwrap(), "--node", &node];
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--service",
        sa,
        "--service-account",
        sa,
        "--namespace",
        "foo",
        "--label",
        &label,
    ]);
    if let Some(a) = &app_addr {
        args.extend(["--inbound", "127.0.0.1:0", "--app", a]);
    }
    let p = Proxy { p: spawn(&args), cfg: std::path::PathBuf::new() };
    if app.is_some() {
        let inbound = p.p.inbound().unwrap().to_string();
        let out = cp.weft_as(&token, &["register", "--service", sa, "--address", &inbound]);
        assert!(out.status.success(), "{}", text(&out));
    }
    p
}

/// README's worked example, unchanged but for the jwksUri (served here): sleep may GET
/// httpbin's /api/* with a JWT from testing@secure.istio.io, and nobody may do anything
/// else — through real sidecars with mTLS identities from the control plane.
#[test]
fn the_readme_example_lets_sleep_get_the_api_with_a_jwt_and_nobody_else() {
    use weft_authz::jwt::testing::{jwks, TestKey};
    let key = TestKey::rsa("readme");
    let jwks_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = jwks(&[&key]);
        std::thread::spawn(move || {
            for mut sock in listener.incoming().flatten() {
                let mut buf = [0; 4096];
                let _ = std::io::Read::read(&mut sock, &mut buf);
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = std::io::Write::write_all(&mut sock, resp.as_bytes());
            }
        });
        port
    };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("kind: RequestAuthentication\nmetadata: {name: httpbin-jwt").expect("the example in README");
    let yaml = &readme[readme[..start].rfind("```yaml\n").unwrap() + 8..];
    let yaml = &yaml[..yaml.find("```").unwrap()];
    let yaml = yaml.replace(
        "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json",
        &format!("http://127.0.0.1:{jwks_port}/jwks.json"),
    );
    let strict = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    let cp = plane();
    let out = cp.apply("example.yaml", &format!("{yaml}{strict}"));
    assert!(out.status.success(), "{}", text(&out));
    let app = backend("httpbin", &[]);
    let httpbin = sidecar(&cp, "httpbin", Some(&app));
    let sleep = sidecar(&cp, "sleep", None);
    let other = sidecar(&cp, "other", None);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = key.sign(&serde_json::json!({"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io", "exp": now + 3600}));
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let mut c = Client::connect(sleep.addr());
    let mut last = String::new();
    let reached = (0..100).any(|_| {
        let r = c.get("httpbin", "/api/status", &auth);
        last = format!("{} {}", r.status, r.text());
        std::thread::sleep(std::time::Duration::from_millis(100));
        r.status == 200
    });
    assert!(reached, "sleep never reached httpbin's /api/ with its token: {last}\n{}", httpbin.p.log_text());
    assert_eq!(c.get("httpbin", "/api/status", &auth).backend(), "httpbin");
    let r = c.get("httpbin", "/api/status", &[]);
    assert_eq!((r.status, r.text()), (403, "RBAC: access denied".to_owned()), "no token");
    let r = c.get("httpbin", "/api/status", &[("authorization", "Bearer a.b.c")]);
    assert_eq!((r.status, r.text()), (401, "Jwt verification fails".to_owned()));
    let stranger = TestKey::rsa("readme").sign(&serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "exp": now + 3600}));
    let r = c.get("httpbin", "/api/status", &[("authorization", &format!("Bearer {stranger}"))]);
    assert_eq!(r.status, 401, "a token signed by another key with the same kid");
    assert_eq!(c.request("POST", "httpbin", "/api/status", &auth, b"x").status, 403);
    assert_eq!(c.get("httpbin", "/headers", &auth).status, 403);
    // Another workload with the same token: its identity is not sleep's.
    let mut o = Client::connect(other.addr());
    assert_eq!(o.get("httpbin", "/api/status", &auth).status, 403);
    // Plaintext straight to httpbin's inbound port: refused under STRICT.
    let inbound = httpbin.p.inbound().unwrap();
    assert_ne!(curl(&["-s", "-H", &format!("authorization: {bearer}"), &format!("http://{inbound}/api/status")]).0, 0);
}
