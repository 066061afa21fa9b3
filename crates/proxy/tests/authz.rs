//! AuthorizationPolicy on the inbound side, in process: mTLS callers from a real mesh
//! CA, policies as Istio's tasks write them, the answers a denied caller gets, and
//! that nothing denied reaches the app.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weft_proxy::cluster::Node;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;
use weft_tls::WorkloadIdentity;

use common::*;

const APP: &str = "127.0.0.1:8080";

/// The httpbin sidecar (namespace `default`, labels `app: httpbin, version: v1`) under
/// `policies` and PeerAuthentication `mode`.
fn httpbin(net: &Network, mode: &str, policies: &str, identity: Arc<WorkloadIdentity>) -> Harness {
    net.serve(addr(APP), |req| async move { answer(200, &format!("{} {}", req.method(), req.uri().path())) });
    let spec = weft_config::InboundSpec { app: addr(APP), service: "httpbin".into(), namespace: "default".into() };
    let labels = [("app", "httpbin"), ("version", "v1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let opts = ProxyOptions {
        inbound: Some((addr("127.0.0.1:15006"), spec)),
        identity: Some(identity),
        node: Node::new(None, labels),
        ..ProxyOptions::default()
    };
    let pa = format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n");
    Harness::with_options(net, &format!("{pa}{policies}"), opts)
}

fn req(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder().method(method).uri(path).header("host", "httpbin").body(Full::default()).unwrap()
}

/// istio.io "Authorization for HTTP traffic", as sleep → httpbin: GET of /api/* from
/// sleep's identity, nothing else (an ALLOW policy applies, so what it does not allow
/// is denied).
const ALLOW_SLEEP_GET_API: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-viewer, namespace: default}
spec:
  selector:
    matchLabels: {app: httpbin}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/api/*"]
"#;

#[tokio::test(start_paused = true)]
async fn an_allow_policy_lets_in_exactly_what_it_says() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = httpbin(&net, "PERMISSIVE", ALLOW_SLEEP_GET_API, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    let r = sleep.send(req("GET", "/api/status")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "GET /api/status"));
    let r = sleep.send(req("POST", "/api/status")).await;
    assert_eq!((r.status.as_u16(), r.text()), (403, "RBAC: access denied"));
    assert_eq!(sleep.send(req("GET", "/headers")).await.status.as_u16(), 403);
    // The path is matched normalized: `/x/../api/…` is `/api/…`, and `/api/../headers` is not.
    assert_eq!(sleep.send(req("GET", "/x/../api/status")).await.status.as_u16(), 200);
    assert_eq!(sleep.send(req("GET", "/api/../headers")).await.status.as_u16(), 403);
    // Another workload's identity, and a plaintext caller (no identity at all).
    let mut other = h.connect_inbound_tls(mesh_client(&issue(&ca, "productpage", ""))).await.unwrap();
    assert_eq!(other.send(req("GET", "/api/status")).await.status.as_u16(), 403);
    let mut plain = h.connect_inbound().await;
    let r = plain.send(req("GET", "/api/status")).await;
    assert_eq!(r.status.as_u16(), 403, "a plaintext caller has no principal: ALLOW on principals fails safe");
    assert_eq!(h.metric("weft_authz_denied_total", &[]), 5.0);
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"403\"", "response_flags=\"RBAC\""]), 5.0);
    assert_eq!(net.connects(addr(APP)).len(), 1, "denied requests never reached the app (one connection, kept alive)");
}

#[tokio::test(start_paused = true)]
async fn deny_wins_and_audit_is_counted() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: ["DELETE"]}}]
  - from: [{source: {notNamespaces: ["default"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: audit-admin, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{to: [{operation: {paths: ["/admin/{**}"]}}]}]
"#;
    let h = httpbin(&net, "PERMISSIVE", policies, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    assert_eq!(sleep.send(req("GET", "/admin/users")).await.status.as_u16(), 200);
    assert_eq!(sleep.send(req("DELETE", "/admin/users")).await.status.as_u16(), 403);
    assert_eq!(h.metric("weft_authz_audited_total", &[]), 2.0);
    // From another namespace: denied by the second rule.
    let mut foreign = h.connect_inbound_tls(mesh_client(&issue_in(&ca, "other", "sleep", ""))).await.unwrap();
    assert_eq!(foreign.send(req("GET", "/")).await.status.as_u16(), 403);
    // Plaintext: the namespace is unknown, and a DENY on it fails safe (denies).
    let mut plain = h.connect_inbound().await;
    assert_eq!(plain.send(req("GET", "/")).await.status.as_u16(), 403);
}

#[tokio::test(start_paused = true)]
async fn policies_for_other_workloads_do_not_apply_and_an_empty_allow_denies_all() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all-of-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
"#;
    let h = httpbin(&net, "PERMISSIVE", policies, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    assert_eq!(sleep.send(req("GET", "/")).await.status.as_u16(), 200, "neither policy selects httpbin");
    let net = Network::new();
    let allow_nothing =
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: default}\nspec: {}\n";
    let h = httpbin(&net, "STRICT", allow_nothing, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    let r = sleep.send(req("GET", "/")).await;
    assert_eq!((r.status.as_u16(), r.text()), (403, "RBAC: access denied"));
}

#[tokio::test(start_paused = true)]
async fn a_grpc_caller_gets_permission_denied() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let allow_nothing =
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: default}\nspec: {}\n";
    let h = httpbin(&net, "PERMISSIVE", allow_nothing, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    let grpc =
        Request::post("/pkg.Svc/Call").header("host", "httpbin").header("content-type", "application/grpc").body(Full::default()).unwrap();
    let r = sleep.send(grpc).await;
    assert_eq!(r.status.as_u16(), 200, "gRPC answers in grpc-status");
    assert_eq!(r.header("grpc-status"), Some("7"));
}

/// istio.io "Dry run": an annotated DENY is evaluated, logged and counted, not enforced.
#[tokio::test(start_paused = true)]
async fn a_dry_run_policy_counts_what_it_would_deny_and_denies_nothing() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let policy = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: default
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/headers"]}}]}]
"#;
    let h = httpbin(&net, "PERMISSIVE", policy, issue(&ca, "httpbin", ""));
    let mut sleep = h.connect_inbound_tls(mesh_client(&issue(&ca, "sleep", ""))).await.unwrap();
    assert_eq!(sleep.send(req("GET", "/headers")).await.status.as_u16(), 200);
    assert_eq!(sleep.send(req("GET", "/ip")).await.status.as_u16(), 200);
    assert_eq!(h.metric("weft_authz_dry_run_denied_total", &[]), 1.0);
    assert_eq!(h.metric("weft_authz_denied_total", &[]), 0.0);
}
