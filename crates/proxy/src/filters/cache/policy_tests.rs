use super::*;
use http::HeaderValue;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    m
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(t(secs))
}

#[test]
fn cacheable_requests() {
    assert!(request_cacheable(&Method::GET, &h(&[])));
    assert!(request_cacheable(&Method::HEAD, &h(&[])));
    assert!(!request_cacheable(&Method::POST, &h(&[])));
    assert!(!request_cacheable(&Method::GET, &h(&[("cache-control", "no-store")])));
    assert!(!request_cacheable(&Method::GET, &h(&[("range", "bytes=0-10")])));
}

#[test]
fn storable_responses() {
    let ok = |req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]| {
        storable(&Method::GET, &h(req), StatusCode::from_u16(status).unwrap(), &h(resp), t(0))
    };
    assert!(ok(&[], 200, &[("cache-control", "max-age=60")]));
    assert!(ok(&[], 404, &[("cache-control", "s-maxage=60")]));
    assert!(ok(&[], 200, &[("expires", &http_date(60)), ("date", &http_date(0))]));
    assert!(ok(&[], 200, &[("etag", "\"v1\"")]), "no freshness but a validator: stored, revalidated on use");
    assert!(ok(&[], 200, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]));
    assert!(!ok(&[], 200, &[]), "nothing to reuse it by");
    assert!(!ok(&[], 500, &[("etag", "\"v1\"")]), "500 is not cacheable without explicit freshness");
    assert!(ok(&[], 500, &[("cache-control", "max-age=5")]));
    assert!(!ok(&[], 200, &[("cache-control", "max-age=60, no-store")]));
    assert!(!ok(&[], 200, &[("cache-control", "max-age=60, private")]));
    assert!(!ok(&[], 200, &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]));
    assert!(!ok(&[], 200, &[("cache-control", "max-age=60"), ("vary", "*")]));
    assert!(!ok(&[], 206, &[("cache-control", "max-age=60")]));
    assert!(!ok(&[("cache-control", "no-store")], 200, &[("cache-control", "max-age=60")]));
    assert!(!ok(&[("authorization", "Bearer x")], 200, &[("cache-control", "max-age=60")]));
    assert!(ok(&[("authorization", "Bearer x")], 200, &[("cache-control", "max-age=60, public")]));
    assert!(ok(&[("authorization", "Bearer x")], 200, &[("cache-control", "s-maxage=60")]));
    assert!(!storable(&Method::HEAD, &h(&[]), StatusCode::OK, &h(&[("cache-control", "max-age=60")]), t(0)));
    let many: String = (0..1000).map(|i| format!("x-h{i}")).collect::<Vec<_>>().join(", ");
    assert!(!ok(&[], 200, &[("cache-control", "max-age=60"), ("vary", &many)]), "a Vary of 1,000 names is not keyed on");
}

#[test]
fn lifetimes() {
    let life = |resp: &[(&str, &str)]| freshness_lifetime(&h(resp), t(0)).as_secs();
    assert_eq!(life(&[("cache-control", "max-age=10, s-maxage=20")]), 20);
    assert_eq!(life(&[("cache-control", "max-age=10"), ("expires", &http_date(100))]), 10);
    assert_eq!(life(&[("expires", &http_date(100)), ("date", &http_date(40))]), 60);
    assert_eq!(life(&[("expires", &http_date(100))]), 100, "no Date: from arrival");
    assert_eq!(life(&[("expires", "0")]), 0);
    assert_eq!(life(&[("expires", &http_date(0)), ("date", &http_date(50))]), 0);
    assert_eq!(life(&[("cache-control", "max-age=99999999999999999999")]), DELTA_MAX);
    assert_eq!(life(&[]), 0);
}

#[test]
fn ages() {
    // Sent at 0, answered at 2 (dated 1, Age 10), now 30.
    let resp = h(&[("age", "10"), ("date", &http_date(1))]);
    assert_eq!(current_age(&resp, t(0), t(2), t(30)).as_secs(), 10 + 2 + 28);
    // A Date in the past beyond Age dominates.
    let resp = h(&[("date", &http_date(0))]);
    assert_eq!(current_age(&resp, t(99), t(100), t(100)).as_secs(), 100);
    // Clock skew (Date in the future), garbage Age: no negative ages, no panic.
    let resp = h(&[("date", &http_date(500)), ("age", "-5")]);
    assert_eq!(current_age(&resp, t(0), t(0), t(3)).as_secs(), 3);
    let resp = h(&[("age", "99999999999999999999999")]);
    assert_eq!(current_age(&resp, t(0), t(0), t(0)).as_secs(), DELTA_MAX);
    // Dated in the second it arrived in, 0.95 s into it: 0 s old on arrival, not 0.95 s.
    let ms = |m: u64| t(0) + Duration::from_millis(m);
    let resp = h(&[("date", &http_date(0))]);
    assert_eq!(current_age(&resp, ms(940), ms(950), ms(950)), Duration::from_millis(10));
    assert_eq!(current_age(&resp, ms(940), ms(950), ms(1250)), Duration::from_millis(310));
    // A Date a whole second behind still counts.
    assert_eq!(current_age(&resp, ms(1940), ms(1950), ms(1950)), Duration::from_secs(1));
}

#[test]
fn freshness_and_request_directives() {
    let fresh = |req: &[(&str, &str)], resp: &[(&str, &str)], age: u64, life: u64| {
        freshness(&h(req), &h(resp), Duration::from_secs(age), Duration::from_secs(life))
    };
    assert_eq!(fresh(&[], &[], 5, 10), Freshness::Fresh);
    assert_eq!(fresh(&[], &[], 10, 10), Freshness::Stale);
    assert_eq!(fresh(&[], &[("cache-control", "no-cache")], 0, 10), Freshness::Stale);
    assert_eq!(fresh(&[("cache-control", "no-cache")], &[], 0, 10), Freshness::Stale);
    assert_eq!(fresh(&[("pragma", "no-cache")], &[], 0, 10), Freshness::Stale);
    assert_eq!(fresh(&[("cache-control", "max-age=0")], &[], 0, 10), Freshness::Stale);
    assert_eq!(fresh(&[("cache-control", "max-age=5")], &[], 4, 10), Freshness::Fresh);
    assert_eq!(fresh(&[("cache-control", "min-fresh=7")], &[], 4, 10), Freshness::Stale);
    assert_eq!(fresh(&[("cache-control", "min-fresh=6")], &[], 4, 10), Freshness::Fresh);
}
