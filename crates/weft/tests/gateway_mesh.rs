//! A Gateway server with `tls.mode: ISTIO_MUTUAL`: the gateway, following the control
//! plane with a workload token, terminates mesh mTLS with its own certificate; a sidecar
//! in the mesh reaches it by auto mTLS (the gateway registered its TLS listener as its
//! service); a client without a mesh certificate is refused; the gateway's metrics name
//! the caller's identity.

mod common;

use common::*;

fn config(app: std::net::SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: mesh-gateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: through-gateway, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [mesh-gateway]
  http: [{{route: [{{destination: {{host: app.example}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app, namespace: istio-system}}
spec:
  hosts: [app.example]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
"#,
        app.port()
    )
}

#[test]
fn istio_mutual_servers_terminate_mesh_mtls_with_the_gateways_identity() {
    let cp = plane();
    let app = backend("app", &[]);
    assert!(cp.apply("mesh.yaml", &config(app.addr)).status.success());
    let (gw_token, sleep_token) = (workload_token(&cp, "istio-system", "istio-ingressgateway"), workload_token(&cp, "default", "sleep"));
    let (url, ca) = (cp.url(), cp.ca_file().to_str().unwrap().to_owned());
    let gw = spawn(&[
        "gateway",
        "--control-plane",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        gw_token.to_str().unwrap(),
        "--service-account",
        "istio-ingressgateway",
        "--namespace",
        "istio-system",
        "--node",
        "gw-1",
        "--listen",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--gateway-labels",
        "istio=ingressgateway",
    ]);
    let log = gw.log_text();
    let https: std::net::SocketAddr = log
        .split("https on ")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no https address: {log}"));
    // The gateway's workload registers its TLS listener: in the mesh, as its identity.
    let out = cp.weft_as(&gw_token, &["register", "--service", "istio-ingressgateway", "--address", &https.to_string()]);
    assert!(out.status.success(), "{}", text(&out));

    let p = spawn(&[
        "proxy",
        "--control-plane",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        sleep_token.to_str().unwrap(),
        "--service-account",
        "sleep",
        "--service",
        "sleep",
        "--node",
        "sleep-1",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let sleep = Proxy { p, cfg: std::path::PathBuf::new() };
    wait_until("the sidecar reaches the app through the gateway", || {
        get(sleep.addr(), "istio-ingressgateway.istio-system", "/", &[]).status == 200
    });
    assert_eq!(get(sleep.addr(), "istio-ingressgateway.istio-system", "/", &[]).backend(), "app");
    // The gateway knows who called.
    let gw_admin = gw.admin.expect("admin");
    let mut c = Client::connect(gw_admin);
    let m = c.get("admin", "/metrics", &[]).text();
    assert!(
        metric_sum(
            &m,
            "istio_requests_total",
            &["source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"", "response_code=\"200\""]
        ) >= 1.0,
        "{m}"
    );
    // No mesh certificate, no service: curl's handshake is refused (or the connection closed).
    let resolve = format!("anything.example:{}:127.0.0.1", https.port());
    let (rc, _, _) = curl(&["-k", "--resolve", &resolve, &format!("https://anything.example:{}/", https.port())]);
    assert_ne!(rc, 0, "a client without a mesh certificate is refused");
}
