//! `weft run` with real processes: a Python app and its sidecar under one supervisor,
//! registered with a real control plane (workload tokens, mTLS), called through a
//! proxy following it. A crashed app is restarted; SIGTERM deregisters, waits for the
//! proxies, drains and stops — without a failed request while another instance serves;
//! a crash loop, a missing command, a taken port, a refused token end it with a message.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const HOST: &str = "hello.default.svc.cluster.local";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run_args(cp: &Plane, token: &Path, port: u16) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--service", "hello", "--port", &port.to_string(), "--ttl", "3s", "--control-plane", &cp.url()].map(String::from).to_vec();
    args.extend(["--ca-file".into(), cp.ca_file().display().to_string(), "--token-file".into(), token.display().to_string()]);
    args
}

/// `weft run` of a Python HTTP server on `port` (returns once its sidecar listens).
fn run_app(cp: &Plane, token: &Path, port: u16) -> Proc {
    run_app_with(cp, token, port, &[])
}

fn run_app_with(cp: &Plane, token: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut args = run_args(cp, token, port);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--", "python3", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"].map(String::from));
    spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The app's pid: the supervisor's python3 child.
fn app_pid(run: &Proc) -> Option<String> {
    let out = Command::new("pgrep").args(["-P", &run.pid().to_string(), "python3"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)
}

/// How many endpoints of hello the registry holds.
fn registered(cp: &Plane) -> usize {
    let (code, body) = plane_raw(cp, "GET", "/v1/registry", b"");
    assert_eq!(code, 200, "{body}");
    body.matches(HOST).count()
}

fn status(client: &Proxy) -> u16 {
    get(client.addr(), HOST, "/", &[]).status
}

#[test]
fn a_crashed_app_comes_back_and_sigterm_leaves_cleanly() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let client = follower(&cp, "client");
    let metrics = free_addr();
    let mut run = run_app_with(&cp, &token, free_port(), &["--metrics", &metrics.to_string()]);
    wait_until("the app reachable through the mesh", || status(&client) == 200);
    let app_metrics = || Client::connect(metrics).get("run", "/metrics", &[]).text();
    let text = app_metrics();
    assert!(text.contains("weft_app_up 1\n") && text.contains("weft_app_restarts_total 0\n"), "{text}");
    let pid = app_pid(&run).expect("the app runs under the supervisor");
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    wait_until("the crash seen", || run.log_text().contains("deregistered, starting it again in 1s"));
    wait_until("the app back", || status(&client) == 200);
    assert_ne!(app_pid(&run).as_deref(), Some(pid.as_str()), "a new process");
    let text = app_metrics();
    assert!(text.contains("weft_app_restarts_total 1\n") && text.contains("weft_app_last_exit_code 137\n"), "{text}");
    let table = cp.weft(&["get", "endpoints"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("weft.io/last-exit=signal-9") && table.contains("weft.io/restarts=1"), "{table}");
    run.signal("TERM");
    let exit = wait_exit(&mut run.child);
    assert!(exit.success(), "{exit}: {}", run.log_text());
    let log = run.log_text();
    assert!(log.contains("acknowledged by the proxies"), "{log}");
    assert_eq!(registered(&cp), 0);
    assert_eq!(status(&client), 404, "deregistered: the mesh has no such service left");
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("weft run did not exit within 30 s");
}

/// Two instances under constant load; one stopped with SIGTERM: not one request fails.
#[test]
fn sigterm_under_load_loses_no_request() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let client = follower(&cp, "client");
    let mut first = run_app(&cp, &token, free_port());
    let _second = run_app(&cp, &token, free_port());
    wait_until("both instances registered", || registered(&cp) == 2);
    wait_until("serving", || status(&client) == 200);
    let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), client.addr());
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.get(HOST, "/", &[]).status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    first.signal("TERM");
    assert!(wait_exit(&mut first.child).success(), "{}", first.log_text());
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "{ok} requests served");
    assert_eq!(failed, 0, "{failed} of {} failed while an instance left", ok + failed);
}

/// Three instances under constant load; one app killed with `kill -9`: deregistered at
/// once and restarted, and with retries on 503 (what the killed app's sidecar answers
/// until the proxies know: it cannot reach its app) no client request fails but, at
/// most, the one whose response the app was writing at that instant (its head already
/// passed on: no proxy can retry it).
#[test]
fn kill_9_of_one_of_three_under_load_is_covered_by_retries() {
    let cp = plane();
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hello}\nspec:\n  hosts: [hello]\n  http:\n  - route: [{destination: {host: hello}}]\n    retries: {attempts: 2, retryOn: \"connect-failure,refused-stream,503\"}\n";
    assert!(cp.apply("retries.yaml", vs).status.success());
    let token = workload_token(&cp, "default", "hello");
    let client = follower(&cp, "client");
    let victim = run_app(&cp, &token, free_port());
    let _others = [run_app(&cp, &token, free_port()), run_app(&cp, &token, free_port())];
    wait_until("three instances registered", || registered(&cp) == 3);
    wait_until("serving", || status(&client) == 200);
    let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop, ok, failed, addr, seen) = (stop.clone(), ok.clone(), failed.clone(), client.addr(), seen.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let request = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // (A connection the proxy had to cut is a failed request: counted, and a new one.)
                let answer = std::io::Write::write_all(c.stream(), request.as_bytes()).ok().and_then(|()| c.read_response(false));
                match answer {
                    Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Some(r) => {
                        seen.lock().unwrap().push(format!("{} {}", r.status, r.text().trim()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    None => {
                        seen.lock().unwrap().push("connection cut".to_owned());
                        c = Client::connect(addr);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    let pid = app_pid(&victim).expect("the app runs under its supervisor");
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    wait_until("the crash seen", || victim.log_text().contains("deregistered, starting it again"));
    wait_until("the instance back", || registered(&cp) == 3);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("kill -9 of one of three: {ok} served, {failed} failed: {:?}", seen.lock().unwrap());
    assert!(ok > 50, "{ok} requests served");
    assert!(failed <= 1, "{failed} of {} failed: {:?}", ok + failed, seen.lock().unwrap());
}

/// What ends `weft run` with a message and a failure exit.
#[test]
fn bad_runs_end_with_a_message() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let run = |port: u16, token: &Path, tail: &[&str]| {
        let mut args = run_args(&cp, token, port);
        if tail.contains(&"--ttl") {
            // (Its own --ttl instead of the usual one.)
            let at = args.iter().position(|a| a == "--ttl").unwrap();
            args.drain(at..at + 2);
        }
        args.extend(["--max-restarts", "1", "--ready-timeout", "10s"].map(String::from));
        if !tail.contains(&"--") {
            args.push("--".into());
        }
        args.extend(tail.iter().map(|s| s.to_string()));
        let out = Command::new(weft()).args(&args).output().unwrap();
        (out.status.code(), text(&out))
    };
    let (code, out) = run(free_port(), &token, &["sh", "-c", "exit 3"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("crashed 2 times within a minute") && out.contains("a crash loop, not started again"), "{out}");
    let (code, out) = run(free_port(), &token, &["/nonexistent/app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot start \"/nonexistent/app\""), "{out}");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, out) = run(taken.local_addr().unwrap().port(), &token, &["true"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is already taken"), "{out}");
    // Checked before anything starts: the sidecar may not sit on the app's port, a TTL
    // the control plane would refuse.
    let port = free_port();
    let (code, out) = run(port, &token, &["--inbound", &format!("127.0.0.1:{port}"), "--", "true"][..]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the app's own port"), "{out}");
    let (code, out) = run(free_port(), &token, &["--ttl", "0s", "--", "true"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--ttl 0ns: 1s to 24h"), "{out}");
    let forged = temp_dir().join("forged.token");
    std::fs::write(&forged, "weft1.forged").unwrap();
    let (code, out) = run(free_port(), &forged, &["true"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the sidecar did not start"), "{out}");
    assert_eq!(registered(&cp), 0, "nothing registered");
}

/// What the app forks goes with it: a daemonising app that exits 0 leaves nothing
/// listening behind (its process group is stopped).
#[test]
fn an_apps_children_go_with_it() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let port = free_port();
    let mut args = run_args(&cp, &token, port);
    let script = format!("python3 -m http.server {port} --bind 127.0.0.1 & sleep 2; exit 0");
    args.extend(["--", "sh", "-c", &script].map(String::from));
    let out = Command::new(weft()).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("exited with success"), "{}", text(&out));
    wait_until("the daemon gone", || std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
