//! mTLS on the inbound listener, in process: who PeerAuthentication lets in, what the
//! app learns of the caller (`x-forwarded-client-cert`), and the metrics' principals.
//! Certificates come from a real mesh CA in a temporary directory.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
mod common;
use common::*;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;
use weft_tls::{Ca, WorkloadIdentity, WorkloadKey};

const APP: &str = "127.0.0.1:8080";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

fn peer_authentication(mode: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n")
}

/// The reviews sidecar under PeerAuthentication `mode`, with `identity`; its app
/// echoes the XFCC it received.
fn sidecar(net: &Network, mode: &str, identity: Option<Arc<WorkloadIdentity>>) -> Harness {
    net.serve(addr(APP), |req| async move {
        let xfcc: Vec<_> = req.headers().get_all("x-forwarded-client-cert").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        answer(200, &format!("xfcc={}", xfcc.join("|")))
    });
    let spec = weft_config::InboundSpec { app: addr(APP), service: "reviews".into(), namespace: "default".into() };
    let opts = ProxyOptions { inbound: Some((addr("127.0.0.1:15006"), spec)), identity, ..ProxyOptions::default() };
    Harness::with_options(net, &peer_authentication(mode), opts)
}

/// A TLS client with no certificate, that trusts any server.
fn anonymous_client() -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder().dangerous().with_custom_certificate_verifier(Arc::new(AnyServer)).with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

fn get_with_xfcc(forged: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get("/").header("host", "reviews");
    if let Some(f) = forged {
        b = b.header("x-forwarded-client-cert", f);
    }
    b.body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn strict_lets_a_mesh_client_in_and_the_app_sees_who_called() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    let mut c = h.connect_inbound_tls(mesh_client(&issue(&ca, "productpage", ""))).await.expect("handshake");
    let r = c.send(get_with_xfcc(None)).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, format!("xfcc=By={REVIEWS};URI={PRODUCTPAGE}").as_str()));
    // A client-sent XFCC never reaches the app: replaced by what the proxy verified.
    let r = c.send(get_with_xfcc(Some("By=x;URI=spiffe://cluster.local/ns/default/sa/admin"))).await;
    assert_eq!(r.text(), format!("xfcc=By={REVIEWS};URI={PRODUCTPAGE}"));
    assert_eq!(h.metric("weft_inbound_tls_handshakes_total", &["kind=\"full\""]), 1.0);
    // A second connection resumes the session (a ticket from the first) and keeps the
    // caller's identity.
    let client = mesh_client(&issue(&ca, "ratings", ""));
    let mut first = h.connect_inbound_tls(client.clone()).await.expect("handshake");
    assert_eq!(first.get("reviews", "/").await.status, 200);
    let mut second = h.connect_inbound_tls(client).await.expect("resumed handshake");
    assert!(second.get("reviews", "/").await.text().ends_with("URI=spiffe://cluster.local/ns/default/sa/ratings"));
    assert_eq!(h.metric("weft_inbound_tls_handshakes_total", &["kind=\"resumed\""]), 1.0);
    // Metrics: the caller's principal, ours, and mutual_tls.
    let labels = [
        "reporter=\"destination\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    assert_eq!(h.metric("istio_requests_total", &labels), 2.0);
    assert_eq!(h.metric("istio_requests_total", &["source_principal=\"spiffe://cluster.local/ns/default/sa/ratings\""]), 2.0);
    assert_eq!(h.metric("istio_requests_total", &["connection_security_policy=\"none\""]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn two_proxies_speak_http2_over_mtls_when_alpn_says_so() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    let config = Arc::new(weft_tls::client_config(issue(&ca, "productpage", ""), None).unwrap());
    let name = ServerName::try_from("reviews").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, h.connect_inbound_raw()).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(Request::get("http://reviews/").body(Full::<Bytes>::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(body, format!("xfcc=By={REVIEWS};URI={PRODUCTPAGE}"));
}

#[tokio::test(start_paused = true)]
async fn strict_refuses_plaintext_before_serving_it() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    let mut raw = h.connect_inbound_raw();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    raw.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(h.metric("weft_inbound_plaintext_refused_total", &[]), 1.0);
    assert!(net.connects(addr(APP)).is_empty(), "nothing reached the app");
}

#[tokio::test(start_paused = true)]
async fn strict_refuses_a_client_certificate_from_another_ca() {
    let (_dir, ca) = new_ca();
    let (_other_dir, other) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    // Another mesh's workload that trusts our root (so its side of the handshake goes
    // through) but whose certificate our root did not sign.
    let stranger = issue(&other, "productpage", ca.root_bundle());
    let refused = match h.connect_inbound_tls(mesh_client(&stranger)).await {
        Err(_) => true,
        Ok(mut c) => c.try_send(get_with_xfcc(None)).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was let in");
    assert_eq!(h.metric("weft_inbound_tls_handshake_failures_total", &["reason=\"unknown_ca\""]), 1.0);
    assert!(net.connects(addr(APP)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn strict_refuses_a_tls_client_without_a_certificate() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    let refused = match h.connect_inbound_tls(anonymous_client()).await {
        Err(_) => true,
        Ok(mut c) => c.try_send(get_with_xfcc(None)).await.is_err(),
    };
    assert!(refused, "a client without a certificate was let in");
    assert_eq!(h.metric("weft_inbound_tls_handshake_failures_total", &["reason=\"no_client_cert\""]), 1.0);
    assert!(net.connects(addr(APP)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn permissive_serves_mtls_and_plaintext_on_one_listener() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "PERMISSIVE", Some(issue(&ca, "reviews", "")));
    let mut tls = h.connect_inbound_tls(mesh_client(&issue(&ca, "productpage", ""))).await.expect("handshake");
    assert_eq!(tls.send(get_with_xfcc(None)).await.text(), format!("xfcc=By={REVIEWS};URI={PRODUCTPAGE}"));
    // Plaintext is served, and a forged XFCC is stripped: the app sees no caller.
    let r = h.connect_inbound().await.send(get_with_xfcc(Some(&format!("By={REVIEWS};URI={PRODUCTPAGE}")))).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "xfcc="));
    assert_eq!(h.metric("istio_requests_total", &["connection_security_policy=\"mutual_tls\""]), 1.0);
    assert_eq!(
        h.metric(
            "istio_requests_total",
            &["reporter=\"destination\"", "source_principal=\"unknown\"", "connection_security_policy=\"none\""]
        ),
        1.0
    );
    assert_eq!(h.metric("weft_inbound_plaintext_refused_total", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn disable_serves_plaintext_only_and_does_not_terminate_tls() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "DISABLE", Some(issue(&ca, "reviews", "")));
    assert_eq!(h.connect_inbound().await.get("reviews", "/").await.text(), "xfcc=");
    let refused = match h.connect_inbound_tls(mesh_client(&issue(&ca, "productpage", ""))).await {
        Err(_) => true,
        Ok(mut c) => c.try_send(get_with_xfcc(None)).await.is_err(),
    };
    assert!(refused, "TLS was terminated under DISABLE");
    assert_eq!(h.metric("weft_inbound_tls_handshakes_total", &[]), 0.0);
    assert_eq!(net.connects(addr(APP)).len(), 1, "only the plaintext request reached the app");
}

#[tokio::test(start_paused = true)]
async fn without_an_identity_tls_is_refused_and_plaintext_still_served_under_permissive() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "PERMISSIVE", None);
    let refused = match h.connect_inbound_tls(mesh_client(&issue(&ca, "productpage", ""))).await {
        Err(_) => true,
        Ok(mut c) => c.try_send(get_with_xfcc(None)).await.is_err(),
    };
    assert!(refused);
    assert_eq!(h.metric("weft_inbound_tls_handshake_failures_total", &["reason=\"no_identity\""]), 1.0);
    assert_eq!(h.connect_inbound().await.get("reviews", "/").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_handshake_is_closed_after_the_timeout() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let h = sidecar(&net, "STRICT", Some(issue(&ca, "reviews", "")));
    let mut raw = h.connect_inbound_raw();
    // A TLS record header, then nothing.
    raw.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got).await;
    assert_eq!(start.elapsed(), weft_proxy::inbound_tls::HANDSHAKE_TIMEOUT);
    assert_eq!(h.metric("weft_inbound_tls_handshake_failures_total", &["reason=\"timeout\""]), 1.0);
}

/// Trusts every server (the tests here are about the server's checks of the client).
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Renews `identity` in place with a fresh key and certificate from `ca`; the new serial.
fn renew(ca: &Ca, identity: &WorkloadIdentity) -> String {
    let key = WorkloadKey::generate().unwrap();
    let cert = ca.sign_csr(&key.csr(identity.id()).unwrap(), identity.id(), weft_tls::ca::DEFAULT_CERT_TTL).unwrap();
    identity.install(&key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap();
    identity.summary().serial
}

/// The serial of the certificate the sidecar presents on a new handshake.
async fn served_serial(h: &Harness, client: Arc<ClientConfig>) -> String {
    let name = ServerName::try_from("reviews.default.svc").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client).connect(name, h.connect_inbound_raw()).await.unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    weft_tls::x509::summarize(&certs[0]).unwrap().serial
}

#[tokio::test(start_paused = true)]
async fn certificates_rotate_under_constant_load_with_no_failed_request() {
    let (_dir, ca) = new_ca();
    let net = Network::new();
    let server = issue(&ca, "reviews", "");
    let client = issue(&ca, "productpage", "");
    let h = Arc::new(sidecar(&net, "STRICT", Some(server.clone())));
    let old_serial = server.summary().serial;
    // Eight callers: each keeps a connection and opens a new one every tenth request.
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (h, config) = (h.clone(), mesh_client(&client));
        callers.push(tokio::spawn(async move {
            let mut failed = 0;
            let mut c = h.connect_inbound_tls(config.clone()).await.expect("handshake");
            for i in 0..200 {
                if i % 10 == 9 {
                    c = match h.connect_inbound_tls(config.clone()).await {
                        Ok(c) => c,
                        Err(_) => {
                            failed += 1;
                            continue;
                        }
                    };
                }
                match c.try_send(get_with_xfcc(None)).await {
                    Ok(r) if r.status == 200 && r.text().ends_with(PRODUCTPAGE) => {}
                    _ => failed += 1,
                }
                tokio::task::yield_now().await;
            }
            failed
        }));
    }
    // Both sides renew while the load runs.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let before = h.metric("istio_requests_total", &["connection_security_policy=\"mutual_tls\""]);
    assert!(before > 0.0 && before < 1000.0, "the renewal comes mid-load ({before} of 1,600 requests done)");
    let new_server = renew(&ca, &server);
    let new_client = renew(&ca, &client);
    assert_ne!(new_server, old_serial);
    let mut failed = 0;
    for c in callers {
        failed += c.await.unwrap();
    }
    assert_eq!(failed, 0, "requests failed across the rotation");
    // A new full handshake presents the renewed certificate (a resumed one would keep the
    // session's, so this client has no session yet).
    assert_eq!(served_serial(&h, mesh_client(&client)).await, new_server);
    assert_ne!(new_client, "");
    assert_eq!(h.metric("istio_requests_total", &["connection_security_policy=\"mutual_tls\""]), 1600.0);
}
