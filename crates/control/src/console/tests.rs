//! The pages on a real store: what the proxies' reports and the registry put on them,
//! escaped.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use weft_api::report::{Ejected, Report};
use weft_api::Registration;

use crate::api::{Resp, Server};

async fn server() -> (std::sync::Arc<Server>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("weft-console-{}-{}", std::process::id(), next_id()));
    let plane = crate::plane::Plane::new(crate::store::Store::open(&dir).unwrap());
    (Server::new(plane), dir)
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn text(r: Resp) -> String {
    String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

fn reviews(address: &str) -> Registration {
    Registration {
        service: "reviews.default.svc.cluster.local".into(),
        namespace: Some("default".into()),
        address: address.into(),
        labels: BTreeMap::from([("version".into(), "v1".into())]),
        locality: None,
        weight: None,
        ttl_ms: Some(30_000),
        identity: None,
    }
}

#[tokio::test]
async fn services_show_endpoints_ttls_and_ejections_with_names_escaped() {
    let (server, dir) = server().await;
    for a in ["10.0.0.1:9080", "10.0.0.2:9080"] {
        server.plane.lock().await.register("test", reviews(a)).await.unwrap();
    }
    let hostile = "<img src=x onerror=alert(1)>";
    let ejected = Ejected {
        service: "reviews.default.svc.cluster.local".into(),
        address: "10.0.0.2:9080".into(),
        reason: "consecutive_5xx".into(),
        remaining_ms: 29_000,
    };
    let report = Report {
        node: hostile.into(),
        started_ms: 1,
        service: "productpage".into(),
        namespace: "default".into(),
        destinations: vec![],
        ejected: vec![ejected],
        inbound: None,
    };
    server.reports.ingest(report, tokio::time::Instant::now()).unwrap();
    let page = text(super::pages::services(&server).await).await;
    assert!(page.contains("<h2 class=\"service\">reviews.default.svc.cluster.local</h2>"), "{page}");
    assert_eq!(page.matches("<tr class=\"endpoint\">").count(), 2, "{page}");
    assert!(page.contains("version=v1") && page.contains(" s</td>"), "labels and the TTL left: {page}");
    assert!(page.contains("ejected by &lt;img src=x onerror=alert(1)&gt; (consecutive_5xx, 29.0 s left)"), "{page}");
    assert!(!page.contains(hostile), "{page}");
    assert_eq!(page.matches("serving").count(), 1, "{page}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_history_page_lists_revisions_with_rollback_buttons_and_diffs() {
    let (server, dir) = server().await;
    for a in ["10.0.0.1:9080", "10.0.0.2:9080"] {
        server.plane.lock().await.register("test", reviews(a)).await.unwrap();
    }
    let page = text(super::history::show(&server, Some(2)).await).await;
    assert!(page.contains("Latest revision: <b id=\"latest\">2</b>"), "{page}");
    assert!(page.contains("id=\"rollback-1\"") && !page.contains("id=\"rollback-2\""), "the latest has no button: {page}");
    assert!(page.contains("<h2 id=\"diff\">Revision 2 — register reviews.default.svc.cluster.local 10.0.0.2:9080 by test</h2>"), "{page}");
    assert!(page.contains("<span class=\"add\">+   &quot;address&quot;: &quot;10.0.0.2:9080&quot;,</span>"), "{page}");
    let _ = std::fs::remove_dir_all(dir);
}

/// 97 proxies with 1,024 edges each once made `/ui` take 12 s and 300 MB on the control
/// plane's one thread: the page draws and lists the busiest edges only.
#[tokio::test(start_paused = true)]
async fn a_huge_mesh_page_stays_small() {
    use weft_api::report::DestinationCounts;
    let (server, dir) = server().await;
    let report = |node: usize, n: u64| Report {
        node: format!("n{node}"),
        started_ms: 1,
        service: format!("s{node}"),
        namespace: "default".into(),
        destinations: (0..1024)
            .map(|d| DestinationCounts {
                service: format!("d{d}.default.svc.cluster.local"),
                requests: n * d,
                errors: 0,
                buckets: vec![n * d; 13],
            })
            .collect(),
        ejected: vec![],
        inbound: None,
    };
    for node in 0..5 {
        server.reports.ingest(report(node, 0), tokio::time::Instant::now()).unwrap();
    }
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    for node in 0..5 {
        server.reports.ingest(report(node, 10), tokio::time::Instant::now()).unwrap();
    }
    let page = text(super::pages::mesh(&server).await).await;
    assert_eq!(page.matches("<g class=\"edge\">").count(), 100, "drawn");
    assert_eq!(page.matches("<tr class=\"edge\">").count(), 1000, "listed");
    assert!(page.contains("4120 more are not shown"), "of 5 × 1,024 edges");
    assert!(page.len() < 1_000_000, "{} bytes", page.len());
    // The busiest first: d1023 got the most.
    let first = page.find("d1023.default").unwrap();
    assert!(first < page.find("d1.default.svc").unwrap_or(usize::MAX));
    let _ = std::fs::remove_dir_all(dir);
}

/// Ejections count against the same bound as destinations (they were not: 450 reports
/// of 1,024 long ejections took 784 MB).
#[tokio::test]
async fn ejections_count_against_the_held_bound() {
    let (server, dir) = server().await;
    let ejected: Vec<Ejected> = (0..1024)
        .map(|i| Ejected {
            service: "s".repeat(200),
            address: format!("10.0.{}.{}:80", i / 256, i % 256),
            reason: "r".into(),
            remaining_ms: 1,
        })
        .collect();
    let mut refused = 0;
    for node in 0..200 {
        let r = Report {
            node: format!("n{node}"),
            started_ms: 1,
            service: "s".into(),
            namespace: "default".into(),
            destinations: vec![],
            ejected: ejected.clone(),
            inbound: None,
        };
        refused += usize::from(server.reports.ingest(r, tokio::time::Instant::now()).is_err());
    }
    let (_, held) = server.reports.held();
    assert!(held <= super::gather::MAX_HELD_DESTINATIONS, "{held}");
    assert!(refused >= 100, "{refused} refused");
    let _ = std::fs::remove_dir_all(dir);
}
