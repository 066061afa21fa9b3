//! `VirtualService.gateways`, as Istio reads it: a VirtualService bound only to gateways
//! is for those gateways, not for sidecars; the reserved `mesh` (or no `gateways` at
//! all) means sidecars. Istio's bookinfo gateway YAML (samples/bookinfo/networking/
//! bookinfo-gateway.yaml), unchanged but for its Gateway document's order.

const BOOKINFO_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#;

const SERVICES: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage}
spec:
  hosts: [productpage]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
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

#[test]
fn a_virtual_service_bound_to_a_gateway_does_not_capture_sidecar_traffic() {
    let (_, snap, diags) = weft_config::build_str("bookinfo.yaml", &format!("{BOOKINFO_GATEWAY}{SERVICES}"));
    assert!(diags.is_ok(), "{diags:?}");
    assert_eq!(snap.catch_all, None, "hosts: [\"*\"] bound to bookinfo-gateway is not the sidecars'");
    assert_eq!(snap.vhost("reviews").map(|v| v.name.as_str()), Some("ServiceEntry/reviews"));
    assert!(snap.vhost("unknown.example").is_none());
}

#[test]
fn mesh_among_the_gateways_or_none_at_all_means_sidecars() {
    // Bound to the sidecars, `hosts: ["*"]` is refused (Istio's rule: it would capture
    // every call of every sidecar); a named host is theirs.
    for gateways in ["  gateways:\n  - bookinfo-gateway\n  - mesh\n", ""] {
        let yaml = BOOKINFO_GATEWAY.replace("  gateways:\n  - bookinfo-gateway\n", gateways);
        let (_, _, diags) = weft_config::build_str("bookinfo.yaml", &format!("{yaml}{SERVICES}"));
        let text = diags.to_string();
        assert!(text.contains("VirtualService bookinfo: spec.hosts[0]: the wildcard host * is not allowed"), "{gateways:?}: {text}");
        let named = yaml.replace("  hosts:\n  - \"*\"\n  gateways", "  hosts:\n  - bookinfo.example\n  gateways");
        let named = if gateways.is_empty() { yaml.replace("  - \"*\"\n  http:", "  - bookinfo.example\n  http:") } else { named };
        let (_, snap, diags) = weft_config::build_str("bookinfo.yaml", &format!("{named}{SERVICES}"));
        assert!(diags.is_ok(), "{diags}");
        assert_eq!(snap.vhost("bookinfo.example").map(|v| v.name.as_str()), Some("VirtualService/bookinfo"), "{gateways:?}");
        assert_eq!(snap.vhost("reviews").map(|v| v.name.as_str()), Some("ServiceEntry/reviews"));
    }
}

#[test]
fn overlapping_hosts_in_one_virtual_service_are_refused() {
    let vs = |hosts: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n  hosts: {hosts}\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n")
    };
    for hosts in ["[a.example, a.example]", "[\"*.com\", \"*.foo.com\"]", "[\"*.example\", b.example]", "[A.example, a.EXAMPLE]"] {
        let (_, _, d) = weft_config::build_str("v.yaml", &format!("{}{SERVICES}", vs(hosts)));
        assert!(d.to_string().contains("spec.hosts[1]: duplicate hosts"), "{hosts}: {d}");
    }
    let (_, _, d) = weft_config::build_str("v.yaml", &format!("{}{SERVICES}", vs("[a.example, b.example, \"*.c.example\"]")));
    assert!(d.is_ok(), "{d}");
}

#[test]
fn a_gateway_bound_virtual_service_is_still_checked() {
    let bad = BOOKINFO_GATEWAY.replace("exact: /login", "regex: \"(\"");
    let (_, _, diags) = weft_config::build_str("bookinfo.yaml", &format!("{bad}{SERVICES}"));
    assert!(!diags.is_ok(), "an invalid regex is an error whoever the VirtualService is for");
}
