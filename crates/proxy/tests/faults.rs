//! Fault injection on the in-process harness, on a simulated clock.

use std::time::Duration;

use tokio::time::Instant;
use weft_proxy::testing::*;

#[tokio::test(start_paused = true)]
async fn a_fixed_delay_holds_the_request_exactly_that_long() {
    let net = Network::new();
    net.serve(addr("10.0.0.1:80"), |_| async { answer(200, "b") });
    let config = service_entry("svc", &["10.0.0.1:80"]) + &virtual_service("svc", "    fault: {delay: {fixedDelay: 200ms}}\n");
    let h = Harness::new(&net, &config);
    let t = Instant::now();
    let r = h.get("svc", "/").await;
    assert_eq!((r.status.as_u16(), r.text(), t.elapsed()), (200, "b", Duration::from_millis(200)));
    assert_eq!(net.connects(addr("10.0.0.1:80")), vec![t + Duration::from_millis(200)], "the upstream is reached after the delay");
    assert_eq!(h.metric("istio_requests_total", &["response_code=\"200\"", "response_flags=\"DI\""]), 1.0);
}
