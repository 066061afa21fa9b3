//! The namespace a service's metrics name: the one in a Kubernetes service name, else
//! the namespace of the ServiceEntry that declares the host — never a piece of an
//! external host name.

fn se(name: &str, ns: Option<&str>, host: &str) -> String {
    let ns = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
    format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}{ns}}}\nspec:\n  hosts: [{host}]\n  resolution: DNS\n  ports: [{{number: 443, name: https, protocol: TLS}}]\n")
}

#[test]
fn a_service_namespace_is_its_kubernetes_namespace_or_its_service_entrys() {
    let yaml = [
        se("google", Some("egress"), "www.googleapis.com"),
        se("reviews", Some("other"), "reviews.bookinfo.svc.cluster.local"),
        se("plain", None, "api.example.com"),
    ]
    .concat();
    let (_, snap, diags) = weft_config::build_str("names.yaml", &yaml);
    assert!(diags.is_ok(), "{diags:?}");
    let ns = |service: &str| snap.clusters.iter().find(|c| c.service == service).map(|c| c.namespace.clone());
    assert_eq!(ns("www.googleapis.com").as_deref(), Some("egress"), "not \"googleapis\"");
    assert_eq!(ns("reviews.bookinfo.svc.cluster.local").as_deref(), Some("bookinfo"));
    assert_eq!(ns("api.example.com").as_deref(), Some("default"));
}
