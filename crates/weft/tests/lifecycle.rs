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

/// A WebSocket open at SIGTERM keeps carrying bytes while the proxy drains (it stops
/// accepting at once), and the proxy exits as soon as the tunnel closes; a tunnel that
/// never closes is cut at `--drain-timeout`.
#[test]
fn sigterm_drains_open_tunnels_then_exits() {
    use std::io::{Read, Write};
    let b = backend("ws", &[]);
    let upgrade = b"GET /ws HTTP/1.1\r\nhost: svc\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let echo = |c: &mut Client, msg: &[u8]| {
        let s = c.stream();
        s.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg);
    };
    let exited = |p: &mut Proxy, within: Duration| {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(st) = p.p.child.try_wait().unwrap() {
                assert!(st.success(), "exit status {st}");
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    let mut p = proxy_with(&service_entry("svc", &[(b.addr, "v: x", 1)]), &["--drain-timeout", "30s"]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.raw(upgrade, false).status, 101);
    echo(&mut c, b"before");
    p.p.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::net::TcpStream::connect(p.addr()).is_err(), "still accepting after SIGTERM");
    echo(&mut c, b"while draining");
    assert!(!exited(&mut p, Duration::from_millis(500)), "the proxy cut an open tunnel");
    drop(c);
    assert!(exited(&mut p, Duration::from_secs(5)), "the proxy did not exit once the tunnel closed");

    let mut p = proxy_with(&service_entry("svc", &[(b.addr, "v: x", 1)]), &["--drain-timeout", "1s"]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.raw(upgrade, false).status, 101);
    echo(&mut c, b"open");
    let start = Instant::now();
    p.p.signal("TERM");
    assert!(exited(&mut p, Duration::from_secs(5)), "the proxy waited past its drain timeout");
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
}

/// SIGHUP re-reads files only where files are the source. A proxy following a control
/// plane has none: SIGHUP used to install an empty mesh, every host 404 until the next
/// push. Its routes stay; a proxy reading files still re-reads them on SIGHUP.
#[test]
fn sighup_keeps_a_control_plane_proxys_routes_and_still_reloads_files() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let cp = plane();
    let out = cp.apply("mesh.yaml", &service_entry("reviews", &[(a.addr, "v: a", 1)]));
    assert!(out.status.success(), "{}", text(&out));
    let mut p = follower(&cp, "n1");
    wait_until("the proxy routes reviews", || get(p.addr(), "reviews", "/", &[]).status == 200);
    // An admin answer: the admin runtime is up, so its signal handlers are installed.
    let revision = p.metric("weft_control_plane_revision", &[]);
    assert!(revision >= 1.0, "{revision}");
    p.p.signal("HUP");
    // The signal is handled on the admin thread; over the next second every request routes.
    for i in 0..20 {
        let r = get(p.addr(), "reviews", "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "a".to_string()), "request {i} after SIGHUP: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(p.p.log_text().contains("SIGHUP"), "the signal was handled:\n{}", p.p.log_text());
    assert!(p.p.child.try_wait().unwrap().is_none(), "the proxy is still running");
    assert_eq!(p.metric("weft_control_plane_revision", &[]), revision);

    // A files-sourced proxy (file watching effectively off): SIGHUP re-reads its file.
    let f = proxy_with(&service_entry("reviews", &[(a.addr, "v: a", 1)]), &["--watch-interval", "1h"]);
    assert_eq!(get(f.addr(), "reviews", "/", &[]).backend(), "a");
    assert_eq!(f.revision(), 1);
    std::fs::write(&f.cfg, service_entry("reviews", &[(b.addr, "v: b", 1)])).unwrap();
    f.p.signal("HUP");
    wait_until("SIGHUP re-read the file", || get(f.addr(), "reviews", "/", &[]).backend() == "b");
    assert_eq!(f.revision(), 2);
}

/// Files and a control plane are two sources of one config: asking for both is refused
/// at start (it used to start, following the control plane and ignoring the files).
#[test]
fn config_files_and_a_control_plane_together_are_refused_at_start() {
    let cp = plane();
    let cfg = temp_dir().join("mesh.yaml");
    std::fs::write(&cfg, service_entry("svc", &[("127.0.0.1:9".parse().unwrap(), "v: a", 1)])).unwrap();
    let mut child = std::process::Command::new(weft())
        .args(["proxy", "--config", cfg.to_str().unwrap(), "--control-plane", &cp.url(), "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`weft proxy --config F --control-plane URL` started instead of being refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("--config") && err.contains("--control-plane"), "the message names both flags: {err}");
}
