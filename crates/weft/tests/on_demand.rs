//! On-demand discovery with real processes: a proxy following a control plane holds the
//! mesh's names, asks for a service the first time a request needs it, is not woken by
//! changes to services it never called, drops idle ones and asks again, keeps serving
//! what it has with the control plane away, and answers 404 for a name its Sidecar does
//! not admit.

mod common;

use common::*;

fn register(cp: &Plane, service: &str, b: &Proc) {
    let out = cp.weft(&["register", "--service", service, "--address", &b.addr.to_string(), "--ttl", "600s"]);
    assert!(out.status.success(), "{}", text(&out));
}

fn status(p: &Proxy, host: &str) -> u16 {
    get(p.addr(), host, "/", &[]).status
}

#[test]
fn services_are_asked_for_when_first_called_and_cost_nothing_before() {
    let cp = plane();
    let (alpha, beta) = (backend("alpha", &[]), backend("beta", &[]));
    register(&cp, "alpha", &alpha);
    register(&cp, "beta", &beta);
    let p = follower_with(&cp, "on-demand", &["--discovery-idle", "2s", "--discovery-timeout", "2s"]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 2.0);
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 0.0, "nothing asked for yet");
    let clusters = p.admin("/clusters");
    assert!(!clusters.contains("alpha") && !clusters.contains("beta"), "no service held before it is called:\n{clusters}");

    // The first request asks, waits, and is served; the next ones are local.
    let first = get(p.addr(), "alpha", "/", &[]);
    assert_eq!((first.status, first.backend()), (200, "alpha".to_owned()));
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 1.0);
    assert_eq!(status(&p, "alpha.default.svc.cluster.local"), 200);
    let clusters = p.admin("/clusters");
    assert!(clusters.contains("alpha") && !clusters.contains("beta"), "{clusters}");

    // A service it never called changes: no answer reaches it.
    let answers = || p.metric("weft_control_plane_deltas_total", &[]) + p.metric("weft_control_plane_full_updates_total", &[]);
    let before = answers();
    let other = backend("beta-2", &[]);
    register(&cp, "beta", &other);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(answers(), before, "beta's new endpoint cost the proxy nothing");
    // A new service: its name only (one small answer), nothing of it held.
    let gamma = backend("gamma", &[]);
    register(&cp, "gamma", &gamma);
    wait_until("gamma's name known", || p.metric("weft_discovery_names", &[]) >= 3.0);
    assert_eq!(answers(), before + 1.0);
    assert!(!p.admin("/clusters").contains("gamma"));
    // A change to what it called does reach it.
    register(&cp, "alpha", &other);
    wait_until("alpha's change pushed", || answers() > before + 1.0);

    // A name the mesh does not have: 404 at once, nothing asked.
    assert_eq!(status(&p, "nowhere"), 404);
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 1.0);

    // Unused past --discovery-idle: dropped, and asked again on the next request.
    wait_until("alpha dropped when idle", || p.metric("weft_discovery_hosts", &[]) == 0.0 && !p.admin("/clusters").contains("alpha"));
    assert_eq!(status(&p, "alpha"), 200);
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 1.0);
}

#[test]
fn the_control_plane_away_leaves_known_services_served_and_unseen_ones_503() {
    let cp = plane();
    let (alpha, beta) = (backend("alpha", &[]), backend("beta", &[]));
    register(&cp, "alpha", &alpha);
    register(&cp, "beta", &beta);
    let p = follower_with(&cp, "on-demand", &["--discovery-timeout", "500ms"]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 2.0);
    assert_eq!(status(&p, "alpha"), 200);
    drop(cp);
    for _ in 0..5 {
        assert_eq!(status(&p, "alpha"), 200, "static stability: what it has keeps serving");
    }
    let r = get(p.addr(), "beta", "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("on-demand discovery"), "{}", r.text());
    assert_eq!(p.metric("weft_discovery_timeouts_total", &[]), 1.0);
}

#[test]
fn a_name_the_sidecar_does_not_admit_is_not_asked_for() {
    let cp = plane();
    let (alpha, beta) = (backend("alpha", &[]), backend("beta", &[]));
    register(&cp, "alpha", &alpha);
    register(&cp, "beta", &beta);
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress:\n  - hosts: [\"./alpha.default.svc.cluster.local\"]\n";
    let out = cp.apply("sidecar.yaml", sidecar);
    assert!(out.status.success(), "{}", text(&out));
    let p = follower_with(&cp, "on-demand", &["--discovery-timeout", "2s"]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 1.0);
    assert_eq!(status(&p, "alpha"), 200);
    assert_eq!(status(&p, "beta"), 404);
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 1.0, "beta was never asked for");
    assert_eq!(p.metric("weft_discovery_timeouts_total", &[]), 0.0);
    // The Sidecar widened: the new names reach the proxy, and beta is asked for and served.
    let wider = sidecar.replace("./alpha.default.svc.cluster.local", "./*");
    assert!(cp.apply("sidecar.yaml", &wider).status.success());
    wait_until("beta admitted", || status(&p, "beta") == 200);
}

#[test]
fn a_name_under_a_wildcard_service_entry_is_asked_for_and_served() {
    let cp = plane();
    let wild = backend("wild", &[]);
    let se = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: wild}}\nspec:\n  hosts: [\"*.wild.test\"]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n", wild.addr.port());
    assert!(cp.apply("wild.yaml", &se).status.success());
    for discovery in ["on-demand", "eager"] {
        let p = follower_with(&cp, discovery, &["--discovery", discovery]);
        wait_until("the proxy follows", || p.metric("weft_control_plane_revision", &[]) >= 1.0);
        let r = get(p.addr(), "api.wild.test", "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "wild".to_owned()), "{discovery}: {}", r.text());
        assert_eq!(status(&p, "wild.test"), 404, "{discovery}: the wildcard is not its own parent");
    }
}

#[test]
fn eager_discovery_holds_the_whole_mesh() {
    let cp = plane();
    let alpha = backend("alpha", &[]);
    register(&cp, "alpha", &alpha);
    let p = follower_with(&cp, "eager", &["--discovery", "eager"]);
    wait_until("alpha held before any request", || p.admin("/clusters").contains("alpha"));
    assert_eq!(status(&p, "alpha"), 200);
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 0.0);
}

/// A host reached through a VirtualService counts as used by what its routes reach: it is
/// not dropped as idle (and asked again) while its traffic flows.
#[test]
fn a_virtual_service_host_in_use_is_not_dropped_as_idle() {
    let cp = plane();
    let beta = backend("beta", &[]);
    register(&cp, "beta", &beta);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: front}\nspec:\n  hosts: [front.example.com]\n  http:\n  - route: [{destination: {host: beta}}]\n";
    assert!(cp.apply("front.yaml", vs).status.success());
    let p = follower_with(&cp, "on-demand", &["--discovery-idle", "1s"]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 2.0);
    assert_eq!(get(p.addr(), "front.example.com", "/", &[]).backend(), "beta");
    let answers = || p.metric("weft_control_plane_deltas_total", &[]) + p.metric("weft_control_plane_full_updates_total", &[]);
    let before = answers();
    // Three idle windows of steady traffic through the VirtualService's host.
    for _ in 0..30 {
        assert_eq!(status(&p, "front.example.com"), 200);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answers(), before, "the host was dropped and asked for again while in use");
    assert_eq!(p.metric("weft_discovery_hosts", &[]), 1.0);
}

#[test]
fn a_service_asked_for_next_brings_only_its_own_documents() {
    let cp = plane();
    let (alpha, beta) = (backend("alpha", &[]), backend("beta", &[]));
    register(&cp, "alpha", &alpha);
    register(&cp, "beta", &beta);
    let p = follower_with(&cp, "on-demand", &[]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 2.0);
    let (full, deltas, bytes) = (
        || p.metric("weft_control_plane_full_updates_total", &[]),
        || p.metric("weft_control_plane_deltas_total", &[]),
        || p.metric("weft_control_plane_received_bytes_total", &[]),
    );

    // The first service: the scope whole (nothing held to add to).
    let (f0, b0) = (full(), bytes());
    assert_eq!(status(&p, "alpha"), 200);
    assert_eq!(full(), f0 + 1.0);
    let alpha_bytes = bytes() - b0;

    // The next: a delta of beta's documents alone, at once.
    let (f1, d1, b1) = (full(), deltas(), bytes());
    let second = get(p.addr(), "beta", "/", &[]);
    assert_eq!((second.status, second.backend()), (200, "beta".to_owned()));
    assert_eq!((full(), deltas()), (f1, d1 + 1.0), "beta came as a delta");
    let beta_bytes = bytes() - b1;
    assert!(
        beta_bytes < alpha_bytes * 1.5,
        "beta's answer ({beta_bytes} bytes) is not alpha's and beta's again (alpha's alone: {alpha_bytes})"
    );
    // Both are served, and alpha's later changes still reach the proxy.
    assert_eq!(status(&p, "alpha"), 200);
    let other = backend("alpha-2", &[]);
    register(&cp, "alpha", &other);
    wait_until("alpha's new endpoint pushed", || p.admin("/clusters").contains(&other.addr.to_string()));
    assert_eq!(p.metric("weft_discovery_timeouts_total", &[]), 0.0);
}

#[test]
fn watches_and_asks_reuse_kept_alive_connections() {
    let cp = plane();
    let backends: Vec<Proc> = (0..6).map(|i| backend(&format!("svc{i}"), &[])).collect();
    for (i, b) in backends.iter().enumerate() {
        register(&cp, &format!("svc{i}"), b);
    }
    let p = follower_with(&cp, "on-demand", &[]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 6.0);
    let accepted = || cp_metric(&cp, "weft_control_api_connections_total");
    // (Past the proxy's start: its certificate, its fetch, its first watch and a spare.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    let answers = || p.metric("weft_control_plane_deltas_total", &[]) + p.metric("weft_control_plane_full_updates_total", &[]);
    let (c0, a0) = (accepted(), answers());
    // Six first requests, each an ask that interrupts the long poll (whose connection
    // goes with it) and is sent on the spare: a new connection each, made while the
    // next long poll waits — not one per call and its answer's watch.
    for i in 0..6 {
        assert_eq!(status(&p, &format!("svc{i}")), 200);
    }
    assert!(answers() >= a0 + 6.0);
    // (Less the one this reading is made on.)
    let asked = accepted() - c0 - 1.0;
    assert!(asked <= 7.0, "{asked} connections for 6 asks");
    // Answers that end their watch normally (endpoint changes of held services) leave the
    // connection for the next watch: no new connection at all.
    let c1 = accepted();
    let extra = backend("svc0-2", &[]);
    for n in 0..5 {
        let out = cp.weft(&["register", "--service", "svc0", "--address", &format!("127.0.0.{}:{}", 2 + n, extra.addr.port())]);
        assert!(out.status.success(), "{}", text(&out));
        let want = a0 + 7.0 + n as f64;
        wait_until("the change answered", || answers() >= want);
    }
    // (Each `weft register` is a connection of its own, as is this reading.)
    let by_proxy = accepted() - c1 - 6.0;
    assert!(by_proxy <= 1.0, "{by_proxy} new connections from the proxy for 5 answered watches");
    assert_eq!(p.metric("weft_discovery_timeouts_total", &[]), 0.0);
}

/// A TCP relay to `to` whose connections accepted before [`Relay::freeze`] stop passing
/// bytes either way and stay open — as behind a middlebox that lost them — while new
/// ones pass.
struct Relay {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn start(to: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (accepted, frozen_below) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (acc, frozen) = (accepted.clone(), frozen_below.clone());
        std::thread::spawn(move || {
            for c in l.incoming().take(64) {
                let Ok(down) = c else { continue };
                let Ok(up) = std::net::TcpStream::connect(to) else { continue };
                let id = acc.fetch_add(1, Ordering::SeqCst);
                for (from, to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    let frozen = frozen.clone();
                    std::thread::spawn(move || pump(from, to, id, &frozen));
                }
            }
        });
        Relay { addr, accepted, frozen_below }
    }

    /// From now on, the connections already accepted pass nothing.
    fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below.store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, id: usize, frozen_below: &std::sync::atomic::AtomicUsize) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
            Ok(n) => n,
        };
        if id < frozen_below.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

#[test]
fn an_ask_on_a_kept_alive_connection_that_went_silent_is_made_on_a_new_one() {
    let cp = plane();
    let (a, b) = (backend("svc-a", &[]), backend("svc-b", &[]));
    register(&cp, "svc-a", &a);
    register(&cp, "svc-b", &b);
    let relay = Relay::start(cp.addr);
    let p = follower_via(&cp, &format!("https://{}", relay.addr), "behind-a-relay", &["--discovery-timeout", "4s"]);
    wait_until("the proxy knows the mesh's names", || p.metric("weft_discovery_names", &[]) >= 2.0);
    assert_eq!(status(&p, "svc-a"), 200);
    // (The spare is made 50 ms after the watch that follows the answer.)
    std::thread::sleep(std::time::Duration::from_millis(400));
    // Every connection the proxy holds goes silent: the ask, sent on the spare, gets no
    // answer; after a second it is made on a new connection.
    relay.freeze();
    let t = std::time::Instant::now();
    let r = get(p.addr(), "svc-b", "/", &[]);
    assert_eq!((r.status, r.backend()), (200, "svc-b".to_owned()), "{}", String::from_utf8_lossy(&r.body));
    assert!(t.elapsed() < std::time::Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(t.elapsed() >= std::time::Duration::from_millis(900), "the ask was not on the silent spare: {:?}", t.elapsed());
}
