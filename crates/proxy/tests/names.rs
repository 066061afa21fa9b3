//! Istio's bookinfo files, unchanged, with real requests on the in-process harness: the
//! short hosts of a VirtualService and DestinationRule are the services of their
//! namespace, and a request may name a service by any of its Kubernetes names.

use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

const DR_ALL: &str = include_str!("../../config/tests/istio/destination-rule-all.yaml");
const VS_ALL_V1: &str = include_str!("../../config/tests/istio/virtual-service-all-v1.yaml");
const VS_80_20: &str = include_str!("../../config/tests/istio/virtual-service-reviews-80-20.yaml");

/// reviews as a Kubernetes cluster has it: `reviews.default.svc.cluster.local:9080`, one
/// endpoint per version, each answering its version.
fn reviews(net: &Network) -> String {
    let mut eps = String::new();
    for v in 1..=3 {
        let a = format!("10.0.1.{v}:9080");
        net.serve(addr(&a), move |_| async move { answer(200, &format!("v{v}")) });
        eps.push_str(&format!("  - {{address: 10.0.1.{v}, labels: {{version: v{v}}}}}\n"));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints:\n{eps}"
    )
}

fn proxy_in(net: &Network, namespace: &str, files: &[&str]) -> Harness {
    let opts = ProxyOptions { namespace: namespace.into(), ..ProxyOptions::default() };
    Harness::with_options(net, &files.join("\n---\n"), opts)
}

#[tokio::test(start_paused = true)]
async fn every_name_of_reviews_follows_virtual_service_all_v1() {
    let net = Network::new();
    let h = proxy_in(&net, "default", &[&reviews(&net), DR_ALL, VS_ALL_V1]);
    for host in [
        "reviews",
        "reviews:9080",
        "reviews.default:9080",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local:9080",
        "REVIEWS.Default.svc.cluster.local",
    ] {
        for _ in 0..5 {
            let r = h.get(host, "/reviews/0").await;
            assert_eq!((r.status.as_u16(), r.text()), (200, "v1"), "{host}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn from_another_namespace_the_short_name_is_not_reviews() {
    let net = Network::new();
    let h = proxy_in(&net, "shop", &[&reviews(&net), DR_ALL, VS_ALL_V1]);
    assert_eq!(h.get("reviews:9080", "/").await.status, 404, "reviews from shop is reviews.shop");
    assert_eq!(h.get("reviews.default:9080", "/").await.text(), "v1");
}

#[tokio::test(start_paused = true)]
async fn reviews_80_20_splits_by_its_weights() {
    let net = Network::new();
    let h = proxy_in(&net, "default", &[&reviews(&net), DR_ALL, VS_80_20]);
    let mut v1 = 0;
    const N: usize = 2000;
    for _ in 0..N {
        match h.get("reviews:9080", "/").await.text() {
            "v1" => v1 += 1,
            "v2" => {}
            other => panic!("only v1 and v2 get traffic, not {other:?}"),
        }
    }
    let share = v1 as f64 / N as f64;
    assert!((0.75..=0.85).contains(&share), "v1 got {share}");
}

#[tokio::test(start_paused = true)]
async fn source_labels_pick_routes_by_the_proxys_own_workload() {
    // Istio's "route by source": calls from productpage go to v2, others to v1.
    let by_source = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let net = Network::new();
    let svc = reviews(&net);
    for (labels, want) in [(vec![("app", "productpage"), ("version", "v1")], "v2"), (vec![("app", "ratings")], "v1"), (vec![], "v1")] {
        let node = weft_proxy::cluster::Node::new(None, labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let opts = ProxyOptions { node, ..ProxyOptions::default() };
        let h = Harness::with_options(&net, &[svc.as_str(), DR_ALL, by_source].join("\n---\n"), opts);
        assert_eq!(h.get("reviews", "/").await.text(), want, "{labels:?}");
    }
}
