//! The ResponseCache filter on the in-process harness: what may never be shared
//! between clients, and answers that must stay correct (HTTP semantics in time are
//! tested end to end in crates/weft/tests/filters.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weft_proxy::testing::*;

const A: &str = "10.0.1.1:80";
const B: &str = "10.0.1.2:80";

fn cache(host: &str) -> String {
    format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: ResponseCache\nmetadata: {{name: {host}}}\nspec: {{host: {host}, maxBytes: 1000000}}\n")
}

/// An upstream answering `body` with these headers, counting its requests.
fn upstream(net: &Network, at: &str, body: &'static str, headers: &'static [(&'static str, &'static str)]) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    net.serve(addr(at), move |_| {
        h.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut r = answer(200, body);
            for (k, v) in headers {
                r.headers_mut().insert(*k, v.parse().expect("a header value"));
            }
            r
        }
    });
    hits
}

/// An upstream at `A` answering `200 doc` (or `304` to a conditional request) with
/// `Cache-Control: max-age=0`, so every later request revalidates; `headers(k, conditional,
/// head)` adds what the test needs to the `k`-th answer.
fn revalidating(net: &Network, headers: fn(usize, bool, &mut http::HeaderMap)) {
    let n = Arc::new(AtomicUsize::new(0));
    net.serve(addr(A), move |req| {
        let k = n.fetch_add(1, Ordering::Relaxed);
        let conditional = req.headers().contains_key("if-none-match");
        async move {
            let mut r = if conditional { answer(304, "") } else { answer(200, "doc") };
            r.headers_mut().insert("cache-control", "max-age=0".parse().expect("cc"));
            headers(k, conditional, r.headers_mut());
            r
        }
    });
}

fn get_with(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).expect("a request")
}

#[tokio::test(start_paused = true)]
async fn routes_chosen_by_header_never_share_entries() {
    // Tenant a's route goes to one cluster, everyone else's to another: a cached answer
    // for one must never be served to the other, though the URL is the same.
    let net = Network::new();
    let a = upstream(&net, A, "for tenant a", &[("cache-control", "max-age=600")]);
    let b = upstream(&net, B, "for everyone else", &[("cache-control", "max-age=600")]);
    let config = service_entry("svc-a", &[A])
        + &service_entry("svc-b", &[B])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.mesh]\n  http:\n  - match: [{headers: {x-tenant: {exact: a}}}]\n    route: [{destination: {host: svc-a}}]\n  - route: [{destination: {host: svc-b}}]\n"
        + &cache("web.mesh");
    let h = Harness::new(&net, &config);
    for round in 0..2 {
        let r = h.request(get_with("web.mesh", "/profile", &[("x-tenant", "a")])).await;
        assert_eq!(r.text(), "for tenant a", "round {round}");
        let r = h.request(get_with("web.mesh", "/profile", &[])).await;
        assert_eq!(r.text(), "for everyone else", "round {round}");
    }
    assert_eq!((a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)), (1, 1), "each route filled its own entry once");
}

#[tokio::test(start_paused = true)]
async fn a_set_cookie_on_a_revalidation_304_is_not_shared() {
    // Stored without a cookie; revalidated (max-age=0) by an upstream that answers 304
    // with a session cookie for the client that asked: the next client must not get it.
    let net = Network::new();
    revalidating(&net, |k, conditional, h| {
        h.insert("etag", "\"v1\"".parse().expect("etag"));
        if conditional {
            h.insert("set-cookie", format!("session=user{k}").parse().expect("cookie"));
        }
    });
    let h = Harness::new(&net, &(service_entry("web.mesh", &[A]) + &cache("web.mesh")));
    let first = h.get("web.mesh", "/").await;
    assert_eq!((first.text(), first.header("x-cache")), ("doc", Some("MISS")));
    let second = h.get("web.mesh", "/").await;
    assert_eq!((second.status.as_u16(), second.text(), second.header("x-cache")), (200, "doc", Some("HIT")), "revalidated");
    let third = h.get("web.mesh", "/").await;
    assert_eq!(third.text(), "doc");
    assert_eq!(third.header("set-cookie"), None, "another client's cookie was served from the cache");
}

#[tokio::test(start_paused = true)]
async fn a_304_for_another_representation_drops_the_entry() {
    // The stored entry says ETag v1; the upstream, revalidating, answers 304 with v2:
    // the client (who asked for no 304) gets the body, and the entry is dropped.
    let net = Network::new();
    revalidating(&net, |k, _, h| {
        h.insert("etag", if k == 0 { "\"v1\"" } else { "\"v2\"" }.parse().expect("etag"));
    });
    let h = Harness::new(&net, &(service_entry("web.mesh", &[A]) + &cache("web.mesh")));
    assert_eq!(h.get("web.mesh", "/").await.header("x-cache"), Some("MISS"));
    let r = h.get("web.mesh", "/").await;
    assert_eq!((r.status.as_u16(), r.text(), r.header("x-cache")), (200, "doc", Some("STALE")));
    let r = h.get("web.mesh", "/").await;
    assert_eq!((r.status.as_u16(), r.header("x-cache")), (200, Some("MISS")), "the entry was dropped");
}

#[tokio::test(start_paused = true)]
async fn an_empty_cacheable_response_is_stored() {
    let net = Network::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    net.serve(addr(A), move |_| {
        h2.fetch_add(1, Ordering::Relaxed);
        async {
            let mut r = answer(301, "");
            r.headers_mut().insert("location", "/elsewhere".parse().expect("location"));
            r.headers_mut().insert("cache-control", "max-age=600".parse().expect("cc"));
            r
        }
    });
    let h = Harness::new(&net, &(service_entry("web.mesh", &[A]) + &cache("web.mesh")));
    assert_eq!(h.get("web.mesh", "/old").await.header("x-cache"), Some("MISS"));
    let r = h.get("web.mesh", "/old").await;
    assert_eq!((r.status.as_u16(), r.header("x-cache"), r.header("location")), (301, Some("HIT"), Some("/elsewhere")));
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn upgrades_and_gets_with_bodies_bypass_the_cache() {
    let net = Network::new();
    let hits = upstream(&net, A, "doc", &[("cache-control", "max-age=600")]);
    let h = Harness::new(&net, &(service_entry("web.mesh", &[A]) + &cache("web.mesh")));
    for _ in 0..2 {
        let r = h
            .request(
                Request::get("/search")
                    .header("host", "web.mesh")
                    .header("content-length", "7")
                    .body(Full::new(Bytes::from_static(b"{\"q\":1}")))
                    .expect("a request"),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.header("x-cache")), (200, None), "a GET with a body is keyed by more than its URL");
    }
    assert_eq!(hits.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn coalesced_waiters_get_the_entry_with_the_route_headers_once() {
    // Concurrent misses wait for the first; their answer from the cache carries the
    // route's added response header once, as the first's does.
    let net = Network::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    net.serve(addr(A), move |_| {
        h2.fetch_add(1, Ordering::Relaxed);
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut r = answer(200, "slow doc");
            r.headers_mut().insert("cache-control", "max-age=600".parse().expect("cc"));
            r
        }
    });
    let config = service_entry("web.mesh", &[A])
        + &virtual_service("web.mesh", "    headers: {response: {add: {x-served-by: weft}}}\n")
        + &cache("web.mesh");
    let h = Arc::new(Harness::new(&net, &config));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("web.mesh", "/").await })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("a task");
        assert_eq!(r.text(), "slow doc");
        assert_eq!(r.headers.get_all("x-served-by").iter().count(), 1, "x-cache {:?}", r.header("x-cache"));
    }
    assert_eq!(hits.load(Ordering::Relaxed), 1, "ten concurrent misses, one upstream request");
}
