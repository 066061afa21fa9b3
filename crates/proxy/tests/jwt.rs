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
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"http://") && challenge.ends_with("/headers\", error=\"invalid_token\""),
            "{challenge}"
        );
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
async fn presence_required_refuses_requests_without_a_token() {
    let key = TestKey::rsa("rsa-1");
    let net = Network::new();
    let h = httpbin(&net, &config(&format!("jwks: '{}'", jwks(&[&key])), "    presence: REQUIRED\n"));
    let mut c = h.connect_inbound().await;
    // Even where the policy asks for none: Istio's `presence: REQUIRED`.
    let r = c.send(get("/public", None)).await;
    assert_eq!(r.status.as_u16(), 401);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(c.send(get("/public", Some(&token(&key, now() + 3600)))).await.status.as_u16(), 200);
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

/// A JWKS server on a real local socket (over TLS with `tls`): `/jwks` answers
/// `state` (status, body); `/hang` reads the request and answers nothing, counting the
/// connections the client closes.
struct JwksServer {
    port: u16,
    state: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
    hangs_open: Arc<AtomicUsize>,
    hangs_closed: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
struct Counts {
    fetches: Arc<AtomicUsize>,
    hangs_open: Arc<AtomicUsize>,
    hangs_closed: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(Mutex::new((500, String::new())));
        let counts = Counts::default();
        let s = JwksServer {
            port: listener.local_addr().unwrap().port(),
            state: state.clone(),
            fetches: counts.fetches.clone(),
            hangs_open: counts.hangs_open.clone(),
            hangs_closed: counts.hangs_closed.clone(),
        };
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (state, counts, tls) = (state.clone(), counts.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => answer_jwks(sock, state, counts).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(sock).await {
                                answer_jwks(stream, state, counts).await;
                            }
                        }
                    }
                });
            }
        });
        s
    }

    fn uri(&self, path: &str) -> String {
        format!("jwksUri: http://127.0.0.1:{}{path}", self.port)
    }
}

async fn answer_jwks<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut sock: S,
    state: Arc<Mutex<(u16, String)>>,
    counts: Counts,
) {
    let mut buf = vec![0; 4096];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    if head.starts_with("GET /hang ") {
        counts.hangs_open.fetch_add(1, Ordering::SeqCst);
        while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        counts.hangs_closed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    counts.fetches.fetch_add(1, Ordering::SeqCst);
    let (status, mut body) = state.lock().unwrap().clone();
    if head.starts_with("GET /.well-known/openid-configuration ") {
        // The issuer's OpenID configuration names its keys' URL on this server.
        let host = head.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or("").trim();
        body = format!(r#"{{"issuer":"http://{host}","jwks_uri":"http://{host}/keys"}}"#);
    }
    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
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
    let server = JwksServer::start(None).await;
    let net = Network::new();
    let h = httpbin(&net, &config(&server.uri("/jwks"), ""));
    let good = token(&key, now() + 3600);

    // The server fails at first: the keys are not there, the token is refused.
    eventually("a first fetch", || async { server.fetches.load(Ordering::SeqCst) >= 1 }).await;
    assert_eq!(status(&h, &good).await, 401, "no keys yet");
    // It recovers: the fetcher's retry brings the keys.
    *server.state.lock().unwrap() = (200, jwks(&[&key]));
    eventually("the token accepted once the keys are fetched", || async { status(&h, &good).await == 200 }).await;
    assert!(h.metric("weft_jwks_fetch_failed_total", &[]) >= 1.0);
    assert_eq!(h.metric("weft_jwks_fetched_total", &[]), 1.0);

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

/// A CA, and a server certificate for 127.0.0.1 it signed, as a TLS acceptor.
fn tls_server() -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn an_https_jwks_uri_is_trusted_through_the_system_store() {
    let (trusted_ca, trusted) = tls_server();
    let (_, untrusted) = tls_server();
    // The system store, as rustls-native-certs reads it: SSL_CERT_FILE holds the one
    // trusted CA (read once, at the first https fetch of this process).
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, trusted_ca).unwrap();
    std::env::set_var("SSL_CERT_FILE", &ca_file);

    let (key, other_key) = (TestKey::es256("ec-1"), TestKey::rsa("rsa-1"));
    let good_server = JwksServer::start(Some(trusted)).await;
    *good_server.state.lock().unwrap() = (200, jwks(&[&key]));
    let bad_server = JwksServer::start(Some(untrusted)).await;
    *bad_server.state.lock().unwrap() = (200, jwks(&[&other_key]));
    let yaml = format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: two-issuers, namespace: default}}
spec:
  jwtRules:
  - {{issuer: "{ISS}", jwksUri: "https://127.0.0.1:{}/jwks"}}
  - {{issuer: "https://other.example", jwksUri: "https://127.0.0.1:{}/jwks"}}
---
{POLICY}"#,
        good_server.port, bad_server.port
    );
    let net = Network::new();
    let h = httpbin(&net, &yaml);
    let good = token(&key, now() + 3600);
    eventually("keys fetched over https", || async { status(&h, &good).await == 200 }).await;
    // The other issuer's server presents a certificate the store does not trust: no
    // keys, so its tokens are refused, and it never got a request.
    let other = other_key.sign(&json!({"iss": "https://other.example", "sub": "bob", "exp": now() + 3600}));
    assert_eq!(status(&h, &other).await, 401);
    assert_eq!(bad_server.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(good_server.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_policy_reads_the_verified_claims() {
    let key = TestKey::es256("ec-1");
    let net = Network::new();
    let yaml = format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  jwtRules: [{{issuer: "{ISS}", jwks: '{}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: group1-only, namespace: default}}
spec:
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISS}/*"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: ["group1"]}}]
"#,
        jwks(&[&key])
    );
    let h = httpbin(&net, &yaml);
    let in_group = |g: &str| key.sign(&json!({"iss": ISS, "sub": "alice", "exp": now() + 60, "groups": [g, "other"]}));
    assert_eq!(status(&h, &in_group("group1")).await, 200);
    assert_eq!(status(&h, &in_group("group2")).await, 403);
    let stranger = key.sign(&json!({"iss": "someone-else", "sub": "alice", "groups": ["group1"]}));
    assert_eq!(status(&h, &stranger).await, 401, "an issuer no rule trusts");
}

/// `weft proxy` compiles its first config before any tokio runtime exists: the
/// jwksUri fetchers must start all the same.
#[test]
fn keys_are_fetched_for_a_config_built_outside_any_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key = TestKey::es256("ec-1");
    let server = rt.block_on(JwksServer::start(None));
    *server.state.lock().unwrap() = (200, jwks(&[&key]));
    let net = Network::new();
    let h = httpbin(&net, &config(&server.uri("/jwks"), ""));
    let good = token(&key, now() + 3600);
    rt.block_on(eventually("the keys fetched", || async { status(&h, &good).await == 200 }));
}

#[tokio::test]
async fn without_jwks_or_jwks_uri_the_keys_are_discovered_from_the_issuer() {
    // Istio's behaviour for a rule with only an issuer: OpenID Connect discovery.
    let key = TestKey::es256("ec-1");
    let server = JwksServer::start(None).await;
    *server.state.lock().unwrap() = (200, jwks(&[&key]));
    let issuer = format!("http://127.0.0.1:{}", server.port);
    let yaml = config("", "").replace(&format!("issuer: \"{ISS}\""), &format!("issuer: \"{issuer}\""));
    let net = Network::new();
    let h = httpbin(&net, &yaml);
    let good = key.sign(&json!({"iss": issuer, "sub": "me", "exp": now() + 3600}));
    eventually("the discovered keys verify the token", || async { status(&h, &good).await == 200 }).await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "the configuration, then the keys it names");
    let forged = TestKey::es256("ec-1").sign(&json!({"iss": issuer, "sub": "me", "exp": now() + 3600}));
    assert_eq!(status(&h, &forged).await, 401);
}
