//! The inbound side on the in-process harness: whatever a request's host, it goes to
//! the app; the outbound side keeps routing by host; reloads keep the inbound route.

use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

const APP: &str = "127.0.0.1:8080";
const OTHER: &str = "10.0.0.2:80";

fn sidecar(net: &Network, yaml: &str) -> Harness {
    let spec = weft_config::InboundSpec { app: addr(APP), service: "reviews".into(), namespace: "default".into() };
    let opts = ProxyOptions { inbound: Some((addr("127.0.0.1:15006"), spec)), ..ProxyOptions::default() };
    Harness::with_options(net, yaml, opts)
}

#[tokio::test(start_paused = true)]
async fn every_inbound_request_goes_to_the_app_whatever_its_host() {
    let net = Network::new();
    net.serve(
        addr(APP),
        |req| async move { answer(200, &format!("app saw {} {}", req.uri().path(), req.headers()["host"].to_str().unwrap())) },
    );
    net.serve(addr(OTHER), |_| async { answer(200, "other") });
    let h = sidecar(&net, &service_entry("other", &[OTHER]));
    for host in ["reviews", "reviews.default.svc.cluster.local:9080", "other", "anything.example"] {
        let r = h.connect_inbound().await.get(host, "/x/../p").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, format!("app saw /p {host}").as_str()));
    }
    // The outbound side routes by host as before, and knows nothing of the app.
    assert_eq!(h.get("other", "/").await.text(), "other");
    assert_eq!(h.get("reviews", "/").await.status, 404);
    // Reported as the destination's requests.
    assert_eq!(
        h.metric("istio_requests_total", &["reporter=\"destination\"", "destination_service=\"reviews.default.svc.cluster.local\""]),
        4.0
    );
    assert_eq!(h.metric("istio_requests_total", &["reporter=\"source\"", "destination_service=\"other\""]), 1.0);
    // Namespaces: the workload's, and the ServiceEntry's (it has none: `default`), not a
    // piece of the host name.
    let ns = ["destination_service_namespace=\"default\""];
    assert_eq!(h.metric("istio_requests_total", &[&["destination_service=\"reviews.default.svc.cluster.local\""][..], &ns].concat()), 4.0);
    assert_eq!(h.metric("istio_requests_total", &[&["destination_service=\"other\""][..], &ns].concat()), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_inbound_route_survives_a_reload() {
    let net = Network::new();
    net.serve(addr(APP), |_| async { answer(200, "app") });
    let h = sidecar(&net, "");
    assert_eq!(h.connect_inbound().await.get("x", "/").await.text(), "app");
    h.install(&service_entry("other", &[OTHER]));
    assert_eq!(h.connect_inbound().await.get("x", "/").await.text(), "app");
}

#[tokio::test(start_paused = true)]
async fn an_app_that_is_down_is_a_503_and_is_not_retried() {
    let net = Network::new();
    net.refuse(addr(APP));
    let h = sidecar(&net, "");
    let r = h.connect_inbound().await.get("x", "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Not retried: a request the app may have seen must not reach it twice.
    assert_eq!(net.connects(addr(APP)).len(), 1);
}
