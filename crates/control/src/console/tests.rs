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
