//! `weft run --replicas` with real processes: a slow Python app scaled from one
//! instance to three under load and back to one as the load falls, not one client
//! request failing; the control plane's recommendation in `weft get services`; fixed
//! replicas on `$PORT`; bad values refused before anything starts.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const HOST: &str = "hello.default.svc.cluster.local";

/// A threaded HTTP server on the port it is given that answers every GET after `delay_s`.
const SLOW_APP: &str = r#"
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(sys.argv[2]))
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// `weft run` of `tail` (flags, `--`, the command), reports every second for the
/// control plane's recommendation (returns once a sidecar listens).
fn run_scaled(cp: &Plane, token: &Path, tail: &[&str]) -> Proc {
    let url = cp.url();
    let (ca, token) = (cp.ca_file().display().to_string(), token.display().to_string());
    let mut args = vec!["WEFT_REPORT_INTERVAL_MS=1000", weft(), "run", "--service", "hello", "--ttl", "3s", "--control-plane", &url];
    args.extend(["--ca-file", &ca, "--token-file", &token]);
    args.extend_from_slice(tail);
    // (`env` execs weft: the pid is weft run's.)
    spawn_program("env", &args)
}

/// A port with `n` free ones from it.
fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let base = free_addr().port();
        if base < 65_000 && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

fn registered(cp: &Plane) -> usize {
    let (code, body) = plane_raw(cp, "GET", "/v1/registry", b"");
    assert_eq!(code, 200, "{body}");
    body.matches(HOST).count()
}

/// Polls `f` every 100 ms until it holds; fails after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn app_metric(metrics: std::net::SocketAddr, name: &str) -> Option<f64> {
    let text = std::panic::catch_unwind(|| Client::connect(metrics).get("run", "/metrics", &[]).text()).ok()?;
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

/// Client threads calling hello through the mesh until stopped; each counts its answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(client: std::net::SocketAddr, threads: usize) -> Load {
        let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(client);
                    // (Bounded: at most 5 requests a second for two minutes.)
                    for _ in 0..600 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let status = c.get(HOST, "/", &[]).status;
                        let n = if status == 200 { &ok } else { &failed };
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, threads }
    }

    /// Stops the threads; (served, failed).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The recommendation `weft get services -o json` shows for hello.
fn recommended(cp: &Plane) -> Option<u64> {
    let out = cp.weft(&["get", "services", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let items = v.as_array().cloned().or_else(|| v["items"].as_array().cloned()).unwrap_or_else(|| vec![v.clone()]);
    items.iter().find(|s| s["name"] == HOST)?["recommended"].as_u64()
}

#[test]
fn scales_up_under_load_and_back_down_without_a_failed_request() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let client = follower(&cp, "client");
    let script = temp_dir().join("slow_app.py");
    std::fs::write(&script, SLOW_APP).unwrap();
    let (port, metrics) = (free_ports(3), free_addr());
    let (port_s, metrics_s, script_s) = (port.to_string(), metrics.to_string(), script.display().to_string());
    let mut run = run_scaled(
        &cp,
        &token,
        &["--port", &port_s, "--metrics", &metrics_s, "--replicas", "1..3", "--target-concurrency", "2", "--scale-down-window", "4s"][..]
            .iter()
            .chain(&["--", "python3", &script_s, "{port}", "0.2"])
            .copied()
            .collect::<Vec<_>>(),
    );
    wait_for("one instance serving", Duration::from_secs(20), || get(client.addr(), HOST, "/", &[]).status == 200);
    assert_eq!(app_metric(metrics, "weft_app_replicas"), Some(1.0));
    // Eight callers at once against a target of two per instance: up, at most doubling, to MAX.
    let heavy = Load::start(client.addr(), 7);
    let light = Load::start(client.addr(), 1);
    let loaded = Instant::now();
    wait_for("three instances", Duration::from_secs(40), || app_metric(metrics, "weft_app_replicas") == Some(3.0));
    wait_for("three registered", Duration::from_secs(20), || registered(&cp) == 3);
    let up = loaded.elapsed();
    let log = run.log_text();
    assert!(log.contains("1 → 2 instances") && log.contains("2 → 3 instances"), "{log}");
    // The control plane sees the same load in the sidecars' reports: 8 at a time, 2 each.
    wait_for("the control plane's recommendation", Duration::from_secs(30), || recommended(&cp).is_some_and(|n| n >= 3));
    let table = String::from_utf8_lossy(&cp.weft(&["get", "services"]).stdout).into_owned();
    assert!(table.lines().next().unwrap().contains("RECOMMENDED"), "{table}");
    // One caller left, under the target: down to one once the window has passed, while it calls.
    let (heavy_ok, heavy_failed) = heavy.finish();
    let unloaded = Instant::now();
    wait_for("back to one instance", Duration::from_secs(40), || app_metric(metrics, "weft_app_replicas") == Some(1.0));
    wait_for("one registered", Duration::from_secs(20), || registered(&cp) == 1);
    let down = unloaded.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (light_ok, light_failed) = light.finish();
    eprintln!("1 → 3 instances in {up:.1?}, 3 → 1 in {down:.1?} (a 4 s window); {heavy_ok} + {light_ok} requests served, {heavy_failed} + {light_failed} failed");
    assert_eq!((heavy_failed, light_failed), (0, 0), "failed requests: {}", run.log_text());
    assert!(heavy_ok > 50 && light_ok > 10, "{heavy_ok} and {light_ok} served");
    assert!(run.log_text().contains("instance 2 stopping"), "the newest went first: {}", run.log_text());
    run.signal("TERM");
    let exit = wait_exit(&mut run.child);
    assert!(exit.success(), "{exit}: {}", run.log_text());
    assert_eq!(registered(&cp), 0);
}

/// `--target-p95`: slow answers add an instance; none (no load) take it away.
#[test]
fn scales_on_the_p95() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let client = follower(&cp, "client");
    let script = temp_dir().join("slow_app.py");
    std::fs::write(&script, SLOW_APP).unwrap();
    let (port, metrics) = (free_ports(2), free_addr());
    let (port_s, metrics_s, script_s) = (port.to_string(), metrics.to_string(), script.display().to_string());
    let flags = ["--port", &port_s, "--metrics", &metrics_s, "--replicas", "1..2", "--target-p95", "100ms", "--scale-down-window", "2s"];
    let tail: Vec<&str> = flags.iter().copied().chain(["--", "python3", &script_s, "{port}", "0.3"]).collect();
    let mut run = run_scaled(&cp, &token, &tail);
    wait_for("one instance serving", Duration::from_secs(20), || get(client.addr(), HOST, "/", &[]).status == 200);
    let load = Load::start(client.addr(), 2);
    wait_for("two instances", Duration::from_secs(30), || app_metric(metrics, "weft_app_replicas") == Some(2.0));
    wait_for("two registered", Duration::from_secs(20), || registered(&cp) == 2);
    let (ok, failed) = load.finish();
    wait_for("back to one", Duration::from_secs(30), || app_metric(metrics, "weft_app_replicas") == Some(1.0));
    assert_eq!(failed, 0, "{ok} served, {failed} failed");
    // (~300 ms requests: the p95 falls in the (250, 500] ms bucket.)
    let log = run.log_text();
    let observed = log.split("1 → 2 instances (observed ").nth(1).and_then(|r| r.split(',').next()).and_then(|v| v.parse::<f64>().ok());
    assert!(observed.is_some_and(|p95| (250.0..=500.0).contains(&p95)), "{observed:?}: {log}");
    run.signal("TERM");
    assert!(wait_exit(&mut run.child).success(), "{}", run.log_text());
}

/// `--replicas 2`: two instances on $PORT, both registered; SIGTERM stops both.
#[test]
fn fixed_replicas_run_on_consecutive_ports() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let (port, metrics) = (free_ports(2), free_addr());
    let (port_s, metrics_s) = (port.to_string(), metrics.to_string());
    let app = "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let mut run = run_scaled(&cp, &token, &["--port", &port_s, "--metrics", &metrics_s, "--replicas", "2", "--", "sh", "-c", app]);
    wait_for("two registered", Duration::from_secs(20), || registered(&cp) == 2);
    for p in [port, port + 1] {
        wait_for("both apps listening", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", p)).is_ok());
    }
    let text = Client::connect(metrics).get("run", "/metrics", &[]).text();
    for line in
        ["weft_app_replicas 2\n", "weft_app_desired_replicas 2\n", &format!("weft_app_up{{instance=\"1\",port=\"{}\"}} 1\n", port + 1)]
    {
        assert!(text.contains(line), "{line}: {text}");
    }
    run.signal("TERM");
    assert!(wait_exit(&mut run.child).success(), "{}", run.log_text());
    assert_eq!(registered(&cp), 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_err(), "the second app stopped");
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("weft run did not exit within 60 s");
}

/// Bad scaling flags: a clear message and a failure exit, before anything starts.
#[test]
fn bad_scaling_flags_are_refused() {
    let cp = plane();
    let token = workload_token(&cp, "default", "hello");
    let port = free_ports(3);
    let (p, next) = (port.to_string(), format!("127.0.0.1:{}", port + 1));
    let cases: [(&[&str], &str); 15] = [
        (&["--replicas", "3..1"], "MIN is above MAX"),
        (&["--replicas", "0..2"], "1 to 64"),
        (&["--replicas", "1..100000"], "1 to 64"),
        (&["--replicas", "1..99999999999999999999999"], "not a count"),
        (&["--replicas", "1..3", "--target-concurrency", "0"], "from 0.01 to"),
        (&["--replicas", "1..3", "--target-concurrency", "NaN"], "from 0.01 to"),
        (&["--replicas", "1..3", "--target-concurrency", "1e-300"], "from 0.01 to"),
        (&["--replicas", "1..3", "--target-concurrency", "1e300"], "1e300: from 0.01 to 1000000"),
        (&["--replicas", "1..3", "--target-concurrency", "2", "--target-p95", "100ms"], "cannot be used with"),
        (&["--target-concurrency", "2"], "--replicas"),
        (&["--replicas", "1..3"], "scaling needs --target-concurrency or --target-p95"),
        (&["--replicas", "1..3", "--target-p95", "1h"], "at most 10s"),
        (&["--replicas", "1..3", "--target-p95", "2s", "--scale-down-window", "48h"], "at most 1h"),
        (&["--replicas", "1..3", "--target-concurrency", "1", "--inbound", &next], "overlap"),
        (&["--replicas", "1..3", "--target-concurrency", "1", "--port", "65534"], "past 65535"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["run", "--service", "hello", "--control-plane", "http://127.0.0.1:1"];
        args.extend(["--token-file", token.to_str().unwrap()]);
        if !flags.contains(&"--port") {
            args.extend(["--port", &p]);
        }
        args.extend_from_slice(flags);
        args.extend(["--", "python3", "-m", "http.server", "{port}"]);
        let start = Instant::now();
        let out = Command::new(weft()).args(&args).output().unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{flags:?} was taken: {said}");
        assert!(said.contains(message), "{flags:?}: {said}");
        assert!(said.lines().count() <= 8 && said.len() < 2000, "{flags:?}: a short message: {said}");
        assert!(start.elapsed() < Duration::from_secs(5), "{flags:?}: refused before starting anything");
    }
    assert_eq!(registered(&cp), 0);
}

/// Reports move only their own service's recommendation: a workload token reporting
/// as another service counts for its own; absurd counts stay bounded; counts that
/// contradict themselves are refused.
#[test]
fn hostile_reports_move_only_their_own_services_recommendation() {
    let cp = plane();
    let out = cp.weft(&["register", "--service", "hello", "--address", "127.0.0.1:9", "--label", "weft.io/target-concurrency=2"]);
    assert!(out.status.success(), "{}", text(&out));
    let token = |sa: &str| std::fs::read_to_string(workload_token(&cp, "default", sa)).unwrap().trim().to_owned();
    let (other, hello) = (token("other"), token("hello"));
    let report = |node: &str, requests: u64, busy_us: u64| {
        let buckets = vec![requests; 13];
        let inbound = serde_json::json!({"requests": requests, "errors": 0, "buckets": buckets, "durationSumUs": busy_us});
        let r = serde_json::json!({"node": node, "startedMs": 1, "service": "hello", "namespace": "default", "inbound": inbound});
        serde_json::to_vec(&r).unwrap()
    };
    let send = |token: &str, body: Vec<u8>| plane_raw_as(&cp, Some(token), "POST", "/v1/report", &body);
    let hello_row = || {
        let (code, body) = plane_raw(&cp, "GET", "/v1/recommendations", b"");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["items"].as_array().unwrap().iter().find(|r| r["service"] == HOST).cloned().unwrap()
    };
    // "other" claims to be hello, busy a million years a second: counted for other.
    assert_eq!(send(&other, report("o-1", 0, 0)).0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(send(&other, report("o-1", 10, u64::MAX / 2)).0, 200);
    let row = hello_row();
    assert!(row["concurrency"].is_null() && row["recommended"].is_null(), "{row}");
    assert_eq!(row["targetConcurrency"], 2.0);
    // Counts that contradict themselves are refused.
    let mut bad: serde_json::Value = serde_json::from_slice(&report("h-1", 5, 0)).unwrap();
    bad["inbound"]["errors"] = 6.into();
    let (code, body) = send(&hello, serde_json::to_vec(&bad).unwrap());
    assert_eq!(code, 400, "{body}");
    // hello's own sidecar, absurdly busy: the recommendation stays bounded.
    assert_eq!(send(&hello, report("h-1", 0, 0)).0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(send(&hello, report("h-1", 10, u64::MAX / 2)).0, 200);
    let row = hello_row();
    assert_eq!(row["recommended"], 1000, "{row}");
    let table = String::from_utf8_lossy(&cp.weft(&["get", "services", "-o", "wide"]).stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with(HOST) && l.contains(" 1000 ")), "{table}");
}
