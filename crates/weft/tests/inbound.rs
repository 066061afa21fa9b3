//! A sidecar's inbound side as a process: `weft proxy --inbound ADDR --app ADDR` sends
//! every request on its inbound listener to the app, whatever the host, while its
//! outbound listener routes by host as before.

mod common;

use common::*;

#[test]
fn the_inbound_listener_serves_the_app_and_the_outbound_one_routes_the_mesh() {
    let app = backend("app", &[]);
    let other = backend("other", &[]);
    let app_addr = app.addr.to_string();
    let p = proxy_with(
        &service_entry("other", &[(other.addr, "v: x", 1)]),
        &["--inbound", "127.0.0.1:0", "--app", &app_addr, "--service", "reviews", "--namespace", "bookinfo"],
    );
    let inbound = p.p.inbound().expect("the start line names the inbound listener");
    for host in ["reviews", "reviews.bookinfo.svc.cluster.local:9080", "other"] {
        let r = get(inbound, host, "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "app".to_owned()), "{host}");
    }
    let (code, out, _) = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{inbound}/x")]);
    assert_eq!((code, out.as_str()), (0, "200"));
    assert_eq!(get(p.addr(), "other", "/", &[]).backend(), "other");
    assert_eq!(get(p.addr(), "reviews", "/", &[]).status, 404, "the app is not a mesh service of the outbound side");
    let metrics = p.admin("/metrics");
    let inbound_requests = metric_sum(
        &metrics,
        "istio_requests_total",
        &["reporter=\"destination\"", "destination_workload=\"reviews\"", "destination_workload_namespace=\"bookinfo\""],
    );
    assert_eq!(inbound_requests, 4.0, "{metrics}");
}

#[test]
fn inbound_needs_an_app_and_the_other_way_round() {
    for args in [&["--inbound", "127.0.0.1:0"][..], &["--app", "127.0.0.1:8080"]] {
        let out = std::process::Command::new(weft()).args(["proxy", "--config", "/dev/null"]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    }
}

const STRICT: &str = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";

#[test]
fn under_strict_peer_authentication_plaintext_never_reaches_the_app() {
    let app = backend("app", &[]);
    let app_addr = app.addr.to_string();
    let p = proxy_with(STRICT, &["--inbound", "127.0.0.1:0", "--app", &app_addr, "--service", "reviews", "--label", "app=reviews"]);
    let inbound = p.p.inbound().unwrap();
    let (code, _, err) = curl(&["-s", &format!("http://{inbound}/")]);
    assert_ne!(code, 0, "plaintext was served under STRICT: {err}");
    assert_eq!(metric_sum(&p.admin("/metrics"), "weft_inbound_plaintext_refused_total", &[]), 1.0);
    // A workload-scoped PERMISSIVE for this app's port lets plaintext in again (after a reload).
    let permissive = format!(
        "{STRICT}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  portLevelMtls: {{\"{}\": {{mode: PERMISSIVE}}}}\n",
        app.addr.port()
    );
    std::fs::write(&p.cfg, permissive).unwrap();
    wait_until("the reload", || p.revision() >= 2);
    assert_eq!(get(inbound, "reviews", "/", &[]).backend(), "app");
}

/// A workload token for `sa` (in `default`), written to a file.
fn workload_token(cp: &Plane, sa: &str) -> (std::path::PathBuf, String) {
    let out = cp.weft(&["token", "create", "--namespace", "default", "--service-account", sa]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f = temp_dir().join(format!("{sa}.token"));
    std::fs::write(&f, &t).unwrap();
    (f, t)
}

/// A mesh client's key and certificate as files, for curl and openssl: the key made by
/// openssl, the CSR signed by the control plane's CA for `sa`'s token.
fn mesh_client_files(cp: &Plane, sa: &str) -> (String, String) {
    let dir = temp_dir();
    let (key, csr) = (dir.join("client-key.pem"), dir.join("client.csr"));
    let uri = format!("subjectAltName=URI:spiffe://cluster.local/ns/default/sa/{sa}");
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/O=weft"])
        .args(["-addext", &uri, "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (_, token) = workload_token(cp, sa);
    let body = serde_json::json!({"csr": std::fs::read_to_string(&csr).unwrap()}).to_string();
    let (code, answer) = plane_raw_as(cp, Some(&token), "POST", "/v1/certificate", body.as_bytes());
    assert_eq!(code, 200, "{answer}");
    let a: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let cert = dir.join("client-cert.pem");
    std::fs::write(&cert, a["cert_pem"].as_str().unwrap()).unwrap();
    (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

/// The reviews sidecar, following `cp` with reviews' workload token (so it gets its
/// certificate from the CA before it serves), in front of `app`.
fn sidecar_with_identity(cp: &Plane, app: &Proc) -> Proxy {
    let (reviews_token, _) = workload_token(cp, "reviews");
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &cp.url(),
        "--ca-file",
        cp.ca_file().to_str().unwrap(),
        "--token-file",
        reviews_token.to_str().unwrap(),
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
    ]);
    Proxy { p, cfg: std::path::PathBuf::new() }
}

#[test]
fn under_permissive_one_inbound_port_serves_curl_with_a_mesh_certificate_and_plaintext() {
    let cp = plane();
    let app = backend("app", &[]);
    let p = sidecar_with_identity(&cp, &app);
    let inbound = p.p.inbound().unwrap();
    let (cert, key) = mesh_client_files(&cp, "productpage");
    let (code, body, err) = curl(&["-sk", "--cert", &cert, "--key", &key, &format!("https://{inbound}/")]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("URI=spiffe://cluster.local/ns/default/sa/productpage"), "{body}");
    let (code, body, err) = curl(&["-s", "-H", "x-forwarded-client-cert: URI=spiffe://forged", &format!("http://{inbound}/")]);
    assert_eq!(code, 0, "{err}");
    assert!(!body.contains("x-forwarded-client-cert"), "a client's XFCC is removed: {body}");
    let metrics = p.admin("/metrics");
    assert_eq!(metric_sum(&metrics, "istio_requests_total", &["connection_security_policy=\"mutual_tls\""]), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "istio_requests_total", &["reporter=\"destination\"", "connection_security_policy=\"none\""]), 1.0);
}

#[test]
fn under_strict_a_sidecar_with_an_identity_serves_mtls_from_mesh_clients_only() {
    let cp = plane();
    let out = cp.apply("strict.yaml", STRICT);
    assert!(out.status.success(), "{}", text(&out));
    let app = backend("app", &[]);
    let p = sidecar_with_identity(&cp, &app);
    let inbound = p.p.inbound().expect("the start line names the inbound listener");
    wait_until("STRICT from the control plane", || {
        curl(&["-s", "-o", "/dev/null", &format!("http://{inbound}/")]).0 != 0
            && p.metric("weft_inbound_plaintext_refused_total", &[]) >= 1.0
    });
    let root = cp.dir.join("ca/root-cert.pem");
    let root = root.to_str().unwrap();
    let (cert, key) = mesh_client_files(&cp, "productpage");
    let url = format!("https://{inbound}/hello");

    // A mesh client: in, and the app is told who called (a forged XFCC is replaced). The
    // server's certificate names a SPIFFE ID, not a host: curl checks the chain by
    // `openssl s_client` below, and skips its host-name check here (-k).
    let forged = "x-forwarded-client-cert: By=x;URI=spiffe://cluster.local/ns/default/sa/admin";
    let (code, body, err) = curl(&["-sk", "--cert", &cert, "--key", &key, "--cacert", root, "-H", forged, &url]);
    assert_eq!(code, 0, "{err}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        seen["headers"]["x-forwarded-client-cert"],
        "By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/default/sa/productpage",
        "{body}"
    );
    let metrics = p.admin("/metrics");
    let mtls = metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
            "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
            "connection_security_policy=\"mutual_tls\"",
        ],
    );
    assert_eq!(mtls, 1.0, "{metrics}");

    // openssl verifies the proxy's chain against the mesh root; without a client
    // certificate, the proxy refuses it.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nhost: reviews\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {inbound} -CAfile {root} -verify_return_error -ign_eof 2>&1"
        ))
        .output()
        .unwrap();
    let said = text(&out);
    assert!(said.contains("Verify return code: 0 (ok)"), "the proxy's certificate chains to the mesh root: {said}");
    assert!(!said.contains("HTTP/1.1 200"), "served without a client certificate: {said}");
    assert_eq!(p.wait_metric("weft_inbound_tls_handshake_failures_total", &["reason=\"no_client_cert\""], 1.0), 1.0);

    // A certificate from another mesh's CA: refused.
    let other = plane();
    let (cert, key) = mesh_client_files(&other, "productpage");
    let (code, _, _) = curl(&["-sk", "--cert", &cert, "--key", &key, &url]);
    assert_ne!(code, 0, "a certificate from another CA was let in");
    assert_eq!(p.wait_metric("weft_inbound_tls_handshake_failures_total", &["reason=\"unknown_ca\""], 1.0), 1.0);
    // Plaintext: refused (counted above, and again now).
    let before = p.metric("weft_inbound_plaintext_refused_total", &[]);
    assert_ne!(curl(&["-s", &format!("http://{inbound}/")]).0, 0);
    assert_eq!(p.wait_metric("weft_inbound_plaintext_refused_total", &[], before + 1.0), before + 1.0);
}
