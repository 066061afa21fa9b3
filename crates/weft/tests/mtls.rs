//! Two sidecars and a control plane, as a user runs them: the caller's proxy finds the
//! callee's endpoint in the mesh (registered by the callee's workload) and speaks mTLS
//! to its inbound listener with its own certificate; the callee's app learns who called
//! (XFCC), both sides' metrics say `mutual_tls`; under STRICT, plaintext never reaches
//! the app.

mod common;

use common::*;

struct Mesh {
    cp: Plane,
    /// The callee's sidecar (its inbound listener in front of the app).
    reviews: Proxy,
    /// The caller's sidecar (outbound, with its own identity).
    productpage: Proxy,
    _app: Proc,
}

fn mesh() -> Mesh {
    let cp = plane();
    let app = backend("reviews-app", &[]);
    let (reviews_token, productpage_token) = (workload_token(&cp, "default", "reviews"), workload_token(&cp, "default", "productpage"));
    let (url, ca) = (cp.url(), cp.ca_file().to_str().unwrap().to_owned());
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        reviews_token.to_str().unwrap(),
        "--node",
        "reviews-1",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--inbound",
        "127.0.0.1:0",
        "--app",
        &app.addr.to_string(),
        "--service",
        "reviews",
        "--label",
        "app=reviews",
    ]);
    let reviews = Proxy { p, cfg: std::path::PathBuf::new() };
    let inbound = reviews.p.inbound().unwrap().to_string();
    // The callee's workload registers its inbound address with its own token: in the mesh.
    let out = cp.weft_as(&reviews_token, &["register", "--service", "reviews", "--address", &inbound]);
    assert!(out.status.success(), "{}", text(&out));
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        productpage_token.to_str().unwrap(),
        "--node",
        "productpage-1",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--service",
        "productpage",
        "--service-account",
        "productpage",
    ]);
    let productpage = Proxy { p, cfg: std::path::PathBuf::new() };
    wait_until("the caller routes to reviews", || get(productpage.addr(), "reviews", "/", &[]).status == 200);
    Mesh { cp, reviews, productpage, _app: app }
}

#[test]
fn a_call_between_sidecars_is_mutual_tls_and_the_callee_knows_the_caller() {
    let m = mesh();
    let r = get(
        m.productpage.addr(),
        "reviews",
        "/",
        &[("x-forwarded-client-cert", "By=spiffe://forged;URI=spiffe://cluster.local/ns/default/sa/admin")],
    );
    assert_eq!((r.status, r.backend()), (200, "reviews-app".to_owned()), "{}", r.text());
    let echo = r.json();
    let xfcc = echo["headers"]["x-forwarded-client-cert"].as_str().unwrap_or_default().to_owned();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/productpage"), "{echo:#}");
    assert!(!xfcc.contains("forged") && !xfcc.contains("sa/admin"), "a client's XFCC is replaced: {xfcc}");
    // The callee reports the caller's principal and mutual_tls.
    let callee = m.reviews.admin("/metrics");
    let inbound = metric_sum(
        &callee,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            "connection_security_policy=\"mutual_tls\"",
            "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        ],
    );
    assert!(inbound >= 1.0, "{callee}");
    // One HTTP/2 connection between the two proxies carries the calls.
    for _ in 0..20 {
        assert_eq!(get(m.productpage.addr(), "reviews", "/", &[]).status, 200);
    }
    // `weft status` shows each proxy's identity and certificate expiry.
    let status = text(&m.cp.weft(&["status"]));
    let row = status.lines().find(|l| l.starts_with("reviews-1")).unwrap_or_default().to_owned();
    assert!(row.contains("spiffe://cluster.local/ns/default/sa/reviews"), "{status}");
    let year = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600)).to_string();
    assert!(row.contains(&year[..10]), "expires in 24 h ({}): {status}", &year[..10]);
    let caller = m.productpage.admin("/metrics");
    assert_eq!(
        metric_sum(&caller, "istio_tcp_connections_opened_total", &["destination_service=\"reviews.default.svc.cluster.local\""]),
        1.0,
        "{caller}"
    );
    // The caller reports its side (reporter="source") with both principals too.
    let principals = [
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let outbound = metric_sum(&caller, "istio_requests_total", &[&["reporter=\"source\""][..], &principals].concat());
    assert!(outbound >= 21.0, "{caller}");
    let opened = metric_sum(
        &caller,
        "istio_tcp_connections_opened_total",
        &[&["destination_service=\"reviews.default.svc.cluster.local\""][..], &principals].concat(),
    );
    assert_eq!(opened, 1.0, "{caller}");
}

#[test]
fn a_websocket_between_sidecars_runs_over_mutual_tls_under_strict() {
    use std::io::{Read, Write};
    let m = mesh();
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    assert!(m.cp.apply("strict.yaml", strict).status.success());
    let inbound = m.reviews.p.inbound().unwrap();
    wait_until("the callee refuses plaintext", || curl(&["-s", &format!("http://{inbound}/")]).0 != 0);
    // The cluster speaks h2 between the sidecars; the upgrade takes its own mTLS
    // connection offering http/1.1, and the callee tunnels it to the app.
    let mut c = Client::connect(m.productpage.addr());
    let r = c.raw(b"GET /ws HTTP/1.1\r\nhost: reviews\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", false);
    assert_eq!(r.status, 101, "{}", r.text());
    let s = c.stream();
    s.write_all(b"hello over mutual tls").unwrap();
    let mut buf = [0u8; 21];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello over mutual tls");
    drop(c);
    // Both ends count the tunnel's bytes under the mTLS principals.
    let caller = "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"";
    wait_until("the callee counts the tunnel", || {
        metric_sum(&m.reviews.admin("/metrics"), "istio_tcp_sent_bytes_total", &[caller, "connection_security_policy=\"mutual_tls\""])
            >= 21.0
    });
    let out = m.productpage.admin("/metrics");
    let sent =
        metric_sum(&out, "istio_tcp_sent_bytes_total", &[caller, "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\""]);
    assert!(sent >= 21.0, "{out}");
}

/// An AuthorizationPolicy applied at the control plane reaches the callee's sidecar,
/// which lets in only the caller it names (by the identity its certificate proves),
/// only for what it allows; deleting it opens the service again.
#[test]
fn an_authorization_policy_from_the_control_plane_lets_in_only_its_caller() {
    let m = mesh();
    let policy = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/productpage"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/api/*"]
"#;
    let out = m.cp.apply("policy.yaml", policy);
    assert!(out.status.success(), "{}", text(&out));
    let mut c = Client::connect(m.productpage.addr());
    wait_until("the policy reaches the callee", || c.get("reviews", "/other", &[]).status == 403);
    let r = c.get("reviews", "/api/ratings", &[]);
    assert_eq!((r.status, r.backend()), (200, "reviews-app".to_owned()), "{}", r.text());
    let r = c.request("POST", "reviews", "/api/ratings", &[], b"x");
    assert_eq!((r.status, r.text()), (403, "RBAC: access denied".to_owned()));
    // A plaintext caller straight to the callee's inbound port has no principal.
    let inbound = m.reviews.p.inbound().unwrap();
    let (_, code, _) = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{inbound}/api/ratings")]);
    assert_eq!(code, "403");
    let listed = text(&m.cp.weft(&["get", "authorizationpolicies", "-n", "default"]));
    assert!(listed.contains("reviews-viewer"), "{listed}");
    assert!(m.cp.weft(&["delete", "ap", "reviews-viewer", "-n", "default"]).status.success());
    wait_until("the service is open again", || c.get("reviews", "/other", &[]).status == 200);
}

#[test]
fn under_strict_plaintext_never_reaches_the_app_while_the_mesh_keeps_working() {
    let m = mesh();
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    assert!(m.cp.apply("strict.yaml", strict).status.success());
    let inbound = m.reviews.p.inbound().unwrap();
    wait_until("the callee refuses plaintext", || curl(&["-s", &format!("http://{inbound}/")]).0 != 0);
    assert_eq!(get(m.productpage.addr(), "reviews", "/", &[]).status, 200, "mTLS from the mesh still passes");
    // A TLS client with no mesh certificate is refused too.
    let (code, _, _) = curl(&["-sk", &format!("https://{inbound}/")]);
    assert_ne!(code, 0, "a client without a certificate got in");
}

#[test]
fn a_peer_that_is_not_the_identity_the_destination_rule_names_is_refused() {
    let m = mesh();
    let dr = |sa: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/{sa}\"]}}}}\n")
    };
    // The callee proves it is reviews; the rule asks for ratings: no request reaches it.
    assert!(m.cp.apply("dr.yaml", &dr("ratings")).status.success());
    wait_until("the caller refuses the callee", || get(m.productpage.addr(), "reviews", "/", &[]).status == 503);
    let r = get(m.productpage.addr(), "reviews", "/", &[]);
    assert!(r.text().contains("TLS handshake") || r.text().contains("upstream connect error"), "{}", r.text());
    // Naming the right identity lets it through.
    assert!(m.cp.apply("dr.yaml", &dr("reviews")).status.success());
    wait_until("the caller accepts the callee", || get(m.productpage.addr(), "reviews", "/", &[]).status == 200);
}

#[test]
fn a_service_half_in_the_mesh_gets_mtls_to_the_sidecar_and_plaintext_to_the_rest() {
    let m = mesh();
    // A second reviews endpoint outside the mesh: a plain backend the admin registered.
    let plain = backend("reviews-plain", &[]);
    assert!(m.cp.weft(&["register", "--service", "reviews", "--address", &plain.addr.to_string()]).status.success());
    wait_until("both endpoints answer", || spread(m.productpage.addr(), "reviews", 20, &[]).len() == 2);
    let mut through_sidecar = 0;
    for _ in 0..40 {
        let r = get(m.productpage.addr(), "reviews", "/", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let xfcc = r.json()["headers"]["x-forwarded-client-cert"].as_str().map(str::to_owned);
        match r.backend().as_str() {
            // The sidecar's app: over mTLS, it knows the caller.
            "reviews-app" => {
                through_sidecar += 1;
                assert!(xfcc.unwrap_or_default().contains("sa/productpage"));
            }
            // The plain endpoint: plaintext, no client certificate in the story.
            _ => assert_eq!(xfcc, None),
        }
    }
    assert!(through_sidecar > 0 && through_sidecar < 40, "{through_sidecar} of 40 through the sidecar");
}
