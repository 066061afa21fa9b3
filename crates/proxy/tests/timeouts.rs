//! Timeouts on the in-process harness, on a simulated clock: each answer comes at
//! exactly the configured time (tokio's paused clock jumps to the next timer when
//! nothing else can run), not within wall-clock bounds.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use weft_proxy::testing::*;
use weft_proxy::ProxyOptions;

const HUNG: &str = "10.0.0.1:80";
const GOOD: &str = "10.0.0.2:80";

/// An endpoint that takes requests and never answers.
fn hung(net: &Network) {
    net.serve(addr(HUNG), |_| async {
        std::future::pending::<()>().await;
        answer(200, "never")
    });
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_answers_504_ut_at_exactly_its_time() {
    let net = Network::new();
    hung(&net);
    // A timeout is not among the retried outcomes here, so the first try's is the answer.
    // (`attempts: 0` would drop the retry policy, its perTryTimeout with it, as Istio does.)
    let config = service_entry("svc", &[HUNG])
        + &virtual_service("svc", "    retries: {attempts: 1, perTryTimeout: 100ms, retryOn: connect-failure}\n");
    let h = Harness::new(&net, &config);
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    assert_eq!((r.status.as_u16(), t.elapsed()), (504, Duration::from_millis(100)));
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"504\"", "response_flags=\"UT\""]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_moves_on_from_a_hung_endpoint() {
    let net = Network::new();
    hung(&net);
    net.serve(addr(GOOD), |_| async { answer(200, "good") });
    let config = service_entry("svc", &[HUNG, GOOD])
        + &virtual_service("svc", "    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: \"5xx,reset\"}\n");
    let h = Harness::new(&net, &config);
    for i in 0..10 {
        let hung_before = net.connects(addr(HUNG)).len();
        let t = Instant::now();
        let r = h.get("svc", "/").await;
        let took = t.elapsed();
        assert_eq!((r.status.as_u16(), r.text()), (200, "good"), "request {i}");
        if net.connects(addr(HUNG)).len() > hung_before {
            // One per-try timeout, one back-off (below 25 ms), the good endpoint's answer.
            assert!(took >= Duration::from_millis(100) && took <= Duration::from_millis(125), "request {i} took {took:?}");
        } else {
            assert_eq!(took, Duration::ZERO, "request {i}");
        }
    }
    assert!(!net.connects(addr(HUNG)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn route_timeout_answers_504_ut_at_exactly_its_time() {
    let net = Network::new();
    hung(&net);
    let config = service_entry("svc", &[HUNG]) + &virtual_service("svc", "    timeout: 300ms\n    retries: {attempts: 0}\n");
    let h = Harness::new(&net, &config);
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    assert_eq!((r.status.as_u16(), t.elapsed()), (504, Duration::from_millis(300)));
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"504\"", "response_flags=\"UT\""]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn retries_end_with_urx_and_the_route_timeout_bounds_them_all() {
    let net = Network::new();
    hung(&net);
    let config = service_entry("svc", &[HUNG])
        + &virtual_service("svc", "    timeout: 300ms\n    retries: {attempts: 5, perTryTimeout: 100ms, retryOn: gateway-error}\n");
    let h = Harness::new(&net, &config);
    for i in 0..10 {
        let t = Instant::now();
        let r = h.get("svc", "/").await;
        let took = t.elapsed();
        assert_eq!(r.status, 504, "request {i}");
        // Tries of 100 ms with back-offs between them until the route's 300 ms are spent
        // (the last try gets what is left; a back-off that would pass the end stops early).
        assert!(took >= Duration::from_millis(200) && took <= Duration::from_millis(300), "request {i} took {took:?}");
    }
    let tries = net.connects(addr(HUNG)).len();
    assert!((20..=30).contains(&tries), "{tries} tries in 10 requests");
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"504\"", "response_flags=\"URX,UT\""]), 10.0);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_answers_503_uf_at_exactly_its_time() {
    let net = Network::new();
    net.blackhole(addr(HUNG));
    let config = service_entry("svc", &[HUNG])
        + &destination_rule("svc", "{connectionPool: {tcp: {connectTimeout: 250ms}}}")
        + &virtual_service("svc", "    retries: {attempts: 0}\n");
    let h = Harness::new(&net, &config);
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    assert_eq!((r.status.as_u16(), t.elapsed()), (503, Duration::from_millis(250)));
    assert!(r.text().contains("connect timeout"), "{}", r.text());
}

fn idle_after(d: Duration) -> ProxyOptions {
    ProxyOptions { stream_idle_timeout: Some(d), ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn stream_idle_timeout_ends_a_request_with_no_response_head() {
    let net = Network::new();
    hung(&net);
    // No route or per-try timeout: the stream idle timeout bounds the wait (a coarse
    // watchdog that fires within one 100 ms tick after the timeout).
    let h = Harness::with_options(&net, &service_entry("svc", &[HUNG]), idle_after(Duration::from_secs(1)));
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    let took = t.elapsed();
    assert_eq!(r.status, 408);
    assert!(took >= Duration::from_secs(1) && took <= Duration::from_millis(1100), "took {took:?}");
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"408\"", "response_flags=\"SI\""]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn stream_idle_timeout_cuts_a_body_that_stops_flowing() {
    let net = Network::new();
    // Half a body, then silence.
    net.raw(addr(HUNG), |mut io| {
        tokio::spawn(async move {
            let _ = io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await;
            std::future::pending::<()>().await;
            drop(io);
        });
    });
    let h = Harness::with_options(&net, &service_entry("svc", &[HUNG]), idle_after(Duration::from_secs(2)));
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"hello"[..]));
    assert!(r.cut.is_some(), "the body was cut off");
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    tokio::task::yield_now().await;
    assert_eq!(h.metric("weft_stream_idle_timeouts_total", &[]), 1.0);
}
