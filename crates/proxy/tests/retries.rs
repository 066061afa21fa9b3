//! Retries on the in-process harness, on a simulated clock: which endpoint a retry goes
//! to, the back-off between tries, and a config swap between tries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_proxy::testing::*;

const LIVE: &str = "10.0.0.1:80";
const DEAD: &str = "10.0.0.2:80";

fn two_endpoints() -> (Network, String) {
    let net = Network::new();
    net.serve(addr(LIVE), |_| async { answer(200, "live") });
    net.refuse(addr(DEAD));
    (net, service_entry("svc", &[LIVE, DEAD]))
}

#[tokio::test(start_paused = true)]
async fn a_refused_try_is_retried_on_the_other_endpoint() {
    let (net, config) = two_endpoints();
    // Istio's default policy: routes that say nothing retry connect failures twice.
    let h = Harness::new(&net, &config);
    for i in 0..40 {
        let r = h.get("svc", "/").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "live"), "request {i}");
    }
    let refused = net.connects(addr(DEAD)).len();
    assert!(refused >= 5, "the dead endpoint was tried {refused} times in 40 requests");
    assert_eq!(h.metric("weft_upstream_retries_total", &[]), refused as f64, "each refused try was retried once, elsewhere");
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"200\""]), 40.0);
}

#[tokio::test(start_paused = true)]
async fn tries_are_spaced_by_a_jittered_exponential_back_off() {
    let net = Network::new();
    net.refuse(addr(DEAD));
    let config = service_entry("svc", &[DEAD]) + &virtual_service("svc", "    retries: {attempts: 3, retryOn: connect-failure}\n");
    let h = Harness::new(&net, &config);
    // Envoy's back-off: before retry k, a uniform wait below 25 ms × (2^k − 1) (tokio's
    // timer rounds it up to the millisecond).
    let bounds = [Duration::from_millis(25), Duration::from_millis(75), Duration::from_millis(175)];
    let mut longest = [Duration::ZERO; 3];
    for i in 0..30 {
        let before = net.connects(addr(DEAD)).len();
        let r = h.get("svc", "/").await;
        assert_eq!(r.status, 503, "request {i}");
        let tries = &net.connects(addr(DEAD))[before..];
        assert_eq!(tries.len(), 4, "one try and three retries");
        for (k, pair) in tries.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(gap <= bounds[k], "request {i}: wait before retry {} was {gap:?}", k + 1);
            longest[k] = longest[k].max(gap);
        }
    }
    // Jittered, not fixed: over 30 requests each wait comes near its bound.
    for (k, (l, b)) in longest.iter().zip(bounds).enumerate() {
        assert!(*l > b / 2, "the longest wait before retry {} was {l:?} (bound {b:?})", k + 1);
    }
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"503\"", "response_flags=\"UF,URX\""]), 30.0);
}

#[tokio::test(start_paused = true)]
async fn a_config_swap_between_tries_does_not_fail_the_retry() {
    // The bug: with the config file rewritten every 50 ms, 47 of 300 requests got
    // `503 UC "config changed during retries"`. A request holds its cluster now.
    let (net, config) = two_endpoints();
    let h = Harness::new(&net, &config);
    let shared = h.shared;
    let swaps = Arc::new(AtomicUsize::new(0));
    let (s, text) = (swaps.clone(), config.clone());
    net.on_connect(addr(DEAD), move || {
        // Between the refused try and its retry, the same config arrives again: a new
        // revision, new clusters (endpoints carried over).
        let (resources, snap, diags) = weft_config::build_str("swap.yaml", &text);
        shared.install_built(resources, snap, diags).expect("valid config");
        s.fetch_add(1, Ordering::Relaxed);
    });
    for i in 0..40 {
        let r = h.get("svc", "/").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "live"), "request {i}");
    }
    let swapped = swaps.load(Ordering::Relaxed);
    assert!(swapped >= 5, "{swapped} swaps between tries");
    assert_eq!(h.shared.current.load().revision, 1 + swapped as u64);
}

#[tokio::test(start_paused = true)]
async fn a_retry_keeps_its_cluster_when_the_swap_removes_it() {
    let (net, config) = two_endpoints();
    let h = Harness::new(&net, &config);
    let shared = h.shared;
    // The new config no longer knows svc: requests already on their way finish on the
    // cluster they hold; the next ones find no such host.
    net.on_connect(addr(DEAD), move || {
        let (resources, snap, diags) = weft_config::build_str("swap.yaml", &service_entry("other", &[LIVE]));
        shared.install_built(resources, snap, diags).expect("valid config");
    });
    let mut swapped = false;
    for _ in 0..50 {
        h.install(&config);
        let refused = net.connects(addr(DEAD)).len();
        let r = h.get("svc", "/").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "live"));
        if net.connects(addr(DEAD)).len() > refused {
            swapped = true;
            assert_eq!(h.get("svc", "/").await.status, 404, "svc is gone from the new config");
            break;
        }
    }
    assert!(swapped, "no request tried the refused endpoint first in 50");
}
