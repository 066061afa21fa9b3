use super::*;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::time::Duration;

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

#[test]
fn if_none_match() {
    let stored = h(&[("etag", "\"v1\""), ("last-modified", &httpdate::fmt_http_date(t(0)))]);
    let nm = |inm: &[&str]| not_modified(&h(&inm.iter().map(|v| ("if-none-match", *v)).collect::<Vec<_>>()), &stored);
    assert!(nm(&["\"v1\""]));
    assert!(nm(&["W/\"v1\""]), "weak comparison");
    assert!(nm(&["\"v0\", \"v1\""]));
    assert!(nm(&["\"v0\"", "\"v1\""]), "several lines");
    assert!(nm(&["*"]));
    assert!(!nm(&["\"v2\""]));
    assert!(!nm(&["v1"]), "unquoted is garbage");
    assert!(!nm(&["\"a,\"v1\""]), "walked quote to quote: `a,` is one tag, then garbage");
    assert!(nm(&["\"a,b\", \"v1\""]), "a tag may hold a comma");
    // If-None-Match decides even when If-Modified-Since would say otherwise.
    let req = h(&[("if-none-match", "\"v2\""), ("if-modified-since", &httpdate::fmt_http_date(t(10)))]);
    assert!(!not_modified(&req, &stored));
    let weak = h(&[("etag", "W/\"v1\"")]);
    assert!(not_modified(&h(&[("if-none-match", "\"v1\"")]), &weak));
    assert!(!not_modified(&h(&[("if-none-match", "\"v1\"")]), &h(&[])));
    assert!(not_modified(&h(&[("if-none-match", "*")]), &h(&[])));
}

#[test]
fn if_modified_since() {
    let stored = h(&[("last-modified", &httpdate::fmt_http_date(t(100)))]);
    let ims = |at: u64| not_modified(&h(&[("if-modified-since", &httpdate::fmt_http_date(t(at)))]), &stored);
    assert!(ims(100));
    assert!(ims(200));
    assert!(!ims(99));
    assert!(!not_modified(&h(&[("if-modified-since", "yesterday")]), &stored));
    let dated = h(&[("date", &httpdate::fmt_http_date(t(50)))]);
    assert!(not_modified(&h(&[("if-modified-since", &httpdate::fmt_http_date(t(60)))]), &dated));
}

#[test]
fn a_list_of_10000_tags_is_one_pass() {
    let list: String = (0..10_000).map(|i| format!("W/\"tag-{i}\"")).collect::<Vec<_>>().join(", ");
    let stored = h(&[("etag", "\"tag-9999\"")]);
    let req = h(&[("if-none-match", &list)]);
    let start = std::time::Instant::now();
    for _ in 0..10 {
        assert!(not_modified(&req, &stored));
    }
    assert!(start.elapsed() < Duration::from_secs(1));
}

fn entry() -> Entry {
    let resp = h(&[
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("cache-control", "max-age=10"),
        ("content-length", "5"),
        ("x-old", "1"),
    ]);
    Entry::new(StatusCode::OK, resp, Bytes::from_static(b"hello"), None, t(0), t(0), &HeaderMap::new()).unwrap()
}

#[test]
fn revalidation() {
    let e = entry();
    let mut up = h(&[("if-none-match", "\"client\""), ("accept", "*/*")]);
    assert!(add_validators(&mut up, &e));
    assert_eq!(up["if-none-match"], "\"v1\"");
    assert_eq!(up["if-modified-since"], "Tue, 14 Nov 2023 22:13:20 GMT");
    let bare = Entry::new(StatusCode::OK, h(&[]), Bytes::new(), None, t(0), t(0), &HeaderMap::new()).unwrap();
    assert!(!add_validators(&mut HeaderMap::new(), &bare));

    let head = h(&[("cache-control", "max-age=60"), ("content-length", "0"), ("etag", "\"v1\""), ("x-new", "2")]);
    let f = freshen(&e, &head, t(100), t(101)).unwrap();
    assert_eq!(f.headers["cache-control"], "max-age=60");
    assert_eq!(f.headers["content-length"], "5");
    assert_eq!((f.headers["x-old"].to_str().unwrap(), f.headers["x-new"].to_str().unwrap()), ("1", "2"));
    assert_eq!(f.body, "hello");
    assert_eq!(f.freshness(&HeaderMap::new(), t(120)), super::super::Freshness::Fresh);
    assert!(freshen(&e, &h(&[("etag", "\"v2\"")]), t(100), t(101)).is_none());
}
