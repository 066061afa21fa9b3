//! A route to a subset no DestinationRule defines reaches no endpoint (503, as in Istio,
//! where that cluster does not exist) — never every version of the service.

use weft_config::{compile, load_str, Diagnostics};

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.mesh]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.mesh
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.mesh]
  http:
  - match: [{uri: {prefix: /canary}}]
    route: [{destination: {host: reviews.mesh, subset: v9}}]
  - route: [{destination: {host: reviews.mesh, subset: v1}}]
"#;

#[test]
fn a_route_to_an_undefined_subset_has_no_endpoints_and_says_so() {
    let (mut resources, mut d) = (Vec::new(), Diagnostics::default());
    load_str("mesh.yaml", MESH, &mut resources, &mut d);
    let snap = compile(&resources, &mut d);
    assert!(d.is_ok(), "{:?}", d.errors);
    assert!(d.warnings.iter().any(|w| w.to_string().contains("subset \"v9\"")), "{:?}", d.warnings);
    let cluster = |name: &str| snap.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no cluster {name}"));
    assert!(cluster("outbound|80|v9|reviews.mesh").endpoints.is_empty(), "v9 reaches no endpoint");
    let v1: Vec<&str> = cluster("outbound|80|v1|reviews.mesh").endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(v1, ["10.0.0.1"]);
}
