use super::*;
use crate::zookeeper::layouts;

fn plane(name: &str) -> Plane {
    let dir = std::env::temp_dir().join(format!("weft-zk-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Plane::new(crate::store::Store::open(&dir).unwrap())
}

fn zk(name: &str, addr: &str) -> Registration {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    layouts::curator(name, format!(r#"{{"address":"{ip}","port":{port}}}"#).as_bytes()).unwrap()
}

fn addresses(p: &Plane) -> Vec<String> {
    let mut v: Vec<String> = p.registrations().into_iter().map(|r| r.address).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_sync_adds_and_removes_only_zookeepers_endpoints_in_one_revision() {
    let mut p = plane("sync");
    let mine = Registration { labels: Default::default(), ..zk("reviews", "10.0.0.9:80") };
    p.register("cli", mine).await.unwrap();
    let (rev, s) = p.sync_zookeeper(vec![zk("reviews", "10.0.0.1:80"), zk("ratings", "10.0.0.2:80")]).await.unwrap();
    assert!(rev.is_some() && s.skipped.is_empty());
    assert_eq!(addresses(&p), ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.9:80"]);
    // The same scan again: nothing to commit.
    let (rev, _) = p.sync_zookeeper(vec![zk("reviews", "10.0.0.1:80"), zk("ratings", "10.0.0.2:80")]).await.unwrap();
    assert!(rev.is_none());
    // Gone from ZooKeeper: gone from the registry; the CLI's registration stays.
    let (rev, _) = p.sync_zookeeper(vec![zk("ratings", "10.0.0.2:80")]).await.unwrap();
    assert_eq!(rev.unwrap().changes.len(), 1);
    assert_eq!(addresses(&p), ["10.0.0.2:80", "10.0.0.9:80"]);
    p.sync_zookeeper(vec![]).await.unwrap();
    assert_eq!(addresses(&p), ["10.0.0.9:80"]);
}

#[tokio::test]
async fn weft_register_and_zookeeper_never_overwrite_each_other() {
    let mut p = plane("guard");
    p.sync_zookeeper(vec![zk("reviews", "10.0.0.1:80")]).await.unwrap();
    let fqdn = "reviews.default.svc.cluster.local";
    // The CLI may not replace, relabel or remove ZooKeeper's endpoint.
    let over = Registration { labels: Default::default(), ..zk("reviews", "10.0.0.1:80") };
    let e = p.register("cli", over).await.unwrap_err().to_string();
    assert!(e.contains("comes from ZooKeeper"), "{e}");
    let e = p.deregister("cli", fqdn, "10.0.0.1:80").await.unwrap_err().to_string();
    assert!(e.contains("comes from ZooKeeper"), "{e}");
    // Nor pose as ZooKeeper.
    let e = p.register("cli", zk("other", "10.0.0.5:80")).await.unwrap_err().to_string();
    assert!(e.contains(layouts::SOURCE_LABEL), "{e}");
    // A CLI registration at an address ZooKeeper later names wins: ZooKeeper's is skipped.
    let cli = Registration { labels: [("v".to_string(), "cli".to_string())].into(), ..zk("ratings", "10.0.0.2:80") };
    p.register("cli", cli).await.unwrap();
    let (_, s) = p.sync_zookeeper(vec![zk("reviews", "10.0.0.1:80"), zk("ratings", "10.0.0.2:80")]).await.unwrap();
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    let ratings = p.registrations_of("ratings.default.svc.cluster.local");
    assert_eq!(ratings.len(), 1);
    assert_eq!(ratings[0].labels.get("v").map(String::as_str), Some("cli"));
}
