use super::*;
use http::header::HeaderName;

pub(crate) fn policy(max_bytes: u64, max_entry_bytes: u64) -> CachePolicy {
    CachePolicy { name: "ResponseCache/t".into(), matches: Vec::new(), max_bytes, max_entry_bytes }
}

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    m
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn entry(body: &str, resp: &[(&str, &str)], req: &[(&str, &str)]) -> Entry {
    Entry::new(StatusCode::OK, h(resp), Bytes::from(body.to_owned()), None, t(0), t(0), &h(req)).unwrap()
}

fn key(path: &str) -> PrimaryKey {
    PrimaryKey::new("web", &path.parse().unwrap())
}

#[test]
fn insert_lookup_and_variants() {
    let s = CacheStore::new(&policy(1 << 20, 1 << 16));
    let vary = [("cache-control", "max-age=60"), ("vary", "accept-encoding")];
    assert!(s.insert(key("/a"), entry("plain", &vary, &[])));
    assert!(s.insert(key("/a"), entry("gz", &vary, &[("accept-encoding", "gzip")])));
    assert_eq!(s.lookup(&key("/a"), &h(&[])).unwrap().body, "plain");
    assert_eq!(s.lookup(&key("/a"), &h(&[("accept-encoding", "gzip")])).unwrap().body, "gz");
    assert!(s.lookup(&key("/a"), &h(&[("accept-encoding", "br")])).is_none());
    assert!(s.insert(key("/a"), entry("gz2", &vary, &[("accept-encoding", "gzip")])));
    assert_eq!(s.lookup(&key("/a"), &h(&[("accept-encoding", "gzip")])).unwrap().body, "gz2", "same variant replaced");
    assert_eq!(s.lookup(&key("/a"), &h(&[])).unwrap().body, "plain", "other variant kept");
    for i in 0..20 {
        s.insert(key("/a"), entry("v", &vary, &[("accept-encoding", &format!("x{i}"))]));
    }
    assert!(s.lookup(&key("/a"), &h(&[])).is_none(), "at most {MAX_VARIANTS} variants: the oldest went");
    assert!(s.lookup(&key("/b"), &h(&[])).is_none());
    s.invalidate(&key("/a"));
    assert!(s.lookup(&key("/a"), &h(&[("accept-encoding", "x19")])).is_none());
}

#[test]
fn vary_star_and_hop_by_hop() {
    let req = HeaderMap::new();
    assert!(Entry::new(StatusCode::OK, h(&[("vary", "*")]), Bytes::new(), None, t(0), t(0), &req).is_none());
    let e = entry("x", &[("connection", "x-secret"), ("x-secret", "1"), ("keep-alive", "5"), ("etag", "\"1\"")], &[]);
    assert!(!e.headers.contains_key("x-secret") && !e.headers.contains_key("keep-alive") && !e.headers.contains_key("connection"));
    assert!(e.headers.contains_key("etag"));
}

#[test]
fn entries_over_max_entry_bytes_are_not_admitted() {
    let s = CacheStore::new(&policy(1 << 20, 100));
    assert!(!s.insert(key("/big"), entry(&"x".repeat(101), &[], &[])));
    assert!(s.insert(key("/ok"), entry(&"x".repeat(100), &[], &[])));
    assert!(s.lookup(&key("/big"), &h(&[])).is_none());
}

#[test]
fn bounded_by_bytes_with_evictions_counted() {
    let s = CacheStore::new(&policy(20_000, 2_000));
    // A hot key, used often, then a flood of one-time keys.
    for _ in 0..50 {
        s.insert(key("/hot"), entry(&"h".repeat(1000), &[], &[]));
        let _ = s.lookup(&key("/hot"), &h(&[]));
    }
    for i in 0..200 {
        s.insert(key(&format!("/cold{i}")), entry(&"c".repeat(1000), &[], &[]));
        let _ = s.lookup(&key("/hot"), &h(&[]));
        s.run_pending_tasks();
    }
    s.run_pending_tasks();
    assert!(s.weighted_size() <= 20_000, "{}", s.weighted_size());
    assert!(s.stats.evictions.load(Ordering::Relaxed) > 0);
    assert!(s.lookup(&key("/hot"), &h(&[])).is_some(), "frequency-aware: the hot entry survives the scan");
}

#[test]
fn a_head_is_served_from_a_get_with_age() {
    let s = CacheStore::new(&policy(1 << 20, 1 << 16));
    s.insert(key("/a"), entry("hello", &[("cache-control", "max-age=60"), ("content-length", "5")], &[]));
    let e = s.lookup(&key("/a"), &h(&[])).unwrap();
    let r = e.response(t(7), true);
    assert_eq!(r.headers()["age"], "7");
    assert_eq!(r.headers()["content-length"], "5");
    assert!(r.body().is_empty());
    assert_eq!(e.response(t(7), false).body(), "hello");
    assert_eq!(e.freshness(&h(&[]), t(59)), Freshness::Fresh);
    assert_eq!(e.freshness(&h(&[]), t(60)), Freshness::Stale);
    assert_eq!(e.freshness(&h(&[("cache-control", "max-age=0")]), t(1)), Freshness::Stale);
}
