//! Client connection limits on a real proxy process: `--max-connections` turns a flood
//! of idle and half-sent connections away while open clients are served, the header
//! and idle timeouts reap what got in, and out of file descriptors the accept loop
//! pauses instead of spinning. Loopback only; every loop is bounded.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connects, and for every other connection sends half a request head.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|i| {
            let mut s = TcpStream::connect(addr).ok()?;
            if i % 2 == 1 {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n");
            }
            Some(s)
        })
        .collect()
}

/// Whether the proxy closed `s` within `wait` (EOF or a reset).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    let end = Instant::now() + wait;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if Instant::now() < end => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
            Ok(_) => return false,
        }
    }
}

/// GET until it answers 200 or `within` passes.
fn served_again(addr: SocketAddr, within: Duration) -> bool {
    answers_again(addr, within, b"HTTP/1.1 200")
}

/// GET until the answer starts with `want` or `within` passes.
fn answers_again(addr: SocketAddr, within: Duration, want: &[u8]) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n").is_ok() {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                if got.starts_with(want) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_flood_past_max_connections_is_turned_away_while_open_clients_are_served() {
    let b = backend("b", &[]);
    let p = proxy_with(&service_entry("svc", &[(b.addr, "v: x", 1)]), &["--max-connections", "20", "--header-read-timeout", "1s"]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("svc", "/", &[]).status, 200);
    let mut flooded = flood(p.addr(), 60);
    // The open client is served throughout.
    for _ in 0..10 {
        assert_eq!(c.get("svc", "/", &[]).status, 200);
    }
    // Past the limit, connections are closed at once (not left hanging in the queue).
    let turned_away = flooded.iter_mut().rev().take(20).map(|s| closed_within(s, Duration::from_millis(500))).filter(|c| *c).count();
    assert!(turned_away >= 15, "only {turned_away} of the last 20 closed at once");
    assert!(p.metric("weft_downstream_overflow_total", &[]) >= 30.0);
    // Those that got in are cut off by the header timeout, and new clients get in again.
    assert!(served_again(p.addr(), Duration::from_secs(5)), "not serving new connections again");
    assert!(p.metric("weft_downstream_header_timeouts_total", &[]) >= 15.0);
    assert_eq!(c.get("svc", "/", &[]).status, 200);
}

#[test]
fn an_idle_client_connection_is_closed_after_idle_timeout() {
    let b = backend("b", &[]);
    let p = proxy_with(&service_entry("svc", &[(b.addr, "v: x", 1)]), &["--idle-timeout", "300ms"]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("svc", "/", &[]).status, 200);
    let t = Instant::now();
    assert!(closed_within(c.stream(), Duration::from_secs(3)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "closed after {took:?}");
    assert_eq!(p.wait_metric("weft_downstream_idle_timeouts_total", &[], 1.0), 1.0);
}

/// The CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `weft ARGS` with at most `fds` open files, waiting for its "listening on" line.
fn spawn_limited(fds: u32, args: &[&str]) -> Proc {
    let ulimit = format!("ulimit -n {fds} && exec \"$0\" \"$@\"");
    let mut all = vec!["-c", &ulimit, weft()];
    all.extend_from_slice(args);
    spawn_program("sh", &all)
}

/// Holds `n` connections to `p` for 2 s and says how much CPU `p` spent meanwhile.
fn cpu_while_flooded(p: &Proc, n: usize) -> (u64, Vec<TcpStream>) {
    let held = flood(p.addr, n);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(p.pid());
    std::thread::sleep(Duration::from_secs(2));
    (cpu_ticks(p.pid()) - before, held)
}

#[test]
fn out_of_file_descriptors_the_control_plane_pauses_and_recovers() {
    let dir = temp_dir().join("cp");
    let p = spawn_limited(48, &["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let (spent, held) = cpu_while_flooded(&p, 100);
    assert!(spent <= 30, "the control plane spent {spent} ticks of CPU in 2 s while out of descriptors");
    drop(held);
    // Its API is HTTPS: answered again over TLS, the handshake included.
    let roots = std::fs::read_to_string(dir.join("ca").join("root-cert.pem")).unwrap();
    assert!(tls_answers_again(p.addr, &roots, Duration::from_secs(5)), "not answering again once descriptors were freed");
}

/// A GET over TLS (verified with `roots`) until an HTTP answer comes or `within` passes.
fn tls_answers_again(addr: SocketAddr, roots: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(mut s) = tls_to(addr, roots) {
            if s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: cp\r\nconnection: close\r\n\r\n").is_ok() {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                if got.starts_with(b"HTTP/1.1 ") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn out_of_file_descriptors_the_accept_loop_pauses_and_recovers() {
    let b = backend("b", &[]);
    let dir = temp_dir();
    let cfg = dir.join("mesh.yaml");
    std::fs::write(&cfg, service_entry("svc", &[(b.addr, "v: x", 1)])).unwrap();
    let args = [
        "proxy",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--workers",
        "2",
        // No connection limit: the descriptors run out first.
        "--max-connections",
        "0",
    ];
    let p = Proxy { p: spawn_limited(64, &args), cfg };
    assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
    // Past 64 descriptors: the last of these wait in the listen queue, unaccepted.
    let (spent, held) = cpu_while_flooded(&p.p, 100);
    // Clock ticks are 1/100 s: a spinning accept loop would spend ~200 here.
    assert!(spent <= 30, "the proxy spent {spent} ticks of CPU in 2 s while out of descriptors");
    drop(held);
    assert!(served_again(p.addr(), Duration::from_secs(5)), "not serving again once descriptors were freed");
    assert!(p.metric("weft_accept_exhausted_total", &[]) >= 1.0);
}

#[test]
fn the_admin_endpoint_holds_at_most_64_connections_and_serves_again_when_they_go() {
    let b = backend("b", &[]);
    let p = proxy(&service_entry("svc", &[(b.addr, "v: x", 1)]));
    let admin = p.p.admin.unwrap();
    // 64 idle connections take every slot: the next one is closed at accept.
    let held: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(admin).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (code, _, _) = curl(&["-s", "--max-time", "2", &format!("http://{admin}/ready")]);
    assert_ne!(code, 0, "a 65th admin connection was served");
    drop(held);
    wait_until("the admin endpoint serves again", || curl(&["-s", "--max-time", "2", &format!("http://{admin}/ready")]).1 == "ready\n");
}

/// A control plane with more flags (under an open-file limit of `fds`, if given), once
/// its API answers the CLI.
fn plane_with(fds: Option<u32>, extra: &[&str]) -> Plane {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let (d, a) = (dir.to_str().unwrap().to_owned(), addr.to_string());
    let mut args = vec!["control-plane", "--data-dir", &d, "--listen", &a];
    args.extend_from_slice(extra);
    let p = match fds {
        Some(n) => spawn_limited(n, &args),
        None => spawn(&args),
    };
    let cp = Plane { p, addr, dir };
    wait_until("the control plane answers", || cp.weft(&["get", "services"]).status.success());
    cp
}

/// A TCP connection to `to` from source address `from` (any port).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from.parse().unwrap(), 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// Reads one HTTP/1.1 answer framed by content-length off a kept-alive connection: its status.
fn read_answer(s: &mut impl Read) -> u16 {
    read_answer_body(s).0
}

/// [`read_answer`], with the body.
fn read_answer_body(s: &mut impl Read) -> (u16, String) {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    let mut body = body.as_bytes().to_vec();
    while body.len() < len {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&b[..n]);
    }
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), String::from_utf8_lossy(&body).into_owned())
}

/// Idle connections from anyone who reaches the API port cannot lock the mesh out: one
/// source holds a bounded number of them, past the cap the oldest of the source holding
/// the most is closed for a new one, and connections that made a call with valid credentials — a proxy's long poll,
/// the CLI's — are never closed for room.
#[test]
fn idle_unauthenticated_api_connections_give_way_to_the_mesh() {
    let cp = plane_with(None, &["--max-connections", "64"]);
    let addr = cp.addr;
    // A kept-alive connection that proved itself with the admin token.
    let token = cp.admin_token();
    let ask = format!("GET /v1/status HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {token}\r\n\r\n");
    let mut proven = plane_tls(&cp);
    proven.write_all(ask.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut proven), 200);
    // A kept-alive connection whose call had no credentials stays unproven.
    let mut refused = plane_tls(&cp);
    refused.write_all(b"GET /v1/status HTTP/1.1\r\nhost: cp\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut refused), 401);
    // One source (127.0.0.1) holds at most 64/32 → 4 unproven: its oldest go first.
    let mut own: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.1", addr)).collect();
    let closed: Vec<bool> = own.iter_mut().map(|s| closed_within(s, Duration::from_millis(300))).collect();
    assert!(closed_within(refused.get_mut(), Duration::from_millis(300)), "the unauthenticated connection was kept");
    assert_eq!(closed, [true, true, true, true, false, false, false, false], "which of one source's connections were closed");
    // Many sources past the cap: the source holding the most unproven gives up its
    // oldest for each new one, so the places end up shared evenly between sources.
    let mut many: Vec<TcpStream> =
        (2..42).flat_map(|i| (0..3).map(move |_| format!("127.0.0.{i}"))).map(|a| connect_from(&a, addr)).collect();
    // (Counted once every accept has been taken: the closes-for-room count, read on the
    // proven connection — a new one would take a place — stands still.)
    let metrics = format!("GET /metrics HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {token}\r\n\r\n");
    let mut closed_for_room = || {
        proven.write_all(metrics.as_bytes()).unwrap();
        metric_sum(&read_answer_body(&mut proven).1, "weft_control_api_connections_closed_total", &[])
    };
    let settle = Instant::now() + Duration::from_secs(10);
    let mut last = closed_for_room();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = closed_for_room();
        if now == last || Instant::now() > settle {
            break;
        }
        last = now;
    }
    let open: Vec<usize> = many
        .chunks_mut(3)
        .map(|c| c.iter_mut().map(|s| !closed_within(s, Duration::from_millis(30))).filter(|open| *open).count())
        .collect();
    let (least, most) = (open.iter().min().copied().unwrap_or(0), open.iter().max().copied().unwrap_or(0));
    assert!(least >= 1 && most - least <= 1, "the places were not shared between sources: {open:?}");
    // The proven connection is served, and so are the CLI and a new proxy.
    proven.write_all(ask.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut proven), 200, "the proven connection");
    let out = cp.weft(&["get", "services"]);
    assert!(out.status.success(), "the CLI was locked out: {}", text(&out));
    let m = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert!(metric_sum(&m, "weft_control_api_connections_closed_total", &["reason=\"source\""]) >= 5.0, "{m}");
    assert!(metric_sum(&m, "weft_control_api_connections_closed_total", &["reason=\"full\""]) >= 60.0, "{m}");
    assert!(metric_sum(&m, "weft_control_api_connections", &["state=\"all\""]) <= 64.0, "{m}");
    drop(many);
}

/// Sends an authenticated `GET /v1/status` on a kept-alive API connection: its status.
fn status_on(s: &mut (impl Read + Write), token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /v1/status HTTP/1.1\r\nhost: cp\r\n{auth}\r\n").as_bytes()).unwrap();
    read_answer(s)
}

/// A leaked low-privilege token cannot take every place: one credential holds at most a
/// quarter of the cap (64 → 16), its own oldest connections closed first; a call refused
/// for its credentials makes a proven connection unproven again.
#[test]
fn one_credential_holds_a_quarter_of_the_api_connections() {
    let cp = plane_with(None, &["--max-connections", "64"]);
    let addr = cp.addr;
    let out = cp.weft(&["token", "create", "--role", "read"]);
    assert!(out.status.success(), "{}", text(&out));
    let read = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // (Each proven as it is made: unproven, one address holds at most 4.)
    let mut leaked: Vec<_> = (0..30)
        .map(|_| {
            let mut s = plane_tls(&cp);
            assert_eq!(status_on(&mut s, Some(&read)), 200);
            s
        })
        .collect();
    let closed = leaked.iter_mut().map(|s| closed_within(s.get_mut(), Duration::from_millis(100))).filter(|c| *c).count();
    assert_eq!(closed, 14, "the read token's oldest connections past 16 are closed");
    // Past the cap with the rest: the CLI is served.
    let mut more: Vec<_> = (0..40).map(|i| connect_from(&format!("127.0.0.{}", 2 + i / 3), addr)).collect();
    let out = cp.weft(&["get", "services"]);
    assert!(out.status.success(), "the CLI was locked out: {}", text(&out));
    // A refused call unproves: the last read connection, asked without a token, is then
    // one unproven connection of 127.0.0.1 among others and is closed for the newest.
    let last = leaked.last_mut().unwrap();
    assert_eq!(status_on(last, None), 401);
    more.extend((0..8).map(|_| connect_from("127.0.0.1", addr)));
    assert!(closed_within(last.get_mut(), Duration::from_millis(500)), "an unproven connection was kept past its source's limit");
    let m = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert_eq!(metric_sum(&m, "weft_control_api_connections_closed_total", &["reason=\"credential\""]), 14.0, "{m}");
    drop(more);
}

/// The cap fits the open-file limit: under `ulimit -n 128` a cap of 8,192 becomes 96,
/// so idle TLS connections from many addresses are closed for new ones instead of running
/// the process out of descriptors (where every accept, the CLI's too, would fail).
#[test]
fn the_control_planes_connection_cap_fits_its_open_file_limit() {
    let cp = plane_with(Some(128), &["--max-connections", "8192"]);
    let addr = cp.addr;
    assert!(cp.p.log_text().contains("the API holds at most 96 connections"), "{}", cp.p.log_text());
    // Idle TLS connections (a bare TCP one is closed after the 10 s handshake timeout; these
    // would live until the 60 s header timeout).
    let roots = std::fs::read_to_string(cp.ca_file()).unwrap();
    let held: Vec<_> = (0..130).filter_map(|i| tls_from(&format!("127.0.0.{}", 2 + i / 3), addr, &roots)).collect();
    assert!(held.len() > 90, "{} handshakes", held.len());
    let start = Instant::now();
    let out = cp.weft(&["get", "services"]);
    assert!(out.status.success() && start.elapsed() < Duration::from_secs(5), "the CLI was locked out: {}", text(&out));
    drop(held);
}

/// A TLS connection to `to` from source address `from`, verified with `roots`; none if the
/// handshake fails (the server closed it for a newer one, say).
fn tls_from(from: &str, to: SocketAddr, roots: &str) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let config = weft_tls::config::control_plane_client_config(roots, None).ok()?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), rustls::pki_types::ServerName::from(to.ip())).ok()?;
    let tcp = connect_from(from, to);
    tcp.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).ok()?;
    }
    Some(s)
}

/// Four leaked tokens holding a quarter of the cap each do not keep the admin out: with
/// every place proven, a new connection takes the oldest place of the credential holding
/// the most.
#[test]
fn several_credentials_holding_every_place_do_not_keep_the_admin_out() {
    let cp = plane_with(None, &["--max-connections", "64"]);
    let tokens: Vec<String> = (0..4)
        .map(|_| {
            let out = cp.weft(&["token", "create", "--role", "read"]);
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    let mut held = Vec::new();
    for t in &tokens {
        for _ in 0..16 {
            let mut s = plane_tls(&cp);
            assert_eq!(status_on(&mut s, Some(t)), 200);
            held.push(s);
        }
    }
    for _ in 0..3 {
        let out = cp.weft(&["get", "services"]);
        assert!(out.status.success(), "the CLI was locked out: {}", text(&out));
    }
    let m = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert!(metric_sum(&m, "weft_control_api_connections_closed_total", &["reason=\"share\""]) >= 1.0, "{m}");
    drop(held);
}

/// `--max-connections` out of range or malformed is refused at start, saying why.
#[test]
fn a_hostile_max_connections_is_refused() {
    let dir = temp_dir().join("cp");
    for bad in ["0", "-1", "1000001", "99999999999999999999", "abc", "1e3", ""] {
        let out = std::process::Command::new(weft())
            .args(["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", &format!("--max-connections={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains("--max-connections"), "{bad:?}: {err}");
    }
    assert!(!dir.join("admin-token").exists(), "nothing was started");
}

/// A browser logged in to the console (its cookie's token valid) holds its connection
/// like an API client: a flood of idle connections closes the login page's connection,
/// not the console user's.
#[test]
fn a_logged_in_console_browser_keeps_its_connection() {
    let cp = plane_with(None, &["--max-connections", "64"]);
    let addr = cp.addr;
    let token = cp.admin_token();
    let page = |cookie: Option<&str>| {
        let cookie = cookie.map(|t| format!("cookie: weft_console={t}\r\n")).unwrap_or_default();
        format!("GET /ui/services HTTP/1.1\r\nhost: cp\r\n{cookie}\r\n")
    };
    let mut browser = plane_tls(&cp);
    browser.write_all(page(Some(&token)).as_bytes()).unwrap();
    assert_eq!(read_answer(&mut browser), 200);
    // Without a session the console shows its login page, which proves nothing.
    let mut stranger = plane_tls(&cp);
    stranger.write_all(page(None).as_bytes()).unwrap();
    assert_eq!(read_answer(&mut stranger), 401);
    // 127.0.0.1 holds at most 64/32 → 4 unproven, and many sources fill the cap.
    let own: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.1", addr)).collect();
    let many: Vec<TcpStream> = (2..42).flat_map(|i| (0..3).map(move |_| format!("127.0.0.{i}"))).map(|a| connect_from(&a, addr)).collect();
    assert!(closed_within(stranger.get_mut(), Duration::from_millis(300)), "the login page's connection was kept");
    browser.write_all(page(Some(&token)).as_bytes()).unwrap();
    assert_eq!(read_answer(&mut browser), 200, "the console user's connection");
    // A refused session (a forged cookie) makes it unproven again: as the oldest of its
    // source's unproven connections it is the next to go.
    browser.write_all(page(Some("weft1.forged.tag")).as_bytes()).unwrap();
    assert_eq!(read_answer(&mut browser), 401);
    let _one_more = connect_from("127.0.0.1", addr);
    assert!(closed_within(browser.get_mut(), Duration::from_millis(300)), "a refused session kept its connection proven");
    drop((own, many));
}

/// A bootstrap token spent on its certificate holds no place: neither the certificate call
/// (which refuses the replay) nor the console (which it may not see) proves a connection
/// of it, so such connections give way to others as any unproven one does. (Both used to
/// prove them: sixteen addresses' worth of a spent token held every place.)
#[test]
fn a_spent_bootstrap_token_proves_no_connection() {
    let cp = plane_with(None, &["--max-connections", "64"]);
    let out = cp.weft(&["token", "create", "--namespace", "default", "--service-account", "reviews", "--uses", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let spent = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let file = temp_dir().join("once.token");
    std::fs::write(&file, &spent).unwrap();
    let _proxy = spawn_reviews_sidecar(&cp, &file, &["--node", "reviews-1"]);
    // Spent on the proxy's certificate. Each call is answered (refused, or the login page).
    let calls = [
        format!("POST /v1/certificate HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {spent}\r\ncontent-length: 3\r\n\r\nxyz"),
        format!("GET /ui/ HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {spent}\r\n\r\n"),
        format!("GET /ui/services HTTP/1.1\r\nhost: cp\r\ncookie: weft_console={spent}\r\n\r\n"),
        format!("GET /ui/login HTTP/1.1\r\nhost: cp\r\ncookie: weft_console={spent}\r\n\r\n"),
    ];
    let mut held: Vec<_> = calls
        .iter()
        .map(|c| {
            let mut s = plane_tls(&cp);
            s.write_all(c.as_bytes()).unwrap();
            let status = read_answer(&mut s);
            assert!(matches!(status, 200 | 400 | 403), "{status} for {c}");
            s
        })
        .collect();
    // 127.0.0.1 holds at most 64/32 → 4 unproven: its next ones close them, oldest first.
    let _more: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.1", cp.addr)).collect();
    let kept: Vec<bool> = held.iter_mut().map(|s| !closed_within(s.get_mut(), Duration::from_millis(300))).collect();
    assert_eq!(kept, [false, false, false, false], "connections of a spent token were kept as proven");
}
