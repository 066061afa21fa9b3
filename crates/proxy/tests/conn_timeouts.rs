//! Client connections' header and idle timeouts (the worker's watchdog, not a timer
//! per request), on the in-process harness and a simulated clock: each close comes
//! between its timeout and one watchdog tick (100 ms) later.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

const UP: &str = "10.0.0.1:80";
const TICK: Duration = Duration::from_millis(100);
const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n";

fn harness(opts: ProxyOptions) -> Harness {
    let net = Network::new();
    net.serve(addr(UP), |_| async { answer(200, "ok") });
    Harness::with_options(&net, &service_entry("svc", &[UP]), opts)
}

/// Reads one response whose body is `ok` (the test upstream's).
async fn read_ok(s: &mut DuplexStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the response ended: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
}

/// Waits for the proxy to close `s`; how long that took.
async fn closed_after(s: &mut DuplexStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

fn within_a_tick(took: Duration, of: Duration) {
    assert!(took >= of && took <= of + TICK, "closed after {took:?}, expected {of:?} (+ one tick)");
}

#[tokio::test(start_paused = true)]
async fn a_half_sent_head_is_cut_off_at_the_default_header_timeout() {
    let h = harness(ProxyOptions::default());
    let mut s = h.connect_raw();
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n").await.unwrap(); // never finished
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(60));
    assert_eq!(h.metric("weft_downstream_header_timeouts_total", &[]), 1.0);
    // The next connection is served as ever.
    assert_eq!(h.get("svc", "/").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let h = harness(ProxyOptions::default());
    let mut s = h.connect_raw();
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let h = harness(ProxyOptions::default());
    let mut s = h.connect_raw();
    s.write_all(GET).await.unwrap();
    read_ok(&mut s).await;
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(3600));
    assert_eq!(h.metric("weft_downstream_idle_timeouts_total", &[]), 1.0);
    assert_eq!(h.metric("weft_downstream_header_timeouts_total", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn each_request_restarts_the_idle_clock_and_a_late_head_gets_its_own_header_timeout() {
    let opts = ProxyOptions {
        idle_timeout: Some(Duration::from_secs(10)),
        header_read_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let h = harness(opts);
    let mut s = h.connect_raw();
    for _ in 0..5 {
        s.write_all(GET).await.unwrap();
        read_ok(&mut s).await;
        tokio::time::sleep(Duration::from_secs(8)).await; // idle, but under 10 s
    }
    // A head begun on a connection that was idle has 2 s to arrive whole.
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_is_neither_idle_nor_a_late_head() {
    let net = Network::new();
    net.serve(addr(UP), |_| async {
        tokio::time::sleep(Duration::from_secs(100)).await;
        answer(200, "ok")
    });
    let opts = ProxyOptions { idle_timeout: Some(Duration::from_secs(10)), ..Default::default() };
    let h = Harness::with_options(&net, &service_entry("svc", &[UP]), opts);
    let mut s = h.connect_raw();
    let t = Instant::now();
    s.write_all(GET).await.unwrap();
    read_ok(&mut s).await;
    assert_eq!(t.elapsed(), Duration::from_secs(100));
    // Idle from the response's end on.
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn zero_turns_both_off() {
    let opts = ProxyOptions { idle_timeout: None, header_read_timeout: None, ..Default::default() };
    let h = harness(opts);
    let mut half = h.connect_raw();
    half.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut idle = h.connect_raw();
    idle.write_all(GET).await.unwrap();
    read_ok(&mut idle).await;
    tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
    // Both still open: the rest of each head is answered.
    half.write_all(b"host: svc\r\n\r\n").await.unwrap();
    read_ok(&mut half).await;
    idle.write_all(GET).await.unwrap();
    read_ok(&mut idle).await;
}

#[tokio::test(start_paused = true)]
async fn an_h2_connection_has_no_head_timeout_between_requests() {
    let opts = ProxyOptions { idle_timeout: Some(Duration::from_secs(600)), ..Default::default() };
    let h = harness(opts);
    let mut s = h.connect_raw();
    // The preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    within_a_tick(closed_after(&mut s).await, Duration::from_secs(600));
    assert_eq!(h.metric("weft_downstream_idle_timeouts_total", &[]), 1.0);
}

/// The admin endpoint: a request head must come within 60 s, and so must the next one on
/// a kept-alive connection (hyper's header timeout, on tokio's clock).
#[tokio::test(start_paused = true)]
async fn admin_connections_without_a_request_are_closed_after_60_s() {
    let h = harness(ProxyOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    tokio::spawn(weft_proxy::admin::serve(h.shared, listener));
    // Silent from the start.
    let start = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(admin).await.unwrap();
    let mut buf = [0u8; 256];
    let n = silent.read(&mut buf).await.unwrap_or(0);
    assert!(n == 0 || buf.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(60) && took < Duration::from_secs(61), "{took:?}");
    // One request, then idle.
    let mut kept = tokio::net::TcpStream::connect(admin).await.unwrap();
    kept.write_all(b"GET /ready HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let idle = Instant::now();
    let mut rest = Vec::new();
    let _ = kept.read_to_end(&mut rest).await;
    let took = idle.elapsed();
    assert!(took >= Duration::from_secs(60) && took < Duration::from_secs(61), "idle keep-alive closed after {took:?}");
}
