//! Opaque TCP on the in-process harness: a ServiceEntry's TCP port and the VirtualService
//! `tcp[]` routes of Istio's TCP traffic shifting task (80/20 over v1/v2, subsets by the
//! task's DestinationRule), the match on port and VIP, maxConnections, connect failures
//! with outlier detection, and the idle timeout on the paused clock.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::testing::*;

const SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// The task's tcp-echo-20-v2 routes, for the sidecars (`mesh`) instead of its gateway.
const SHIFT_20: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
"#;

/// tcp-echo: answers "<name> <what it read>" for each chunk.
fn echo(net: &Network, addr_port: &str, name: &'static str) {
    net.raw(addr(addr_port), move |mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(format!("{name} {}", String::from_utf8_lossy(&buf[..n])).as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    });
}

async fn call(h: &Harness, local: &str, msg: &str) -> String {
    let mut c = h.connect_tcp(local);
    c.write_all(msg.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.map(|r| r.unwrap_or(0)).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(start_paused = true)]
async fn tcp_traffic_shifting_splits_connections_80_20() {
    let net = Network::new();
    echo(&net, "10.0.0.1:9000", "one");
    echo(&net, "10.0.0.2:9000", "two");
    let h = Harness::new(&net, SERVICE);
    // No VirtualService: the service itself, both endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(call(&h, "127.0.0.1:9000", "hi").await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["one hi", "two hi"]);

    h.install(&format!("{SERVICE}{SHIFT_20}"));
    const N: usize = 1000;
    let mut v1 = 0;
    for i in 0..N {
        match call(&h, "127.0.0.1:9000", &format!("{i}")).await {
            s if s == format!("one {i}") => v1 += 1,
            s if s == format!("two {i}") => {}
            other => panic!("{other:?}"),
        }
    }
    let share = v1 as f64 / N as f64;
    assert!((0.75..=0.85).contains(&share), "v1 got {share} of the connections, not 80 % ± 5");
    assert_eq!(
        h.metric("istio_tcp_connections_opened_total", &["destination_service=\"tcp-echo.default.svc.cluster.local\""]),
        (N + 20) as f64
    );
    assert!(h.metric("istio_tcp_sent_bytes_total", &["destination_version=\"v1\""]) > 0.0);
}

#[tokio::test(start_paused = true)]
async fn routes_match_the_port_and_the_vip_and_other_ports_get_nothing() {
    let net = Network::new();
    echo(&net, "10.0.0.1:9000", "one");
    echo(&net, "10.0.0.2:9000", "two");
    echo(&net, "10.0.0.9:5432", "db");
    let vip = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example]
  addresses: [127.1.0.5]
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: MYSQL, targetPort: 5432}]
  endpoints: [{address: 10.0.0.9}]
"#;
    let h = Harness::new(&net, &format!("{SERVICE}{SHIFT_20}{vip}"));
    assert_eq!(call(&h, "127.1.0.5:9000", "q").await, "db q", "the VIP tells the services on port 9000 apart");
    assert!(call(&h, "127.0.0.1:9000", "x").await.ends_with(" x"));
    assert_eq!(call(&h, "127.0.0.1:9001", "x").await, "", "no TCP service on 9001: closed");
    assert_eq!(h.metric("weft_no_route_total", &[]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn connect_failures_try_another_endpoint_and_eject() {
    let net = Network::new();
    net.refuse(addr("10.0.0.1:9000"));
    echo(&net, "10.0.0.2:9000", "two");
    let od = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: tcp-echo-destination, namespace: default}\nspec:\n  host: tcp-echo\n  trafficPolicy:\n    connectionPool: {tcp: {connectTimeout: 1s}}\n    outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 60s, maxEjectionPercent: 50}\n";
    let svc = SERVICE.split("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule").next().unwrap();
    let h = Harness::new(&net, &format!("{svc}{od}"));
    for i in 0..20 {
        assert_eq!(call(&h, "127.0.0.1:9000", &format!("{i}")).await, format!("two {i}"), "a refused connect is tried elsewhere");
    }
    assert!(net.connects(addr("10.0.0.1:9000")).len() <= 2, "ejected after its failure: {:?}", net.connects(addr("10.0.0.1:9000")).len());
}

#[tokio::test(start_paused = true)]
async fn max_connections_and_idle_timeout() {
    let net = Network::new();
    echo(&net, "10.0.0.1:9000", "one");
    echo(&net, "10.0.0.2:9000", "two");
    let pool = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: tcp-echo-destination, namespace: default}\nspec:\n  host: tcp-echo\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1, idleTimeout: 30s}}\n";
    let svc = SERVICE.split("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule").next().unwrap();
    let h = Harness::new(&net, &format!("{svc}{pool}"));
    let mut first = h.connect_tcp("127.0.0.1:9000");
    first.write_all(b"a").await.unwrap();
    let mut buf = [0u8; 64];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    // The one connection allowed is taken: the next is closed at once (UO).
    assert_eq!(call(&h, "127.0.0.1:9000", "b").await, "");
    assert_eq!(h.metric("weft_upstream_overflow_total", &[]), 1.0);
    // 30 s without a byte closes the first; then a new one is admitted.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(first.read(&mut buf).await.unwrap_or(0), 0, "closed by the idle timeout");
    tokio::task::yield_now().await;
    assert!(call(&h, "127.0.0.1:9000", "c").await.ends_with(" c"));
}
