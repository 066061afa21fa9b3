//! Opaque TCP through a real `weft proxy`: a ServiceEntry's TCP port becomes a listener
//! on the proxy's address (and one on the service's loopback VIP), connections are
//! tunnelled to the service's endpoints, a reload that drops the service closes it, and
//! the `istio_tcp_*` metrics count what went through.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn config(port: u16, a: SocketAddr, b: SocketAddr, vip_port: u16, db: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo}}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db}}
spec:
  hosts: [db.example]
  addresses: [127.1.0.7]
  resolution: STATIC
  ports: [{{number: {vip_port}, name: mongo, protocol: MONGO}}]
  endpoints: [{{address: 127.0.0.1, ports: {{mongo: {}}}}}]
"#,
        a.port(),
        b.port(),
        db.port()
    )
}

#[test]
fn tcp_service_ports_are_listeners_that_follow_the_config() {
    let (a, b, db) = (tcp_echo("v1"), tcp_echo("v2"), tcp_echo("db"));
    let port = free_addr().port();
    let vip_port = free_addr().port();
    let p = proxy(&config(port, a, b, vip_port, db));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the tcp listener opens", || !tcp_call(listener, "hello").is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let got = tcp_call(listener, &format!("m{i}"));
        assert!(got == format!("v1 m{i}") || got == format!("v2 m{i}"), "{got:?}");
        seen.insert(got[..2].to_owned());
    }
    assert_eq!(seen.len(), 2, "both endpoints serve");
    // The VIP's listener, on a loopback address of its own.
    assert_eq!(tcp_call(SocketAddr::from(([127, 1, 0, 7], vip_port)), "q"), "db q");
    let m = p.admin("/metrics");
    assert!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &["destination_service=\"tcp-echo.default.svc.cluster.local\""]) >= 21.0,
        "{m}"
    );
    // (Bytes are counted when a connection closes.)
    wait_until("db's bytes counted", || {
        metric_sum(&p.admin("/metrics"), "istio_tcp_received_bytes_total", &["destination_service=\"db.example\""]) >= 4.0
    });

    // A VIP that is not a loopback address is never listened on (config cannot open
    // the proxy's other interfaces).
    let outside = config(port, a, b, vip_port, db).replace("127.1.0.7", "10.9.8.7");
    p.rewrite(&outside);
    wait_until("the refusal is logged", || p.p.log_text().contains("a VIP is listened on only when it is a loopback address"));
    assert!(!tcp_call(listener, "still").is_empty(), "the listen address's listener stays");

    // A reload without the TCP service: its listener closes.
    p.rewrite(&service_entry("web", &[(a, "v: a", 1)]));
    wait_until("the tcp listener closes", || TcpStream::connect_timeout(&listener, Duration::from_millis(200)).is_err());
}
