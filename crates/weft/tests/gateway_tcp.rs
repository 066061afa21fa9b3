//! Istio's TCP traffic shifting task through `weft gateway`, its YAML unchanged
//! (tests/istio/tcp-echo-*.yaml): the Gateway's TCP server on port 31400, all
//! connections to v1, then 80/20 over v1/v2 after the task's second file is applied
//! (a reload), within ±5 % over many connections.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const ALL_V1: &str = include_str!("istio/tcp-echo-all-v1.yaml");
const SHIFT_20: &str = include_str!("istio/tcp-echo-20-v2.yaml");

/// tcp-echo as the task's Kubernetes Service and Deployments make it.
fn service(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  hosts: [tcp-echo.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{app: tcp-echo, version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{app: tcp-echo, version: v2}}}}\n",
        v1.port(),
        v2.port()
    )
}

#[test]
fn tcp_traffic_shifting_task_through_the_gateway() {
    let (v1, v2) = (tcp_echo("one"), tcp_echo("two"));
    let dir = temp_dir();
    let (svc, mesh) = (dir.join("tcp-echo.yaml"), dir.join("task.yaml"));
    std::fs::write(&svc, service(v1, v2)).unwrap();
    std::fs::write(&mesh, ALL_V1).unwrap();
    let p = spawn(&[
        "gateway",
        "--config",
        svc.to_str().unwrap(),
        "--config",
        mesh.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--gateway-labels",
        "istio=ingressgateway",
        "--watch-interval",
        "50ms",
    ]);
    let ingress = SocketAddr::from(([127, 0, 0, 1], 31400));
    let start = Instant::now();
    while tcp_call(ingress, "hello").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "the gateway's TCP server never answered: {}", p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..20 {
        assert_eq!(tcp_call(ingress, &format!("m{i}")), format!("one m{i}"), "tcp-echo-all-v1: every connection to v1");
    }
    // The task's second step: `kubectl apply -f tcp-echo-20-v2.yaml` (a reload here).
    // (It replaces the VirtualService of the same name; the Gateway and DestinationRule stay.)
    let kept = ALL_V1.split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService").next().unwrap();
    std::fs::write(&mesh, format!("{kept}---\n{SHIFT_20}")).unwrap();
    let start = Instant::now();
    while !tcp_call(ingress, "x").starts_with("two") {
        assert!(start.elapsed() < Duration::from_secs(10), "the 80/20 routes never applied");
    }
    const N: usize = 1000;
    let mut one = 0;
    for i in 0..N {
        match tcp_call(ingress, &format!("{i}")) {
            s if s == format!("one {i}") => one += 1,
            s if s == format!("two {i}") => {}
            other => panic!("{other:?}"),
        }
    }
    let share = one as f64 / N as f64;
    assert!((0.75..=0.85).contains(&share), "v1 got {share} of {N} connections, not 80 % ± 5");
}
