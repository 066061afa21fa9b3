//! Mesh identity from the control plane's CA: a sidecar with a workload token gets a
//! certificate for exactly its SPIFFE ID before it serves (the key never leaves it), and
//! nobody gets a certificate for an identity their token does not name.

mod common;

use common::*;

fn token(cp: &Plane, ns: &str, sa: &str) -> (std::path::PathBuf, String) {
    let out = cp.weft(&["token", "create", "--namespace", ns, "--service-account", sa]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f = temp_dir().join(format!("{ns}-{sa}.token"));
    std::fs::write(&f, &t).unwrap();
    (f, t)
}

fn sidecar(cp: &Plane, token: &std::path::Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(weft())
        .args(["proxy", "--control-plane", &cp.url(), "--token-file", token.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(cp.ca_args())
        .args(["--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_sidecar_gets_a_certificate_for_its_own_identity_before_it_serves() {
    let cp = plane();
    assert!(cp.dir.join("ca/root-cert.pem").exists(), "the CA is made on first start, in Istio's layout");
    let (reviews, _) = token(&cp, "default", "reviews");
    let p = spawn_reviews_sidecar(&cp, &reviews, &["--admin", "127.0.0.1:0"]);
    let p = Proxy { p, cfg: std::path::PathBuf::new() };
    let dump: serde_json::Value = serde_json::from_str(&p.admin("/config_dump")).unwrap();
    let id = &dump["identity"];
    assert_eq!(id["spiffe_id"], "spiffe://cluster.local/ns/default/sa/reviews", "{dump:#}");
    assert_eq!(id["sans"], serde_json::json!(["URI:spiffe://cluster.local/ns/default/sa/reviews"]));
    let (nb, na) = (id["not_before"].as_u64().unwrap(), id["not_after"].as_u64().unwrap());
    assert!((na - nb).abs_diff(24 * 3600 + 60) <= 120, "24 h (+ the minute back-dated): {nb} {na}");
    assert!(!dump.to_string().contains("PRIVATE KEY"), "never the key");
    let metrics = p.admin("/metrics");
    assert_eq!(metric_sum(&metrics, "weft_identity_cert_expiry_timestamp_seconds", &[]), na as f64);
    let cp_metrics = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert_eq!(metric_sum(&cp_metrics, "weft_control_certificates_issued_total", &[]), 1.0);
}

#[test]
fn a_token_gets_no_certificate_for_another_identity() {
    let cp = plane();
    let (reviews, reviews_token) = token(&cp, "default", "reviews");
    // A sidecar that says it is ratings, with reviews' token: refused, it does not start.
    let mut child = sidecar(&cp, &reviews, &["--service", "ratings"]);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("no mesh identity for spiffe://cluster.local/ns/default/sa/ratings") && err.contains("certificate refused"),
        "{err}"
    );
    // By hand: a CSR for another identity, garbage, a user's token, no token.
    let key = weft_tls::WorkloadKey::generate().unwrap();
    let other = weft_tls::SpiffeId::new("cluster.local", "default", "ratings").unwrap();
    let body = serde_json::json!({"csr": key.csr(&other).unwrap()}).to_string();
    let (code, answer) = plane_raw_as(&cp, Some(&reviews_token), "POST", "/v1/certificate", body.as_bytes());
    assert_eq!(code, 400, "{answer}");
    let other_td = weft_tls::SpiffeId::new("evil.example", "default", "reviews").unwrap();
    let body = serde_json::json!({"csr": key.csr(&other_td).unwrap()}).to_string();
    assert_eq!(plane_raw_as(&cp, Some(&reviews_token), "POST", "/v1/certificate", body.as_bytes()).0, 400);
    for junk in [
        &br#"{"csr":"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"}"#[..],
        br#"{"csr":""}"#,
        b"not json",
    ] {
        assert_eq!(plane_raw_as(&cp, Some(&reviews_token), "POST", "/v1/certificate", junk).0, 400);
    }
    let huge = serde_json::json!({"csr": "A".repeat(100 << 10)}).to_string();
    assert_eq!(plane_raw_as(&cp, Some(&reviews_token), "POST", "/v1/certificate", huge.as_bytes()).0, 400);
    let mine = weft_tls::SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let body = serde_json::json!({"csr": key.csr(&mine).unwrap()}).to_string();
    assert_eq!(plane_raw(&cp, "POST", "/v1/certificate", body.as_bytes()).0, 403, "an admin token is no workload");
    assert_eq!(plane_raw_as(&cp, None, "POST", "/v1/certificate", body.as_bytes()).0, 401);
    let (code, answer) = plane_raw_as(&cp, Some(&reviews_token), "POST", "/v1/certificate", body.as_bytes());
    assert_eq!(code, 200, "{answer}");
    let cp_metrics = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert_eq!(metric_sum(&cp_metrics, "weft_control_certificates_issued_total", &[]), 1.0);
    assert!(metric_sum(&cp_metrics, "weft_control_csr_refused_total", &[]) >= 3.0, "{cp_metrics}");
    // The answer verifies with openssl against the CA's root, and names only the SPIFFE ID.
    let a: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let dir = temp_dir();
    std::fs::write(dir.join("leaf.pem"), a["cert_pem"].as_str().unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(cp.dir.join("ca/root-cert.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_endpoint_a_workload_registers_is_in_the_mesh_as_its_identity() {
    let cp = plane();
    let (reviews, _) = token(&cp, "default", "reviews");
    let out = cp.weft_as(&reviews, &["register", "--service", "reviews", "--address", "127.0.0.1:15006"]);
    assert!(out.status.success(), "{}", text(&out));
    // An admin's registration claiming an identity is not in the mesh: identities come
    // from credentials, never from the body.
    let forged = br#"{"service":"ratings","address":"127.0.0.1:15007","identity":"spiffe://cluster.local/ns/default/sa/ratings"}"#;
    assert_eq!(plane_raw(&cp, "POST", "/v1/registry", forged).0, 200);
    let mesh = plane_raw(&cp, "GET", "/v1/mesh", b"").1;
    let line = |key: &str| mesh.lines().find(|l| l.contains(key)).unwrap_or_default().to_owned();
    let reviews_doc = line("\"registry/reviews.default.svc.cluster.local\"");
    assert!(reviews_doc.contains(r#""labels":{"security.istio.io/tlsMode":"istio"}"#), "{reviews_doc}");
    assert!(reviews_doc.contains(r#""subjectAltNames":["spiffe://cluster.local/ns/default/sa/reviews"]"#), "{reviews_doc}");
    let ratings_doc = line("\"registry/ratings.default.svc.cluster.local\"");
    assert!(!ratings_doc.contains("tlsMode") && !ratings_doc.contains("spiffe"), "{ratings_doc}");
}

#[test]
fn after_its_first_certificate_a_sidecar_is_known_by_it_and_outlives_its_bootstrap_token() {
    let cp = plane();
    let out = cp.weft(&["token", "create", "--namespace", "default", "--service-account", "reviews", "--ttl", "2s"]);
    assert!(out.status.success(), "{}", text(&out));
    let short = temp_dir().join("short.token");
    std::fs::write(&short, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let p = spawn_reviews_sidecar(&cp, &short, &["--node", "reviews-1"]);
    let p = Proxy { p, cfg: std::path::PathBuf::new() };
    // The token is past its expiry: it opens nothing any more...
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, _) =
        plane_raw_as(&cp, Some(std::fs::read_to_string(&short).unwrap().trim()), "POST", "/v1/watch", br#"{"node":"x","wait_ms":1}"#);
    assert_eq!(code, 401, "the bootstrap token expired");
    // ...yet the sidecar keeps following as its certificate's workload.
    let b = backend("echo", &[]);
    assert!(cp.weft(&["register", "--service", "echo", "--address", &b.addr.to_string()]).status.success());
    wait_until("the sidecar follows a change made after its token expired", || get(p.addr(), "echo", "/", &[]).status == 200);
    let status = text(&cp.weft(&["status"]));
    let row = status.lines().find(|l| l.starts_with("reviews-1")).unwrap_or_default().to_owned();
    assert!(row.contains("spiffe://cluster.local/ns/default/sa/reviews") && row.contains(" yes "), "{status}");
}

#[test]
fn a_single_use_bootstrap_token_is_not_replayed() {
    let cp = plane();
    let out = cp.weft(&["token", "create", "--namespace", "default", "--service-account", "reviews", "--uses", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let once = temp_dir().join("once.token");
    std::fs::write(&once, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let ca = cp.ca_file();
    let args = |node: &'static str| -> Vec<String> {
        ["proxy", "--control-plane", &cp.url(), "--ca-file", ca.to_str().unwrap(), "--token-file", once.to_str().unwrap(), "--node", node]
            .iter()
            .map(|s| s.to_string())
            .chain(
                ["--listen", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9", "--service", "reviews"].map(String::from),
            )
            .collect()
    };
    // Before its certificate, the token is its workload's: it may register its service.
    let register = |addr: &str| cp.weft_as(&once, &["register", "--service", "reviews", "--address", addr]);
    let before = register("127.0.0.1:9");
    assert!(before.status.success(), "{}", text(&before));
    let first: Vec<String> = args("reviews-1");
    let first_proxy = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    // Spent on the first proxy's certificate, it authenticates nothing more: a leaked
    // bootstrap token is not a workload's credential for the token's lifetime.
    let after = register("127.0.0.1:10");
    assert!(!after.status.success(), "a spent token still registers: {}", text(&after));
    assert!(text(&after).contains("spent: a --uses token authenticates nothing"), "{}", text(&after));
    // The first proxy, known by its certificate since, is not affected.
    wait_until("the first proxy follows as its certificate's workload", || {
        let status = text(&cp.weft(&["status"]));
        status.lines().any(|l| l.starts_with("reviews-1") && l.contains("spiffe://cluster.local/ns/default/sa/reviews"))
    });
    drop(first_proxy);
    // The same token again: no second certificate, the proxy does not start.
    let second = std::process::Command::new(weft()).args(args("reviews-2")).output().unwrap();
    assert!(!second.status.success());
    let err = text(&second);
    assert!(err.contains("has had its 1 certificate(s): a bootstrap token is not replayed"), "{err}");
    // Out-of-range counts are refused when the token is made.
    let out = cp.weft(&["token", "create", "--namespace", "default", "--service-account", "reviews", "--uses", "0"]);
    assert!(!out.status.success() && text(&out).contains("uses: 1 to 10,000"), "{}", text(&out));
}
