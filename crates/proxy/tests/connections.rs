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
