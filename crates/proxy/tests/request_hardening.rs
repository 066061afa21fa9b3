//! Hostile requests on the in-process harness: path normalization, ambiguous hosts,
//! upgrades, and client body faults — each with what the upstream received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::normalize::PathNormalization;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

/// What the upstream saw: each request's path and query, and its headers of interest.
type Seen = Arc<Mutex<Vec<String>>>;

fn recording(net: &Network) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    net.serve(addr("10.0.0.1:80"), move |req| {
        let s = s.clone();
        async move {
            let mut line = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            for h in ["host", "upgrade", "http2-settings", "connection"] {
                for v in req.headers().get_all(h) {
                    line += &format!(" {h}={}", v.to_str().unwrap_or("?"));
                }
            }
            // The whole body is read before answering (a broken one ends the request).
            let ok = req.into_body().collect().await.is_ok();
            s.lock().unwrap().push(line);
            answer(if ok { 200 } else { 500 }, "up")
        }
    });
    seen
}

/// `/admin` is refused by a direct response; everything else goes to the upstream.
fn admin_guarded() -> String {
    service_entry("svc", &["10.0.0.1:80"])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n  - match: [{uri: {prefix: /admin}}]\n    directResponse: {status: 403, body: {string: \"no\"}}\n  - route: [{destination: {host: svc}}]\n"
}

fn with_mode(m: PathNormalization) -> ProxyOptions {
    ProxyOptions { path_normalization: m, ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn encoded_and_dotted_paths_cannot_bypass_a_prefix_route() {
    let net = Network::new();
    let seen = recording(&net);
    let h = Harness::new(&net, &admin_guarded());
    for p in ["/x/../admin", "/./admin", "/%2e%2e/admin", "/%2E%2e/admin", "/%61dmin", "/x\\..\\admin", "/a/b/../../../admin/x"] {
        let r = h.get("svc", p).await;
        assert_eq!(r.status.as_u16(), 403, "{p}");
    }
    for p in ["/%00admin", "/a%0aX", "/%zz"] {
        assert_eq!(h.get("svc", p).await.status.as_u16(), 400, "{p}");
    }
    assert!(seen.lock().unwrap().is_empty(), "the upstream saw {:?}", seen.lock().unwrap());
    // Forwarded normalized, the query kept; `//admin` is not merged under `base` (Istio's).
    assert_eq!(h.get("svc", "/a/./b/../%7Ec?q=/../x").await.status.as_u16(), 200);
    assert_eq!(h.get("svc", "//admin").await.status.as_u16(), 200);
    let seen: Vec<String> = seen.lock().unwrap().iter().map(|l| l.split(' ').next().unwrap_or("").to_owned()).collect();
    assert_eq!(seen, ["/a/~c?q=/../x", "//admin"]);
}

#[tokio::test(start_paused = true)]
async fn the_other_normalization_modes() {
    let net = Network::new();
    let seen = recording(&net);
    let h = Harness::with_options(&net, &admin_guarded(), with_mode(PathNormalization::MergeSlashes));
    assert_eq!(h.get("svc", "//admin").await.status.as_u16(), 403);
    assert_eq!(h.get("svc", "/a%2F..%2Fadmin").await.status.as_u16(), 200);
    let h = Harness::with_options(&net, &admin_guarded(), with_mode(PathNormalization::DecodeAndMergeSlashes));
    assert_eq!(h.get("svc", "/a%2F..%2Fadmin").await.status.as_u16(), 403);
    assert_eq!(h.get("svc", "/a%5c..%5cadmin").await.status.as_u16(), 403);
    let h = Harness::with_options(&net, &admin_guarded(), with_mode(PathNormalization::None));
    assert_eq!(h.get("svc", "/x/../admin").await.status.as_u16(), 200);
    let seen: Vec<String> = seen.lock().unwrap().iter().map(|l| l.split(' ').next().unwrap_or("").to_owned()).collect();
    assert_eq!(seen, ["/a%2F..%2Fadmin", "/x/../admin"]);
}

#[tokio::test(start_paused = true)]
async fn two_host_headers_are_refused() {
    let net = Network::new();
    let seen = recording(&net);
    let h = Harness::new(&net, &admin_guarded());
    let req = Request::get("/").header("host", "svc").header("host", "evil").body(Full::default()).unwrap();
    assert_eq!(h.request(req).await.status.as_u16(), 400);
    // Absolute form: the URI's authority routes and is the Host the upstream gets.
    let req = Request::get("http://svc/p").header("host", "evil").body(Full::default()).unwrap();
    assert_eq!(h.request(req).await.status.as_u16(), 200);
    assert_eq!(*seen.lock().unwrap(), ["/p host=svc"]);
}

#[tokio::test(start_paused = true)]
async fn h2c_upgrades_are_stripped_and_other_protocols_refused() {
    let net = Network::new();
    let seen = recording(&net);
    let h = Harness::new(&net, &admin_guarded());
    let req = Request::get("/h2c")
        .header("host", "svc")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")
        .body(Full::default())
        .unwrap();
    assert_eq!(h.request(req).await.status.as_u16(), 200);
    let req = Request::get("/tls")
        .header("host", "svc")
        .header("connection", "upgrade")
        .header("upgrade", "TLS/1.3")
        .body(Full::default())
        .unwrap();
    assert_eq!(h.request(req).await.status.as_u16(), 403);
    assert_eq!(*seen.lock().unwrap(), ["/h2c host=svc"], "no upgrade header reached the upstream");
}

#[tokio::test(start_paused = true)]
async fn a_101_to_a_plain_request_is_not_a_tunnel() {
    let net = Network::new();
    net.raw(addr("10.0.0.1:80"), |mut io| {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = io.read(&mut buf).await;
            let _ = io.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n").await;
            let _ = io.read(&mut buf).await;
        });
    });
    let h = Harness::new(&net, &(service_entry("svc", &["10.0.0.1:80"]) + &virtual_service("svc", "")));
    // weft's client takes the 101 for an interim answer and waits for a final one (the
    // stream idles out); hyper's is answered 502. Either way, no tunnel: the client
    // connection goes on speaking HTTP.
    let mut c = h.connect().await;
    let status = c.get("svc", "/").await.status.as_u16();
    assert!(status == 408 || status == 502, "{status}");
    assert!(c.get("nowhere", "/").await.status.as_u16() == 404, "the connection still routes");
}

/// Reads what the proxy answered on a raw connection, up to its close or `limit`.
async fn read_answer(io: &mut tokio::io::DuplexStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn outlier_config() -> String {
    service_entry("svc", &["10.0.0.1:80"])
        + &virtual_service("svc", "    retries: {attempts: 3, retryOn: 5xx,reset,connect-failure}\n")
        + &destination_rule(
            "svc",
            "{outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}",
        )
}

#[tokio::test(start_paused = true)]
async fn malformed_and_aborted_bodies_are_the_clients_fault() {
    let net = Network::new();
    let seen = recording(&net);
    let h = Harness::new(&net, &outlier_config());
    for _ in 0..6 {
        let mut io = h.connect_raw();
        io.write_all(b"POST /m HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n").await.unwrap();
        let a = read_answer(&mut io).await;
        assert!(a.is_empty() || a.starts_with("HTTP/1.1 400"), "{a}");
        let mut io = h.connect_raw();
        io.write_all(b"POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\nonly ten..").await.unwrap();
        io.shutdown().await.unwrap();
        let _ = read_answer(&mut io).await;
    }
    assert_eq!(h.metric("istio_requests_total", &["response_flags=\"DPE\""]), 6.0);
    assert_eq!(h.metric("istio_requests_total", &["response_flags=\"DC\""]), 6.0);
    assert_eq!(h.metric("istio_requests_total", &["response_flags=\"UC\""]), 0.0);
    assert_eq!(h.metric("weft_outlier_ejections_total", &[]), 0.0);
    // None was retried: each reached the upstream at most once.
    assert!(seen.lock().unwrap().len() <= 12, "{:?}", seen.lock().unwrap());
    let r = h.request(Request::post("/ok").header("host", "svc").body(Full::new(Bytes::from_static(b"fine"))).unwrap()).await;
    assert_eq!(r.status.as_u16(), 200, "the endpoint is still in service");
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_first_requests_shares_one_h2_connection() {
    let net = Network::new();
    net.serve(addr("10.0.0.1:80"), |_| async { answer(200, "up") });
    let config = service_entry("svc", &["10.0.0.1:80"])
        + &virtual_service("svc", "")
        + &destination_rule("svc", "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}");
    let h = Harness::new(&net, &config);
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(h.connect().await);
    }
    let answers = futures_join(clients.iter_mut().map(|c| c.get("svc", "/"))).await;
    assert!(answers.iter().all(|a| a.status.as_u16() == 200));
    assert_eq!(net.connects(addr("10.0.0.1:80")).len(), 1, "one upstream connection for the burst");
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut handles = Vec::new();
    for f in fs {
        handles.push(Box::pin(f));
    }
    let mut out = Vec::new();
    // Polled together: each is started before any is awaited to its end.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}
