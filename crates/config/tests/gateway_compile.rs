//! An ingress gateway's compile (`weft_config::compile_for` with `Role::Gateway`): which
//! Gateways it serves, which VirtualServices apply there and on which hosts, and
//! Istio's validation of a Gateway, with field paths.

use weft_config::{build_str, build_str_for, GatewayRole, Role};

fn role(labels: &[(&str, &str)]) -> Role {
    Role::Gateway(GatewayRole { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), credentials_dir: None })
}

fn ingress() -> Role {
    role(&[("istio", "ingressgateway")])
}

const SERVICES: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
"#;

fn gateway(selector: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: httpbin-gateway}}\nspec:\n  selector: {selector}\n  servers:\n{servers}\n"
    )
}

fn vs(hosts: &str, gateways: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: httpbin}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n  - route:\n    - destination: {{host: httpbin, port: {{number: 8000}}}}\n"
    )
}

const HTTP_SERVER: &str = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"httpbin.example.com\"]";

#[test]
fn a_gateway_serves_only_the_virtual_services_bound_to_its_gateways_on_their_common_hosts() {
    let yaml = format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", HTTP_SERVER), vs("[\"*\"]", "[httpbin-gateway]"));
    let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    assert_eq!(snap.vhost("httpbin.example.com").map(|v| v.name.as_str()), Some("VirtualService/httpbin"));
    assert!(snap.vhost("other.example.com").is_none(), "the server admits httpbin.example.com only");
    assert!(snap.vhost("reviews").is_none(), "no default routes to ServiceEntries on a gateway");
    assert!(snap.gateway.as_ref().is_some_and(|g| g.tls_servers.is_empty()));

    // The sidecar's compile of the same files leaves the VirtualService out.
    let (_, snap, diags) = build_str("gw.yaml", &yaml);
    assert!(diags.is_ok(), "{diags}");
    assert!(snap.vhost("httpbin.example.com").is_none() && snap.catch_all.is_none());
    assert!(snap.gateway.is_none());
}

#[test]
fn selectors_and_gateway_names_decide() {
    for (selector, gateways, served) in [
        ("{istio: ingressgateway}", "[httpbin-gateway]", true),
        ("{istio: ingressgateway}", "[default/httpbin-gateway]", true),
        ("{istio: ingressgateway}", "[other/httpbin-gateway]", false),
        ("{istio: ingressgateway}", "[mesh]", false),
        ("{istio: egressgateway}", "[httpbin-gateway]", false),
        ("{istio: ingressgateway, app: x}", "[httpbin-gateway]", false),
        ("{}", "[httpbin-gateway]", true),
    ] {
        let yaml = format!("{}{}{SERVICES}", gateway(selector, HTTP_SERVER), vs("[httpbin.example.com]", gateways));
        let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
        assert!(diags.is_ok(), "{diags}");
        assert_eq!(snap.vhost("httpbin.example.com").is_some(), served, "{selector} {gateways}");
    }
    // No `gateways` at all means the mesh: not the gateway's.
    let yaml = format!("{}{SERVICES}", gateway("{istio: ingressgateway}", HTTP_SERVER))
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: m}\nspec:\n  hosts: [httpbin.example.com]\n  http:\n  - route:\n    - destination: {host: httpbin}\n";
    let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    assert!(snap.vhost("httpbin.example.com").is_none());
}

#[test]
fn server_host_namespaces_admit_virtual_services_by_namespace() {
    for (host, served) in
        [("\"*/httpbin.example.com\"", true), ("\"./httpbin.example.com\"", true), ("\"prod/httpbin.example.com\"", false)]
    {
        let server = format!("  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{host}]");
        let yaml = format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", &server), vs("[\"*\"]", "[httpbin-gateway]"));
        let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
        assert!(diags.is_ok(), "{diags}");
        assert_eq!(snap.vhost("httpbin.example.com").is_some(), served, "{host}");
    }
}

#[test]
fn https_redirect_maps_the_server_hosts_to_a_301() {
    let server = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [httpbin.example.com]\n    tls: {httpsRedirect: true}";
    let yaml = format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", server), vs("[httpbin.example.com]", "[httpbin-gateway]"));
    let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    let vh = snap.vhost("httpbin.example.com").expect("served");
    match &vh.routes[0].action {
        weft_config::Action::Redirect(r) => {
            assert_eq!((r.scheme.as_deref(), r.status.as_u16()), (Some("https"), 301));
        }
        a => panic!("{a:?}"),
    }
}

/// Each invalid Gateway: its error names the field (Istio's validation).
#[test]
fn invalid_gateways_are_refused_naming_the_field() {
    for (servers, path, words) in [
        ("    []", "spec.servers", "at least one server"),
        ("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [\"*\"]", "spec.servers[0].port.number", "out of range"),
        ("  - port: {number: 70000, name: http, protocol: HTTP}\n    hosts: [\"*\"]", "spec.servers[0].port.number", "out of range"),
        ("  - port: {number: 80, name: http, protocol: HTTQ}\n    hosts: [\"*\"]", "spec.servers[0].port.protocol", "unknown value"),
        ("  - port: {number: 80, protocol: HTTP}\n    hosts: [\"*\"]", "spec.servers[0].port.name", "missing"),
        ("  - hosts: [\"*\"]", "spec.servers[0].port", "missing field"),
        ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: []", "spec.servers[0].hosts", "at least one host"),
        ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"a b\"]", "spec.servers[0].hosts[0]", "is not a host"),
        ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"Bad_NS/x.com\"]", "spec.servers[0].hosts[0]", "namespace"),
        ("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]", "spec.servers[0].tls", "required"),
        (
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}",
            "spec.servers[0].tls.serverCertificate",
            "credentialName",
        ),
        (
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: MUTUAL, serverCertificate: a, privateKey: b}",
            "spec.servers[0].tls.caCertificates",
            "MUTUAL",
        ),
        (
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: x}",
            "spec.servers[0].tls",
            "plain-text",
        ),
        (
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: [\"*\"]",
            "spec.servers[1].port.name",
            "already",
        ),
    ] {
        let yaml = gateway("{istio: ingressgateway}", servers);
        let (_, _, diags) = build_str("gw.yaml", &yaml);
        let e = diags.errors.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{path}: {diags}"));
        assert!(e.message.contains(words), "{path}: {e}");
        assert!(e.to_string().contains("Gateway httpbin-gateway"), "{e}");
    }
}

#[test]
fn credentials_are_resolved_only_where_a_gateway_serves_them() {
    let server = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [httpbin.example.com]\n    tls: {mode: SIMPLE, credentialName: httpbin-credential}";
    let yaml = format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", server), vs("[httpbin.example.com]", "[mygateway]"));
    // Valid Istio: a sidecar's validation has nothing to read.
    assert!(build_str("gw.yaml", &yaml).2.is_ok());
    // The gateway needs the credential.
    let (_, _, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    let e = diags.errors.iter().find(|e| e.path == "spec.servers[0].tls.credentialName").unwrap_or_else(|| panic!("{diags}"));
    assert!(e.message.contains("--credentials-dir"), "{e}");
    let dir = std::env::temp_dir().join(format!("weft-gw-creds-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("httpbin-credential")).unwrap();
    std::fs::write(dir.join("httpbin-credential/tls.crt"), "not a certificate").unwrap();
    let r = Role::Gateway(GatewayRole { labels: [("istio".into(), "ingressgateway".into())].into(), credentials_dir: Some(dir.clone()) });
    let (_, _, diags) = build_str_for("gw.yaml", &yaml, &r);
    let e = diags.errors.iter().find(|e| e.path == "spec.servers[0].tls.credentialName").unwrap_or_else(|| panic!("{diags}"));
    assert!(e.message.contains("tls.crt"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn istio_mutual_servers_terminate_with_the_mesh_identity() {
    let server = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: ISTIO_MUTUAL}";
    let yaml = format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", server), vs("[httpbin.example.com]", "[httpbin-gateway]"));
    let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    let servers = &snap.gateway.as_ref().unwrap().tls_servers;
    assert!(matches!(servers[0].mode, weft_config::gateway::TlsServerMode::Mesh { .. }));
    // It takes no files: the mesh's certificates are used.
    let files = yaml.replace("tls: {mode: ISTIO_MUTUAL}", "tls: {mode: ISTIO_MUTUAL, credentialName: x}");
    let (_, _, diags) = build_str_for("gw.yaml", &files, &ingress());
    assert!(diags.to_string().contains("ISTIO_MUTUAL takes no credentialName"), "{diags}");
}

#[test]
fn mesh_and_a_gateway_both_apply() {
    let yaml =
        format!("{}{}{SERVICES}", gateway("{istio: ingressgateway}", HTTP_SERVER), vs("[httpbin.example.com]", "[mesh, httpbin-gateway]"));
    let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    assert!(snap.vhost("httpbin.example.com").is_some(), "the gateway");
    let (_, snap, _) = build_str("gw.yaml", &yaml);
    assert!(snap.vhost("httpbin.example.com").is_some(), "the sidecars");
}

/// A `tls[]` match's port names a Gateway server's: kept (matched by SNI alone on the
/// TLS listener) for a PASSTHROUGH server's port, dropped for any other.
#[test]
fn passthrough_routes_match_the_passthrough_servers_ports() {
    let server = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [nginx.example.com]\n    tls: {mode: PASSTHROUGH}";
    for (port, kept) in [("443", true), ("8443", false)] {
        let vs = format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: nginx}}\nspec:\n  hosts: [nginx.example.com]\n  gateways: [httpbin-gateway]\n  tls:\n  - match:\n    - port: {port}\n      sniHosts: [nginx.example.com]\n    route:\n    - destination: {{host: httpbin, port: {{number: 8000}}}}\n"
        );
        let yaml = format!("{}{vs}{SERVICES}", gateway("{istio: ingressgateway}", server));
        let (_, snap, diags) = build_str_for("gw.yaml", &yaml, &ingress());
        assert!(diags.is_ok(), "{diags}");
        assert!(snap.tls_routes.is_empty(), "the plain listener passes nothing through");
        let g = snap.gateway.as_ref().unwrap();
        assert!(g.tls_server(Some("nginx.example.com")).is_some());
        assert!(g.tls_server(None).is_none(), "no SNI: no server takes it");
        assert_eq!(g.passthrough_route("nginx.example.com").is_some(), kept, "port {port}");
    }
}

/// A gateway sees what `exportTo` exports to its namespace, as a sidecar does.
#[test]
fn export_to_applies_to_the_gateway_namespace() {
    for (export, served) in [("[\"*\"]", true), ("[\".\"]", false), ("[istio-system]", true)] {
        let vs = vs("[httpbin.example.com]", "[default/httpbin-gateway]").replace("  http:\n", &format!("  exportTo: {export}\n  http:\n"));
        let vs = vs.replace("metadata: {name: httpbin}", "metadata: {name: httpbin, namespace: prod}");
        let yaml = format!("{}{vs}{SERVICES}", gateway("{istio: ingressgateway}", HTTP_SERVER));
        let mut resources = Vec::new();
        let mut diags = weft_config::Diagnostics::default();
        weft_config::load_str("gw.yaml", &yaml, &mut resources, &mut diags);
        let snap = weft_config::compile_for(&resources, &weft_config::View::proxy("istio-system"), &ingress(), &mut diags);
        assert!(diags.is_ok(), "{diags}");
        assert_eq!(snap.vhost("httpbin.example.com").is_some(), served, "exportTo {export}");
    }
}

/// A gateway listens where its Gateways say: no listener for a ServiceEntry's opaque TCP
/// port, as a sidecar has.
#[test]
fn a_gateway_opens_no_sidecar_tcp_listeners() {
    let tcp = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n  resolution: STATIC\n  ports: [{number: 27017, name: mongo, protocol: MONGO}]\n  endpoints: [{address: 10.0.0.9}]\n";
    let yaml =
        format!("{}{}{SERVICES}{tcp}", gateway("{istio: ingressgateway}", HTTP_SERVER), vs("[httpbin.example.com]", "[httpbin-gateway]"));
    let (_, sidecar, diags) = build_str("gw.yaml", &yaml);
    assert!(diags.is_ok(), "{diags}");
    assert!(!sidecar.tcp_listeners.is_empty(), "the sidecar's");
    let (_, gw, diags) = build_str_for("gw.yaml", &yaml, &ingress());
    assert!(diags.is_ok(), "{diags}");
    assert!(gw.tcp_listeners.is_empty());
}

/// Istio's egress gateway task's shape: one VirtualService for the sidecars (`mesh`) and
/// the egress gateway, each route's `match.gateways` saying whose it is.
const EGRESS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.cnn.com]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn}
spec:
  hosts: [edition.cnn.com]
  ports: [{number: 80, name: http-port, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egressgateway, namespace: istio-system}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn-through-egress-gateway}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 80}}}]
  - match: [{gateways: [istio-egressgateway], port: 80}]
    route: [{destination: {host: edition.cnn.com, port: {number: 80}}, weight: 100}]
"#;

#[test]
fn route_match_gateways_split_one_virtual_service_between_sidecars_and_a_gateway() {
    let first_cluster = |snap: &weft_config::Snapshot| {
        let vh = snap.vhost("edition.cnn.com").expect("served");
        assert_eq!(vh.routes.len(), 1, "only the route whose match names this proxy");
        let weft_config::Action::Forward(w) = &vh.routes[0].action else { panic!("forward") };
        snap.clusters[w.targets[0].cluster.default].name.clone()
    };
    let (_, sidecar, d) = build_str("egress.yaml", EGRESS);
    assert!(d.is_ok(), "{d}");
    assert_eq!(first_cluster(&sidecar), "outbound|80||istio-egressgateway.istio-system.svc.cluster.local");
    let (_, egress, d) = build_str_for("egress.yaml", EGRESS, &role(&[("istio", "egressgateway")]));
    assert!(d.is_ok(), "{d}");
    assert_eq!(first_cluster(&egress), "outbound|80||edition.cnn.com");
}
