//! Upstream connections on the in-process harness: reuse, and what is not reused.

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::testing::*;

const UP: &str = "10.0.0.1:80";

/// Answers one request per connection with keep-alive, then closes it.
fn answers_once_then_closes(net: &Network) {
    net.raw(addr(UP), |mut io| {
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        });
    });
}

#[tokio::test(start_paused = true)]
async fn a_pooled_connection_closed_while_idle_is_not_reused() {
    let net = Network::new();
    answers_once_then_closes(&net);
    let config = service_entry("svc", &[UP]) + &virtual_service("svc", "    retries: {attempts: 0}\n");
    let h = Harness::new(&net, &config);
    // POST is not idempotent: sent on a connection found dead only after writing, it
    // would fail (503) rather than be sent again, so both succeeding means the closed
    // connection was seen and passed over before anything was written.
    for i in 0..2 {
        let req = http::Request::post("/").header("host", "svc").body(Full::new(Bytes::new())).unwrap();
        let r = h.request(req).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "ok"), "request {i}");
        tokio::task::yield_now().await;
    }
    assert_eq!(net.connects(addr(UP)).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_is_reused() {
    let net = Network::new();
    net.serve(addr(UP), |_| async { answer(200, "ok") });
    let h = Harness::new(&net, &service_entry("svc", &[UP]));
    for _ in 0..5 {
        assert_eq!(h.get("svc", "/").await.status, 200);
    }
    assert_eq!(net.connects(addr(UP)).len(), 1);
}

/// An upstream that accepts and reads, and never answers.
fn silent(net: &Network) {
    net.raw(addr(UP), |mut io| {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        });
    });
}

/// `n` concurrent GETs, each on its own client connection; the handles of their answers.
fn flood(h: &std::sync::Arc<Harness>, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..n)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("svc", "/").await })
        })
        .collect()
}

/// The finished answers among `handles`, as (status, response flags).
async fn finished(handles: &mut Vec<tokio::task::JoinHandle<Answer>>) -> Vec<(u16, String)> {
    let mut done = Vec::new();
    let mut i = 0;
    while i < handles.len() {
        if handles[i].is_finished() {
            let a = handles.swap_remove(i).await.expect("the request task");
            done.push((a.status.as_u16(), a.text().to_string()));
        } else {
            i += 1;
        }
    }
    done
}

/// Without a `connectionPool`, a cluster has Envoy's default circuit breaker: 1,024
/// HTTP/1.1 requests holding connections and 1,024 waiting for one; the rest get
/// `503` at once, and a waiting request gives up after the connect timeout (10 s).
#[tokio::test(start_paused = true)]
async fn without_a_connection_pool_a_cluster_opens_at_most_1024_connections() {
    let net = Network::new();
    silent(&net);
    let h = std::sync::Arc::new(Harness::new(&net, &service_entry("svc", &[UP])));
    let mut handles = flood(&h, 2100);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(net.connects(addr(UP)).len(), 1024, "connections opened");
    let early = finished(&mut handles).await;
    assert_eq!(early.len(), 2100 - 2048, "refused at once: {:?}", early.first());
    assert!(early.iter().all(|(s, t)| *s == 503 && t.contains("circuit breaker open (Pending)")), "{:?}", early.first());
    // The waiting requests give up after the connect timeout; the 1,024 in flight wait on.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let waited = finished(&mut handles).await;
    assert_eq!(waited.len(), 1024);
    assert!(waited.iter().all(|(s, t)| *s == 503 && t.contains("PendingTimeout")), "{:?}", waited.first());
    assert_eq!(handles.len(), 1024);
    assert_eq!(net.connects(addr(UP)).len(), 1024, "no connection beyond the limit, ever");
    assert_eq!(h.metric("weft_upstream_overflow_total", &[]), (52 + 1024) as f64);
}

/// A DestinationRule's `connectionPool` replaces the default.
#[tokio::test(start_paused = true)]
async fn a_connection_pool_raises_the_default_limit() {
    let net = Network::new();
    silent(&net);
    let config = service_entry("svc", &[UP]) + &destination_rule("svc", "{connectionPool: {tcp: {maxConnections: 1100}}}");
    let h = std::sync::Arc::new(Harness::new(&net, &config));
    let mut handles = flood(&h, 1100);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(net.connects(addr(UP)).len(), 1100);
    assert!(finished(&mut handles).await.is_empty());
}
