//! A ServiceEntry's endpoints with equal labels or ports hold one map, and the compiled
//! endpoints share it (the memory of a proxy holding 100,000 endpoints).

use std::sync::Arc;

use weft_config::{compile, load_str, Diagnostics, Spec};

const ENTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.mesh]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9080}, labels: {version: v1, app: reviews}}
  - {address: 10.0.0.2, ports: {http: 9080}, labels: {app: reviews, version: v1}}
  - {address: 10.0.0.3, ports: {http: 9081}, labels: {version: v2, app: reviews}}
"#;

#[test]
fn equal_labels_and_ports_are_one_map_loaded_and_compiled() {
    let (mut resources, mut d) = (Vec::new(), Diagnostics::default());
    load_str("mesh.yaml", ENTRY, &mut resources, &mut d);
    assert!(d.is_ok(), "{:?}", d.errors);
    let Spec::ServiceEntry(se) = &resources[0].spec else { panic!("a ServiceEntry") };
    let eps = &se.endpoints;
    assert!(Arc::ptr_eq(&eps[0].labels, &eps[1].labels), "the same labels in another order are one map");
    assert!(!Arc::ptr_eq(&eps[0].labels, &eps[2].labels));
    assert_eq!(eps[2].labels.get("version").map(String::as_str), Some("v2"));
    assert!(Arc::ptr_eq(&eps[0].ports, &eps[1].ports));
    assert_eq!(eps[2].ports.get("http"), Some(&9081));

    let snap = compile(&resources, &mut d);
    let cluster = snap.clusters.iter().find(|c| c.service == "reviews.mesh").expect("the cluster");
    let compiled: Vec<_> = cluster.endpoints.iter().map(|e| (e.address.as_str(), e.port)).collect();
    assert_eq!(compiled, [("10.0.0.1", 9080), ("10.0.0.2", 9080), ("10.0.0.3", 9081)]);
    assert!(Arc::ptr_eq(&cluster.endpoints[0].labels, &eps[0].labels), "compiled endpoints share the entry's labels");
    assert!(Arc::ptr_eq(&cluster.endpoints[1].labels, &cluster.endpoints[0].labels));
}
