//! The report table on tokio's paused clock: rates over the time between reports,
//! restarts, refusals and bounds.

use std::time::Duration;

use tokio::time::Instant;
use weft_api::report::{DestinationCounts, Report};

use super::{Refusal, Reports};

fn report(node: &str, started_ms: u64, requests: u64, errors: u64, slow: u64) -> Report {
    // `slow` of the requests took (100, 250] ms, the rest (5, 10].
    let fast = requests - slow;
    let buckets = [0, 0, 0, fast, fast, fast, fast, requests, requests, requests, requests, requests, requests].to_vec();
    Report {
        node: node.into(),
        started_ms,
        service: "productpage".into(),
        namespace: "default".into(),
        destinations: vec![DestinationCounts { service: "reviews.default.svc.cluster.local".into(), requests, errors, buckets }],
        ejected: vec![],
        inbound: None,
    }
}

#[tokio::test(start_paused = true)]
async fn rates_errors_and_p99_come_from_the_last_two_reports() {
    let reports = Reports::default();
    reports.ingest(report("a", 1, 100, 0, 0), Instant::now()).unwrap();
    assert!(reports.edges(Instant::now()).is_empty(), "one report is no window");
    tokio::time::advance(Duration::from_secs(10)).await;
    reports.ingest(report("a", 1, 300, 20, 10), Instant::now()).unwrap();
    let edges = reports.edges(Instant::now());
    assert_eq!(edges.len(), 1);
    let e = &edges[0];
    assert_eq!((e.source.as_str(), e.destination.as_str()), ("productpage.default.svc.cluster.local", "reviews.default.svc.cluster.local"));
    assert_eq!(e.window.rate, 20.0);
    assert_eq!(e.window.error_share(), Some(0.1));
    // 200 requests, 10 of them slow: the 198th is the 8th of 10 in (100, 250].
    let p99 = e.window.quantile_ms(0.99).unwrap();
    assert!((p99 - 220.0).abs() < 1e-9, "{p99}");
    // A second proxy of the same service adds its rate to the edge.
    reports.ingest(report("b", 7, 0, 0, 0), Instant::now()).unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    reports.ingest(report("b", 7, 50, 0, 0), Instant::now()).unwrap();
    assert_eq!(reports.edges(Instant::now())[0].window.rate, 30.0);
    // Silent for a minute: no longer counted; after ten, forgotten.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(reports.edges(Instant::now()).is_empty());
    tokio::time::advance(Duration::from_secs(600)).await;
    reports.ingest(report("c", 1, 0, 0, 0), Instant::now()).unwrap();
    assert_eq!(reports.held(), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn counters_going_down_are_refused_unless_the_proxy_restarted() {
    let reports = Reports::default();
    reports.ingest(report("a", 1, 100, 5, 0), Instant::now()).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let e = reports.ingest(report("a", 1, 90, 5, 0), Instant::now()).unwrap_err();
    assert!(matches!(&e, Refusal::Invalid(m) if m.contains("went down")), "{e}");
    // A new start: counting from zero again, no window until its second report.
    reports.ingest(report("a", 2, 10, 0, 0), Instant::now()).unwrap();
    assert!(reports.edges(Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_table_is_bounded() {
    let reports = Reports::default();
    let mut r = report("big", 1, 1, 0, 0);
    let d = r.destinations[0].clone();
    r.destinations = (0..1024).map(|i| DestinationCounts { service: format!("s{i}"), ..d.clone() }).collect();
    let mut kept = 0;
    for i in 0..300 {
        match reports.ingest(Report { node: format!("n{i}"), ..r.clone() }, Instant::now()) {
            Ok(()) => kept += 1,
            Err(Refusal::Full(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(kept, super::MAX_HELD_DESTINATIONS / 1024);
    assert!(reports.held().1 <= super::MAX_HELD_DESTINATIONS);
}

/// A sidecar's inbound counts: `requests`, `busy_ms` spent on them in all.
fn sidecar(node: &str, service: &str, requests: u64, busy_ms: u64) -> Report {
    let inbound = weft_api::InboundCounts { requests, errors: 0, buckets: vec![requests; 13], duration_sum_us: busy_ms * 1000 };
    Report { service: service.into(), destinations: vec![], inbound: Some(inbound), ..report(node, 1, 0, 0, 0) }
}

#[tokio::test(start_paused = true)]
async fn inbound_concurrency_is_busy_time_over_the_window() {
    let reports = Reports::default();
    reports.ingest(sidecar("r1", "reviews", 0, 0), Instant::now()).unwrap();
    reports.ingest(sidecar("r2", "reviews", 0, 0), Instant::now()).unwrap();
    reports.ingest(sidecar("p1", "productpage", 0, 0), Instant::now()).unwrap();
    assert!(reports.inbound_concurrency(Instant::now()).is_empty(), "one report is no window");
    tokio::time::advance(Duration::from_secs(10)).await;
    // 10 s: r1 was busy 30 s (3 at a time), r2 10 s (1 at a time).
    reports.ingest(sidecar("r1", "reviews", 100, 30_000), Instant::now()).unwrap();
    reports.ingest(sidecar("r2", "reviews", 100, 10_000), Instant::now()).unwrap();
    reports.ingest(sidecar("p1", "productpage", 5, 0), Instant::now()).unwrap();
    let c = reports.inbound_concurrency(Instant::now());
    assert_eq!(c.get("reviews.default.svc.cluster.local"), Some(&4.0));
    assert_eq!(c.get("productpage.default.svc.cluster.local"), Some(&0.0));
    // Counted time going down within a start is refused; absurd counts stay finite.
    tokio::time::advance(Duration::from_secs(10)).await;
    let e = reports.ingest(sidecar("r1", "reviews", 100, 1), Instant::now()).unwrap_err();
    assert!(e.to_string().contains("inbound: counters went down"), "{e}");
    reports.ingest(sidecar("r2", "reviews", u64::MAX, u64::MAX / 1000), Instant::now()).unwrap();
    let c = reports.inbound_concurrency(Instant::now())["reviews.default.svc.cluster.local"];
    assert!(c.is_finite() && c > 1e9, "{c}");
    // Silent for a minute: no longer counted.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(reports.inbound_concurrency(Instant::now()).is_empty());
}
