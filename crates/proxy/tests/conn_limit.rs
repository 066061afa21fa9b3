//! The default upstream circuit breaker: with no `connectionPool` a cluster opens at
//! most 1,024 upstream connections (Envoy's default); requests beyond wait in a bounded
//! queue for one to close, and the rest are refused with 503 UO. On paused time.

use std::sync::Arc;

use weft_proxy::testing::*;

const SILENT: &str = "10.0.3.1:80";

#[tokio::test(start_paused = true)]
async fn a_cluster_opens_at_most_1024_connections_by_default() {
    let net = Network::new();
    // Accepts and never answers: every request holds its connection.
    net.raw(addr(SILENT), |io| {
        tokio::spawn(async move {
            let _held = io;
            std::future::pending::<()>().await;
        });
    });
    // maxConnections unset (the default applies); a short queue of 2 for the test.
    let config = service_entry("svc", &[SILENT]) + &destination_rule("svc", "{connectionPool: {http: {http1MaxPendingRequests: 2}}}");
    let h = Arc::new(Harness::new(&net, &config));
    let tasks: Vec<_> = (0..1030)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("svc", "/").await.status.as_u16() })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        *codes.entry(t.await.expect("a task")).or_default() += 1;
    }
    assert_eq!(net.connects(addr(SILENT)).len(), 1024, "connections opened ({codes:?})");
    // 4 found the queue full, 2 waited for a connection that never closed (10 s, the
    // connect timeout): 503 UO. The 1,024 that were sent ended by the stream idle timeout.
    assert_eq!(codes.get(&503), Some(&6), "{codes:?}");
    assert_eq!(h.metric("istio_requests_total", &["response_flags=\"UO\""]), 6.0);
    assert_eq!(codes.values().sum::<usize>(), 1030);
}
