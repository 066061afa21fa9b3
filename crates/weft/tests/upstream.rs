//! Upstream connection handling: reuse, maxRequestsPerConnection, idleTimeout, HTTP/2
//! upgrade, useClientProtocol, connect failures; and the admin endpoint's views.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn opened(p: &Proxy) -> f64 {
    p.metric("istio_tcp_connections_opened_total", &["destination_service=\"svc\""])
}

#[test]
fn connections_are_reused_unless_max_requests_per_connection_says_otherwise() {
    let b = backend("b", &[]);
    let se = service_entry("svc", &[(b.addr, "v: x", 1)]);
    let p = proxy(&se);
    let mut c = Client::connect(p.addr());
    for _ in 0..50 {
        assert_eq!(c.get("svc", "/", &[]).status, 200);
    }
    assert!(opened(&p) <= 2.0, "kept-alive requests opened {} upstream connections", opened(&p));

    let p = proxy(&(se.clone() + &destination_rule("svc", "{connectionPool: {http: {maxRequestsPerConnection: 1}}}")));
    let mut c = Client::connect(p.addr());
    for _ in 0..20 {
        assert_eq!(c.get("svc", "/", &[]).status, 200);
    }
    assert_eq!(opened(&p), 20.0, "maxRequestsPerConnection: 1 means a connection per request");
    // Requests with bodies go through the other client; the limit holds there too.
    for _ in 0..5 {
        assert_eq!(c.request("POST", "svc", "/echo", &[], b"abc").text(), "abc");
    }
    assert_eq!(opened(&p), 25.0);
}

#[test]
fn idle_timeout_closes_idle_upstream_connections() {
    let b = backend("b", &[]);
    let p = proxy(&(service_entry("svc", &[(b.addr, "v: x", 1)]) + &destination_rule("svc", "{connectionPool: {tcp: {idleTimeout: 1s}}}")));
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
    assert_eq!(opened(&p), 1.0);
    let end = Instant::now() + Duration::from_secs(6);
    while p.metric("istio_tcp_connections_closed_total", &["destination_service=\"svc\""]) < 1.0 {
        assert!(Instant::now() < end, "idle connection never closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
    assert_eq!(opened(&p), 2.0);
}

#[test]
fn h2_upgrade_and_client_protocol_choose_the_upstream_protocol() {
    let b = backend("b", &[]);
    let se = service_entry("svc", &[(b.addr, "v: x", 1)]);
    let p = proxy(&(se.clone() + &destination_rule("svc", "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}")));
    let mut c = Client::connect(p.addr());
    for _ in 0..10 {
        assert_eq!(c.get("svc", "/", &[]).json()["version"], "HTTP/2.0");
    }
    assert_eq!(c.request("POST", "svc", "/echo", &[], b"over h2").text(), "over h2");
    assert_eq!(opened(&p), 1.0, "one multiplexed connection");

    let p = proxy(&(se + &destination_rule("svc", "{connectionPool: {http: {useClientProtocol: true}}}")));
    assert_eq!(get(p.addr(), "svc", "/", &[]).json()["version"], "HTTP/1.1");
    let (rc, out, err) = curl(&["--http2-prior-knowledge", "-H", "Host: svc", &format!("http://{}/", p.addr())]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("\"version\":\"HTTP/2.0\""), "{out}");
}

#[test]
/// Istio's default retry policy (2 retries on connect failure) runs first, so the
/// flags are Envoy's `UF,URX`: connect failure, retry limit reached.
fn unreachable_endpoint_is_503_uf_and_counted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = proxy(&service_entry("svc", &[(dead, "v: x", 1)]));
    let r = get(p.addr(), "svc", "/", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with("upstream connect error"), "{}", r.text());
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"503\"", "response_flags=\"UF,URX\""]), 1.0);
    assert_eq!(p.metric("weft_upstream_connect_failure_total", &[]), 1.0);
    assert_eq!(p.metric("weft_upstream_retries_total", &[]), 2.0);
    assert_eq!(p.metric("weft_retry_limit_reached_total", &[]), 1.0);
}

#[test]
fn admin_shows_clusters_config_and_readiness() {
    let b = backend("b", &[]);
    let p = proxy(&(service_entry("svc", &[(b.addr, "v: x", 3)]) + &destination_rule("svc", "{loadBalancer: {simple: ROUND_ROBIN}}")));
    for _ in 0..7 {
        get(p.addr(), "svc", "/", &[]);
    }
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let c = &clusters["clusters"][0];
    assert_eq!(c["name"], "outbound|80||svc");
    assert_eq!(c["lb"], "RoundRobin");
    let ep = &c["endpoints"][0];
    assert_eq!(ep["address"], b.addr.to_string());
    assert_eq!(ep["weight"], 3);
    assert_eq!(ep["requests_total"], 7);
    assert_eq!(ep["active_requests"], 0);
    let dump: serde_json::Value = serde_json::from_str(&p.admin("/config_dump")).unwrap();
    assert_eq!(dump["revision"], 1);
    assert_eq!(dump["resources"][1]["kind"], "DestinationRule");
    assert_eq!(dump["resources"][1]["spec"]["trafficPolicy"]["loadBalancer"]["simple"], "ROUND_ROBIN");
    assert_eq!(p.admin("/ready"), "ready\n");
}

#[test]
fn access_log_carries_code_flags_and_upstream() {
    let b = backend("b", &[]);
    let dir = temp_dir();
    let cfg = dir.join("mesh.yaml");
    std::fs::write(&cfg, service_entry("svc", &[(b.addr, "v: x", 1)])).unwrap();
    let log = dir.join("access.log");
    let mut child = std::process::Command::new(weft())
        .args(["proxy", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--access-log"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    while !line.contains("listening on") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0, "proxy did not start");
    }
    let addr: std::net::SocketAddr = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    get(addr, "svc", "/a?b=1", &[]);
    get(addr, "nowhere", "/x", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("\"GET /a?b=1\" 200 - 0 "), "{}", lines[0]);
    assert!(lines[0].contains(&format!("\"svc\" \"{}\" default", b.addr)), "{}", lines[0]);
    assert!(lines[1].starts_with("\"GET /x\" 404 NR "), "{}", lines[1]);
}

/// A raw upstream that reads a request head, then writes `reply` and stays silent.
fn stalling_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(8) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
                std::thread::sleep(std::time::Duration::from_secs(10));
            });
        }
    });
    addr
}

#[test]
fn stream_idle_timeout_of_0s_turns_it_off() {
    use std::io::Write;
    use std::time::Duration;
    // Before and during the response, on a simulated clock: weft-proxy's tests/timeouts.rs.
    // Here, the flag: 0s turns it off, and the silent upstream keeps the request waiting.
    let silent = stalling_upstream(b"");
    let p = proxy_with(&service_entry("svc", &[(silent, "v: a", 1)]), &["--stream-idle-timeout", "0s"]);
    let mut c = Client::connect(p.addr());
    c.stream().set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    c.stream().write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n").unwrap();
    let mut buf = [0u8; 16];
    let e = std::io::Read::read(c.stream(), &mut buf).unwrap_err();
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
}
