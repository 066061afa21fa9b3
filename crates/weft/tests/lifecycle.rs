//! Live reload under load, invalid reloads, SIGHUP, and draining on SIGTERM.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn reload_under_load_loses_no_request() {
    let b: Vec<Proc> = (0..3).map(|i| backend(&format!("r{i}"), &[])).collect();
    let eps: Vec<_> = b.iter().map(|x| (x.addr, "v: x", 1)).collect();
    let p = proxy(&service_entry("svc", &eps[..2]));
    let addr = p.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_r2 = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..4 {
        let (stop, ok, failed, seen_r2) = (stop.clone(), ok.clone(), failed.clone(), seen_r2.clone());
        threads.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Alternate kept-alive requests with fresh connections.
                if i % 50 == 0 && i > 0 {
                    c = Client::connect(addr);
                }
                let r = c.get("svc", &format!("/t{t}/{i}"), &[]);
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if r.backend() == "r2" {
                        seen_r2.store(true, Ordering::Relaxed);
                    }
                } else {
                    failed.lock().unwrap().push(format!("{} {}", r.status, r.text()));
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let configs = [
        service_entry("svc", &eps) + &destination_rule("svc", "{loadBalancer: {simple: ROUND_ROBIN}}"),
        service_entry("svc", &eps[1..]) + &destination_rule("svc", "{loadBalancer: {simple: RANDOM}}"),
        service_entry("svc", &eps) + &destination_rule("svc", "{loadBalancer: {consistentHash: {httpHeaderName: x}}}"),
        service_entry("svc", &eps[..2]),
        service_entry("svc", &eps),
    ];
    for c in &configs {
        p.rewrite(c);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(failed.is_empty(), "{} failed requests, e.g. {:?}", failed.len(), failed.first());
    assert!(ok.load(Ordering::Relaxed) > 500, "only {} requests", ok.load(Ordering::Relaxed));
    assert!(seen_r2.load(Ordering::Relaxed), "the endpoint added by reload never got traffic");
    assert_eq!(p.revision(), 6);
}

#[test]
fn invalid_reload_keeps_the_running_config_and_sighup_reloads() {
    let b = backend("one", &[]);
    let good = service_entry("svc", &[(b.addr, "v: x", 1)]);
    let p = proxy_with(&good, &["--watch-interval", "300ms"]);
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
    std::fs::write(&p.cfg, good.replace("resolution: STATIC", "resolution: STATICK")).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while p.metric("weft_config_reload_failures_total", &[]) < 1.0 {
        assert!(Instant::now() < end, "invalid config was not noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200, "the running config stays");
    assert_eq!(p.revision(), 1);
    let log = p.p.log_text();
    assert!(log.contains("spec.resolution: unknown value \"STATICK\""), "{log}");

    // Restart with file watching effectively off, so only SIGHUP can reload.
    drop(p);
    let p = proxy_with(&good, &["--watch-interval", "1h"]);
    std::fs::write(&p.cfg, good.replace("svc", "new")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.revision(), 1, "no reload without SIGHUP");
    let end = Instant::now() + Duration::from_secs(10);
    while p.revision() < 2 {
        p.p.signal("HUP");
        assert!(Instant::now() < end, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(p.addr(), "new", "/", &[]).status, 200);
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 404);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let b = backend("slow", &[]);
    let mut p = proxy(&service_entry("svc", &[(b.addr, "v: x", 1)]));
    let addr = p.addr();
    let inflight = std::thread::spawn(move || get(addr, "svc", "/", &[("x-delay-ms", "700")]));
    std::thread::sleep(Duration::from_millis(200));
    p.p.signal("TERM");
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = p.p.child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(Instant::now() < end, "the proxy did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after SIGTERM");
}
