//! Header operations and hop-by-hop fields on the in-process harness.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use weft_proxy::testing::*;

const A: &str = "10.0.2.1:80";

#[tokio::test(start_paused = true)]
async fn a_client_cannot_remove_a_header_the_route_sets_by_naming_it_in_connection() {
    let net = Network::new();
    let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    net.serve(addr(A), move |req| {
        *s.lock().expect("lock") = Some(req.headers().clone());
        async { answer(200, "ok") }
    });
    let config = service_entry("svc", &[A]) + &virtual_service("svc", "    headers: {request: {set: {x-tenant: blue}}}\n");
    let h = Harness::new(&net, &config);
    let req = Request::get("/")
        .header("host", "svc")
        .header("connection", "x-tenant, x-other")
        .header("x-other", "gone")
        .body(Full::<Bytes>::default())
        .expect("a request");
    assert_eq!(h.request(req).await.status, 200);
    let headers = seen.lock().expect("lock").clone().expect("the upstream saw the request");
    assert_eq!(headers.get("x-tenant").map(|v| v.as_bytes()), Some(&b"blue"[..]), "the route's header arrives");
    assert!(!headers.contains_key("x-other"), "a header the client named in Connection is hop-by-hop");
}

#[tokio::test(start_paused = true)]
async fn a_destinations_response_header_operations_win_over_the_routes() {
    let net = Network::new();
    net.serve(addr(A), |_| async { answer(200, "ok") });
    let config = service_entry("svc", &[A])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n  - route:\n    - destination: {host: svc}\n      headers: {response: {set: {x-level: destination}}}\n    headers: {response: {set: {x-level: route}}}\n";
    let h = Harness::new(&net, &config);
    let r = h.get("svc", "/").await;
    assert_eq!(r.header("x-level"), Some("destination"), "the most specific operation wins, as Istio configures Envoy");
}
