//! A ServiceEntry's `workloadSelector` picks WorkloadEntry resources of its namespace as
//! its endpoints (Istio's way to put VMs in the mesh); subsets select among them by label.

use weft_proxy::testing::*;

const YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details-svc, namespace: vm}
spec:
  hosts: [details.vm.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector:
    labels: {app: details}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm-1, namespace: vm}
spec: {address: 10.0.0.1, labels: {app: details, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm-2, namespace: vm}
spec: {address: 10.0.0.2, labels: {app: details, version: v2}, ports: {http: 9090}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec: {address: 10.0.0.3, labels: {app: details, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: vm}
spec:
  host: details
  subsets: [{name: v2, labels: {version: v2}}]
"#;

#[tokio::test(start_paused = true)]
async fn workload_entries_are_the_endpoints_their_selector_picks() {
    let net = Network::new();
    net.serve(addr("10.0.0.1:8080"), |_| async { answer(200, "vm-1") });
    net.serve(addr("10.0.0.2:9090"), |_| async { answer(200, "vm-2") });
    net.serve(addr("10.0.0.3:8080"), |_| async { answer(200, "other namespace") });
    let h = Harness::new(&net, YAML);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = h.get("details.vm.svc.cluster.local", "/").await;
        assert_eq!(r.status, 200);
        seen.insert(r.text().to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["vm-1", "vm-2"], "the namespace's entries, each on its port");
    // A subset by the entries' labels.
    h.install(&format!(
        "{YAML}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: details, namespace: vm}}\nspec:\n  hosts: [details]\n  http: [{{route: [{{destination: {{host: details, subset: v2}}}}]}}]\n"
    ));
    for _ in 0..10 {
        assert_eq!(h.get("details.vm", "/").await.text(), "vm-2");
    }
}

#[test]
fn hostile_workload_entries_and_selectors_are_refused() {
    let se = |extra: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s}}\nspec:\n  hosts: [s.example]\n  ports: [{{number: 80, name: http}}]\n{extra}")
    };
    let we = |spec: &str| format!("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w}}\nspec: {spec}\n");
    for (yaml, want) in [
        (se("  workloadSelector: {labels: {app: \"*\"}}\n"), "spec.workloadSelector.labels[app]"),
        (se("  workloadSelector: {labels: {app: a}}\n  endpoints: [{address: 10.0.0.1}]\n"), "only one of workloadSelector or endpoints"),
        (we("{address: \"not an address\"}"), "spec.address"),
        (we("{}"), "spec.address: missing field"),
        (we("{address: 10.0.0.1, ports: {\"@\": 80}}"), "spec.ports.\"@\""),
        (we("{address: 10.0.0.1, ports: {http: 99999}}"), "spec.ports.http"),
        (we("{address: \"unix://relative\"}"), "absolute path"),
        (we("{address: \"unix:///a/\"}"), "directory"),
        (we("{address: \"unix:///a\", ports: {http: 80}}"), "takes no ports"),
        (we("{address: 10.0.0.1, labels: {\"bad key!\": x}}"), "spec.labels"),
    ] {
        let (_, _, d) = weft_config::build_str("x.yaml", &yaml);
        assert!(!d.is_ok() && d.to_string().contains(want), "{yaml}\n{d}");
    }
}
