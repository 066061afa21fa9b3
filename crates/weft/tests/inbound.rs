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
