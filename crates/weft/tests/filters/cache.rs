//! ResponseCache end to end.

use super::support::*;
use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Waits (under a second) until the clock is not near a whole second: a response whose
/// `Date` second is behind the second it arrived in is a second old on arrival, which
/// would make a `max-age=1` test's timing depend on chance.
fn away_from_a_second_boundary() {
    let ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    poll("the clock is mid-second", Duration::from_secs(2), || (50..700).contains(&ms()).then_some(()));
}

fn x_cache(r: &Resp) -> &str {
    r.header("x-cache").unwrap_or("-")
}

fn counters(p: &Proxy) -> (u64, u64) {
    (p.metric("weft_cache_hits_total", &[]) as u64, p.metric("weft_cache_misses_total", &[]) as u64)
}

#[test]
fn a_fresh_entry_is_a_hit_until_max_age_then_it_is_fetched_again() {
    let (o, p) = setup(&cache(""));
    let target = "/k/fresh?cc=max-age=1";
    let want = o.body(target);
    let mut c = Client::connect(p.addr());
    away_from_a_second_boundary();
    let first = c.get("svc", target, &[]);
    let fetched = Instant::now();
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"));
    let second = c.get("svc", target, &[]);
    assert_eq!((second.status, x_cache(&second)), (200, "HIT"));
    assert!(first.body == want && second.body == want);
    assert_eq!(second.header("content-length"), Some("2000"));
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(o.hits("/k/fresh"), 1, "the hit did not go upstream");
    assert_eq!(counters(&p), (1, 1));
    // Once max-age has passed the entry is stale (no validator): fetched anew.
    let mut hits = 1;
    let again = poll("the entry is stale", Duration::from_secs(5), || {
        let r = c.get("svc", target, &[]);
        if x_cache(&r) == "HIT" {
            hits += 1;
            None
        } else {
            Some(r)
        }
    });
    let stale_after = fetched.elapsed();
    assert_eq!((again.status, x_cache(&again)), (200, "MISS"));
    assert!(again.body == want);
    assert!(stale_after >= Duration::from_millis(950) && stale_after < Duration::from_secs(3), "stale after {stale_after:?}");
    assert_eq!(o.hits("/k/fresh"), 2);
    assert_eq!(counters(&p), (hits, 2));
}

#[test]
fn an_entry_fetched_late_in_a_second_gets_its_whole_max_age() {
    // HTTP dates have whole seconds: a response sent at 12.85 s carries `Date: …:12`.
    // Its apparent age is 0 s, not 0.85 s, so `max-age=1` leaves it fresh for a second.
    let (o, p) = setup(&cache(""));
    let mut c = Client::connect(p.addr());
    let subsec = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    let late = 800..950;
    // A round counts when the response arrived late in its second and the second request
    // left within 0.5 s of it (a loaded machine can spoil a round, not fail the test).
    let mut proven = 0;
    for round in 0..8 {
        if proven == 3 {
            break;
        }
        let now = subsec();
        std::thread::sleep(Duration::from_millis(u64::from((late.start + 1000 - now) % 1000)));
        let target = format!("/k/late{round}?cc=max-age=1");
        assert_eq!(x_cache(&c.get("svc", &target, &[])), "MISS");
        let (arrived, at) = (Instant::now(), subsec());
        std::thread::sleep(Duration::from_millis(300)); // into the next second
        if !late.contains(&at) || arrived.elapsed() > Duration::from_millis(500) {
            continue;
        }
        let r = c.get("svc", &target, &[]);
        assert_eq!(x_cache(&r), "HIT", "max-age=1 expired 0.3 s after a response that arrived {at} ms into its second");
        proven += 1;
    }
    assert!(proven >= 2, "only {proven} rounds ran as planned");
    assert_eq!(o.hits("/k/late0"), 1);
}

#[test]
fn a_stale_entry_is_revalidated_with_its_etag_and_a_client_validator_gets_304() {
    let (o, p) = setup(&cache(""));
    let target = "/k/etag?cc=max-age=1&etag=v1";
    let want = o.body(target);
    let mut c = Client::connect(p.addr());
    away_from_a_second_boundary();
    assert_eq!(x_cache(&c.get("svc", target, &[])), "MISS");
    // A client's matching If-None-Match on the fresh entry: 304 from the cache.
    let r = c.get("svc", target, &[("if-none-match", "\"v1\"")]);
    assert_eq!((r.status, x_cache(&r)), (304, "HIT"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(r.body.is_empty());
    // One that does not match gets the body.
    let r = c.get("svc", target, &[("if-none-match", "\"v0\"")]);
    assert_eq!((r.status, x_cache(&r)), (200, "HIT"));
    assert!(r.body == want);
    assert_eq!(o.hits("/k/etag"), 1);
    // Stale: the proxy asks with If-None-Match, the origin answers 304, the client
    // gets the stored 200.
    let r = poll("a revalidation upstream", Duration::from_secs(5), || {
        let r = c.get("svc", target, &[]);
        (o.hits("/k/etag") == 2).then_some(r)
    });
    assert_eq!((r.status, x_cache(&r)), (200, "HIT"), "the origin's 304 served from the cache");
    assert!(r.body == want);
    assert_eq!(o.last("/k/etag")["if-none-match"], "\"v1\"");
    // Freshened: the next one is a hit without going upstream.
    let r = c.get("svc", target, &[]);
    assert_eq!((r.status, x_cache(&r)), (200, "HIT"));
    assert_eq!(o.hits("/k/etag"), 2);
    let (hits, misses) = counters(&p);
    assert_eq!(misses, 1);
    assert!(hits >= 4, "{hits}");
}

#[test]
fn no_store_and_private_responses_are_never_stored() {
    let (o, p) = setup(&cache(""));
    let mut c = Client::connect(p.addr());
    for (path, cc) in [("/k/nostore", "no-store"), ("/k/private", "private,%20max-age=60"), ("/k/both", "max-age=60,%20no-store")] {
        let target = format!("{path}?cc={cc}");
        for i in 0..3 {
            let r = c.get("svc", &target, &[]);
            assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{path} request {i}");
        }
        assert_eq!(o.hits(path), 3, "{path}");
    }
    // A request saying no-store is not answered from the cache either.
    let r = c.get("svc", "/k/ok?cc=max-age=60", &[]);
    assert_eq!(x_cache(&r), "MISS");
    let r = c.get("svc", "/k/ok?cc=max-age=60", &[("cache-control", "no-store")]);
    assert_eq!(r.header("x-cache"), None, "not looked up");
    assert_eq!(o.hits("/k/ok"), 2);
    assert_eq!(counters(&p).0, 0);
}

#[test]
fn vary_keeps_one_entry_per_value() {
    let (o, p) = setup(&cache(""));
    let target = "/k/vary?cc=max-age=60&vary=X-Tenant";
    let mut c = Client::connect(p.addr());
    let ask = |c: &mut Client, tenant: &str| {
        let r = c.get("svc", target, &[("x-tenant", tenant)]);
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with(&format!("variant={tenant}\n")), "tenant {tenant} got {:?}", &r.text()[..20]);
        x_cache(&r).to_owned()
    };
    assert_eq!(ask(&mut c, "a"), "MISS");
    assert_eq!(ask(&mut c, "b"), "MISS");
    assert_eq!(ask(&mut c, "a"), "HIT");
    assert_eq!(ask(&mut c, "b"), "HIT");
    assert_eq!(ask(&mut c, "a"), "HIT");
    assert_eq!(o.hits("/k/vary"), 2);
    assert_eq!(counters(&p), (3, 2));
}

#[test]
fn head_is_answered_from_a_stored_get() {
    let (o, p) = setup(&cache(""));
    let target = "/k/head?cc=max-age=60&size=3000";
    let mut c = Client::connect(p.addr());
    assert_eq!(x_cache(&c.get("svc", target, &[])), "MISS");
    let r = c.request("HEAD", "svc", target, &[], b"");
    assert_eq!((r.status, x_cache(&r)), (200, "HIT"));
    assert_eq!(r.header("content-length"), Some("3000"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // The connection is still in step: no body followed the HEAD's head.
    let r = c.get("svc", target, &[]);
    assert_eq!((x_cache(&r), r.body.len()), ("HIT", 3000));
    assert_eq!(o.hits("/k/head"), 1);
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let (o, p) = setup(&cache(""));
    let target = "/k/slow?cc=max-age=60&delay_ms=300&size=4000";
    let want = Arc::new(o.body("/k/slow?size=4000"));
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let addr = p.addr();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, want) = (barrier.clone(), want.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                let r = c.get("svc", target, &[]);
                assert_eq!(r.status, 200);
                assert!(r.body == *want, "a waiter got {} bytes", r.body.len());
                x_cache(&r).to_owned()
            })
        })
        .collect();
    let seen: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(o.hits("/k/slow"), 1, "the origin saw more than one request");
    assert_eq!(seen.iter().filter(|s| *s == "MISS").count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "HIT").count(), n - 1, "{seen:?}");
    assert_eq!(counters(&p), (n as u64 - 1, 1));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn more_than_max_bytes_evicts_and_memory_stays_bounded() {
    // 1 MiB of cache; 300 distinct 100 KB responses (30 MB) go through it.
    let (o, p) = setup(&cache(", maxBytes: 1048576, maxEntryBytes: 200000"));
    let mut c = Client::connect(p.addr());
    let mut fill = |from: usize, to: usize| {
        for i in from..to {
            let r = c.get("svc", &format!("/e/{i}?cc=max-age=60&size=100000"), &[]);
            assert_eq!((r.status, r.body.len()), (200, 100_000));
        }
    };
    // The first 10 MB warm the allocator and fill the cache; 20 MB more must not grow it.
    fill(0, 100);
    let evictions = p.wait_metric("weft_cache_evictions_total", &[], 1.0);
    assert!(evictions >= 1.0, "no evictions counted:\n{}", p.admin("/metrics"));
    let before = rss_kib(p.p.pid());
    fill(100, 300);
    let after = rss_kib(p.p.pid());
    assert!(after < before + 4 * 1024, "RSS grew from {before} KiB to {after} KiB passing 20 MB through a 1 MiB cache");
    assert!(p.metric("weft_cache_evictions_total", &[]) > evictions, "evictions stopped being counted");
    // What stayed is served whole; nothing was a hit (300 distinct URLs).
    let r = c.get("svc", "/e/299?cc=max-age=60&size=100000", &[]);
    assert_eq!((r.status, r.body.len()), (200, 100_000));
    assert_eq!(o.hits("/e/0"), 1);
    let (hits, misses) = counters(&p);
    assert!(misses >= 300 && hits + misses == 301, "hits {hits}, misses {misses}");
}

#[test]
fn a_response_over_max_entry_bytes_streams_through_uncached() {
    let (o, p) = setup(&cache(", maxEntryBytes: 10000"));
    let mut c = Client::connect(p.addr());
    // Declared too big (Content-Length), and found too big while streaming (chunked).
    for (path, extra) in [("/k/big", ""), ("/k/bigchunked", "&chunks=5")] {
        let target = format!("{path}?cc=max-age=60&size=50000{extra}");
        let want = o.body(&target);
        for i in 0..2 {
            let r = c.get("svc", &target, &[]);
            assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{path} request {i}");
            assert!(r.body == want, "{path}: {} bytes", r.body.len());
        }
        assert_eq!(o.hits(path), 2, "{path}");
    }
    // One under the limit is stored.
    for want in ["MISS", "HIT"] {
        assert_eq!(x_cache(&c.get("svc", "/k/small?cc=max-age=60&size=5000", &[])), want);
    }
    assert_eq!(counters(&p), (1, 5));
}

#[test]
fn a_client_gone_mid_body_leaves_no_entry() {
    let (o, p) = setup(&cache(""));
    // 300 KB in ten pieces 50 ms apart.
    let target = "/k/abort?cc=max-age=60&size=300000&chunks=10&gap_ms=50&cl=1";
    let want = o.body("/k/abort?size=300000");
    {
        let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nhost: svc\r\n\r\n").as_bytes()).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 16384];
        while got < 40_000 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got += n;
        }
    } // gone, with most of the body still to come
    let r = get(p.addr(), "svc", target, &[]);
    assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "a partial body was stored");
    assert!(r.body == want, "{} bytes", r.body.len());
    assert_eq!(o.hits("/k/abort"), 2);
    // The whole one was stored.
    let r = get(p.addr(), "svc", target, &[]);
    assert_eq!((x_cache(&r), r.body.len()), ("HIT", 300_000));
    assert!(r.body == want);
    assert_eq!(counters(&p), (1, 2));
}

#[test]
fn a_cached_response_is_compressed_on_the_way_out() {
    let (o, p) = setup(&(COMPRESSION.to_owned() + &cache("")));
    let target = "/k/both?cc=max-age=60&size=8000";
    let want = o.body(target);
    let mut c = Client::connect(p.addr());
    let r = c.get("svc", target, &[("accept-encoding", "br")]);
    assert_eq!((x_cache(&r), r.header("content-encoding")), ("MISS", Some("br")));
    assert!(decode_py("br", &r.body) == want);
    for (accept, coding) in [("zstd", Some("zstd")), ("identity", None)] {
        let r = c.get("svc", target, &[("accept-encoding", accept)]);
        assert_eq!((x_cache(&r), r.header("content-encoding")), ("HIT", coding), "{accept}");
        let body = if coding.is_some() { decode_py(accept, &r.body) } else { r.body };
        assert!(body == want, "{accept}");
    }
    assert_eq!(o.hits("/k/both"), 1);
}
