//! Hedging on the in-process harness, on a simulated clock: a second try after the
//! host's `delay`, the first answer winning, and a delay learned from answers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use weft_proxy::testing::*;

const SLOW: &str = "10.0.0.1:80";
const FAST: &str = "10.0.0.2:80";

fn latency(net: &Network, at: &str, name: &'static str, after: Duration) {
    net.serve(addr(at), move |_| async move {
        tokio::time::sleep(after).await;
        answer(200, name)
    });
}

fn hedging(spec: &str) -> String {
    format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: Hedging\nmetadata: {{name: svc}}\nspec: {{host: svc, {spec}}}\n")
}

fn config(endpoints: &[&str], hedge: &str) -> String {
    service_entry("svc", endpoints)
        + &destination_rule("svc", "{loadBalancer: {simple: ROUND_ROBIN}}")
        + &hedging(hedge)
        + &virtual_service("svc", "    retries: {attempts: 0}\n")
}

#[tokio::test(start_paused = true)]
async fn a_second_try_goes_out_after_the_delay_and_the_first_answer_wins() {
    let net = Network::new();
    latency(&net, SLOW, "slow", Duration::from_millis(400));
    latency(&net, FAST, "fast", Duration::ZERO);
    let h = Harness::new(&net, &config(&[SLOW, FAST], "delay: 50ms"));
    let mut hedged = 0;
    for i in 0..10 {
        let t = Instant::now();
        let r = h.get("svc", "/").await;
        let took = t.elapsed();
        assert_eq!((r.status.as_u16(), r.text()), (200, "fast"), "request {i}");
        // Straight to the fast endpoint, or to the slow one and hedged 50 ms later.
        match took.as_millis() {
            0 => {}
            50 => hedged += 1,
            _ => panic!("request {i} took {took:?}"),
        }
    }
    assert!(hedged >= 1);
    assert_eq!(h.metric("weft_hedged_requests_total", &[]), hedged as f64);
}

#[tokio::test(start_paused = true)]
async fn a_request_with_a_body_is_not_hedged() {
    let net = Network::new();
    latency(&net, SLOW, "slow", Duration::from_millis(400));
    latency(&net, FAST, "fast", Duration::ZERO);
    let h = Harness::new(&net, &config(&[SLOW, FAST], "delay: 50ms"));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let req = http::Request::post("/").header("host", "svc").body(Full::new(Bytes::from_static(b"x"))).unwrap();
        let t = Instant::now();
        let r = h.request(req).await;
        answers.push((r.status.as_u16(), r.text().to_owned(), t.elapsed().as_millis()));
    }
    // Round robin: one POST to each; the slow one waited for its answer (it could not be sent twice).
    answers.sort();
    assert_eq!(answers, vec![(200, "fast".into(), 0), (200, "slow".into(), 400)]);
    assert_eq!(h.metric("weft_hedged_requests_total", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_delay_percentile_is_learned_from_answers() {
    let net = Network::new();
    let (fast1, fast2) = ("10.0.0.3:80", "10.0.0.4:80");
    latency(&net, fast1, "fast", Duration::from_millis(10));
    latency(&net, fast2, "fast", Duration::from_millis(10));
    latency(&net, SLOW, "slow", Duration::from_millis(300));
    // Until 100 answers are seen the delay is 150 ms; then the host's p50 (about 10 ms).
    // Leaked, so that requests can run as tasks of their own, concurrently.
    let h: &'static Harness = Box::leak(Box::new(Harness::new(&net, &config(&[fast1, fast2, SLOW], "delay: 150ms, delayPercentile: 50"))));
    let mut c = h.connect().await;
    let mut took = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        assert_eq!(c.get("svc", "/").await.status, 200);
        took.push(t.elapsed());
    }
    assert_eq!(took.iter().max(), Some(&Duration::from_millis(160)), "the slow endpoint's requests hedged at 150 ms: {took:?}");
    let learn: Vec<_> = (0..150).map(|_| tokio::spawn(h.get("svc", "/"))).collect();
    for r in learn {
        assert_eq!(r.await.unwrap().status, 200);
    }
    let mut after = Duration::ZERO;
    for _ in 0..12 {
        let t = Instant::now();
        assert_eq!(c.get("svc", "/").await.status, 200);
        after = after.max(t.elapsed());
    }
    assert!(after <= Duration::from_millis(25), "hedged at the learned p50: slowest {after:?}");
}
