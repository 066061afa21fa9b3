//! RequestAuthentication on the inbound side, in process: tokens signed by keys made
//! in the test, the answers a caller gets (no token: the policy's 403; a bad token:
//! 401), what the app sees of a good one, and keys fetched from a `jwksUri` served by
//! a real local HTTP server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_authz::jwt::testing::{jwks, TestKey};
use weft_proxy::cluster::Node;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

const APP: &str = "127.0.0.1:8080";
const ISS: &str = "testing@secure.istio.io";

/// The httpbin sidecar (labels `app: httpbin`) under `yaml`; its app answers with the
/// headers a JWT may have set or left.
fn httpbin(net: &Network, yaml: &str) -> Harness {
    net.serve(addr(APP), |req| async move {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let body =
            format!("sub={} groups={} auth={} payload={}", h("x-jwt-sub"), h("x-jwt-groups"), h("authorization"), h("x-jwt-payload"));
        answer(200, &body)
    });
    let spec = weft_config::InboundSpec { app: addr(APP), service: "httpbin".into(), namespace: "default".into() };
    let labels = [("app".to_owned(), "httpbin".to_owned())].into_iter().collect();
    let opts = ProxyOptions { inbound: Some((addr("127.0.0.1:15006"), spec)), node: Node::new(None, labels), ..ProxyOptions::default() };
    Harness::with_options(net, yaml, opts)
}

/// istio.io "JWT authentication": the RequestAuthentication with `keys` (`jwks: '…'`
/// or `jwksUri: …`) and `extra` rule fields, and a policy that requires a token on /headers.
fn config(keys: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: default}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: "{ISS}"
    {keys}
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}, {{header: x-jwt-groups, claim: groups}}]
{extra}---
{POLICY}"#
    )
}

const POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/headers"]}}]
  - to: [{operation: {paths: ["/public"]}}]
"#;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(key: &TestKey, exp: u64) -> String {
    key.sign(&json!({"iss": ISS, "sub": ISS, "exp": exp, "groups": ["group1", "group2"]}))
}

fn get(path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut r = Request::get(path).header("host", "httpbin");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_policy_requiring_a_token_sees_who_presented_one() {
    let key = TestKey::rsa("rsa-1");
    let stranger = TestKey::rsa("rsa-1");
    let net = Network::new();
    let h = httpbin(&net, &config(&format!("jwks: '{}'", jwks(&[&key])), "    outputPayloadToHeader: x-jwt-payload\n"));
    let mut c = h.connect_inbound().await;

    let r = c.send(get("/headers", None)).await;
    assert_eq!((r.status.as_u16(), r.text()), (403, "RBAC: access denied"), "no token: authentication passes, the policy denies");
    for (why, bad) in
        [("garbage", "not-a-jwt".to_owned()), ("expired", token(&key, now() - 3600)), ("another key", token(&stranger, now() + 3600))]
    {
        let r = c.send(get("/headers", Some(&bad))).await;
        assert_eq!((r.status.as_u16(), r.text()), (401, "Jwt verification fails"), "{why}");
    }
    let good = token(&key, now() + 3600);
    let r = c.send(get("/headers", Some(&good))).await;
    let payload = good.split('.').nth(1).unwrap();
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.text(), format!("sub={ISS} groups=group1,group2 auth=- payload={payload}"), "claims copied, the token removed");
    // A bad token is refused even where no policy asks for one.
    assert_eq!(c.send(get("/public", Some("a.b.c"))).await.status.as_u16(), 401);
    // A client's own claim headers never reach the app as if a token had said so.
    let spoofed = Request::get("/public").header("host", "httpbin").header("x-jwt-sub", "admin").header("x-jwt-payload", "e30");
    let r = c.send(spoofed.body(Full::default()).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "sub=- groups=- auth=- payload=-"));

    assert_eq!(h.metric("weft_jwt_verified_total", &[]), 1.0);
    assert_eq!(h.metric("weft_jwt_refused_total", &[]), 4.0);
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"401\""]), 4.0);
}

#[tokio::test(start_paused = true)]
async fn forward_original_token_keeps_it_and_grpc_gets_unauthenticated() {
    let key = TestKey::es256("ec-1");
    let net = Network::new();
    let h = httpbin(&net, &config(&format!("jwks: '{}'", jwks(&[&key])), "    forwardOriginalToken: true\n"));
    let mut c = h.connect_inbound().await;
    let good = token(&key, now() + 60);
    let r = c.send(get("/headers", Some(&good))).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.text().contains(&format!("auth=Bearer {good}")), "{}", r.text());
    let grpc = Request::post("/pkg.Svc/Call")
        .header("host", "httpbin")
        .header("content-type", "application/grpc")
        .header("authorization", "Bearer x.y.z")
        .body(Full::default())
        .unwrap();
    let r = c.send(grpc).await;
    assert_eq!((r.status.as_u16(), r.header("grpc-status")), (200, Some("16")));
}

/// A JWKS server on a real local socket: `/jwks` answers `state` (status, body);
/// `/hang` reads the request and answers nothing, counting the connections the
/// client closes.
struct JwksServer {
    port: u16,
    state: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
    hangs_open: Arc<AtomicUsize>,
    hangs_closed: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start() -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = JwksServer {
            port: listener.local_addr().unwrap().port(),
            state: Arc::new(Mutex::new((500, String::new()))),
            fetches: Default::default(),
            hangs_open: Default::default(),
            hangs_closed: Default::default(),
        };
        let (state, fetches, open, closed) = (s.state.clone(), s.fetches.clone(), s.hangs_open.clone(), s.hangs_closed.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (state, fetches, open, closed) = (state.clone(), fetches.clone(), open.clone(), closed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if head.starts_with("GET /hang ") {
                        open.fetch_add(1, Ordering::SeqCst);
                        while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = state.lock().unwrap().clone();
                    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        s
    }

    fn uri(&self, path: &str) -> String {
        format!("jwksUri: http://127.0.0.1:{}{path}", self.port)
    }
}

/// The status of `GET /headers` with `token`, on a connection of its own.
async fn status(h: &Harness, token: &str) -> u16 {
    h.connect_inbound().await.send(get("/headers", Some(token))).await.status.as_u16()
}

/// Polls `f` every 50 ms for up to 10 s (real time: the fetches are on real sockets).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn keys_from_a_jwks_uri_are_fetched_retried_and_dropped_with_the_config() {
    let key = TestKey::es256("ec-1");
    let server = JwksServer::start().await;
    let net = Network::new();
    let h = httpbin(&net, &config(&server.uri("/jwks"), ""));
    let good = token(&key, now() + 3600);

    // The server fails at first: the keys are not there, the token is refused.
    eventually("a first fetch", || async { server.fetches.load(Ordering::SeqCst) >= 1 }).await;
    assert_eq!(status(&h, &good).await, 401, "no keys yet");
    // It recovers: the fetcher's retry brings the keys.
    *server.state.lock().unwrap() = (200, jwks(&[&key]));
    eventually("the token accepted once the keys are fetched", || async { status(&h, &good).await == 200 }).await;

    // A reload with another jwksUri: a fetcher for it, whose fetch hangs; its issuer's
    // tokens are refused meanwhile (the old URI's keys are not used for it).
    h.install(&config(&server.uri("/hang"), "    timeout: 60s\n"));
    eventually("a fetch of /hang", || async { server.hangs_open.load(Ordering::SeqCst) == 1 }).await;
    assert_eq!(status(&h, &good).await, 401);
    // A reload without the RequestAuthentication stops the fetch in flight.
    h.install(POLICY);
    eventually("the hanging fetch closed", || async { server.hangs_closed.load(Ordering::SeqCst) == 1 }).await;
    assert_eq!(status(&h, &good).await, 403, "no RequestAuthentication: the token is not read, the policy denies");
}
