//! `weft bench` and `weft ab` against test servers whose behaviour is known
//! exactly: a fixed delay, a single 200 ms stall, a server that never answers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a test server answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Every response after exactly this delay.
    Delay(Duration),
    /// Immediately, except that the whole server freezes for `stall` when request `at` arrives.
    StallOnce { at: u64, stall: Duration },
    /// Reads requests and never answers.
    Silent,
}

/// A blocking HTTP/1.1 server, thread per connection, that answers "ok".
struct Server {
    addr: SocketAddr,
    /// The last request received, head and body.
    last: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let last = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let frozen_until = Arc::new(Mutex::new(None::<Instant>));
        let last2 = last.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (last, count, frozen_until) = (last2.clone(), count.clone(), frozen_until.clone());
                std::thread::spawn(move || serve(conn, behaviour, &last, &count, &frozen_until));
            }
        });
        Server { addr, last }
    }

    fn url(&self) -> String {
        format!("http://{}/path?q=1", self.addr)
    }
}

fn serve(mut conn: TcpStream, behaviour: Behaviour, last: &Mutex<Vec<u8>>, count: &AtomicU64, frozen_until: &Mutex<Option<Instant>>) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request: the head, then content-length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body_len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        while buf.len() < head_end + body_len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        *last.lock().unwrap() = buf[..head_end + body_len].to_vec();
        buf.drain(..head_end + body_len);
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        match behaviour {
            Behaviour::Delay(d) => precise_sleep(d),
            Behaviour::StallOnce { at, stall } => {
                if n == at {
                    *frozen_until.lock().unwrap() = Some(Instant::now() + stall);
                }
                let until = *frozen_until.lock().unwrap();
                if let Some(wait) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
                    std::thread::sleep(wait);
                }
            }
            Behaviour::Silent => std::thread::sleep(Duration::from_secs(3600)),
        }
        if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

/// Sleeps `d` to within a few microseconds: the OS sleep, then a short spin.
fn precise_sleep(d: Duration) {
    let end = Instant::now() + d;
    if let Some(coarse) = d.checked_sub(Duration::from_micros(300)) {
        std::thread::sleep(coarse);
    }
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Tests here run one at a time: any other test's processes on a 2-core machine skew the latencies measured.
static MEASURING: Mutex<()> = Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::weft()).args(args).output().expect("run weft");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!stderr.contains("panicked"), "weft panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "-o", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run(&all);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= want * tol
}

/// 20 ms rather than 2: on this 2-core VM every idle wake-up (client and server) costs
/// 50–100 µs, more when the machine is busy, and wrk and oha see it too (2.12 and
/// 2.15 ms for a 2 ms server); at 20 ms that overhead stays well inside ±5 %.
#[test]
fn fixed_delay_reads_as_its_p50_in_both_loops() {
    let _one_at_a_time = measuring();
    let delay = 20_000.0;
    let server = Server::start(Behaviour::Delay(Duration::from_micros(delay as u64)));
    let closed = bench_json(&[&server.url(), "-c", "4", "-z", "2s"]);
    assert_eq!(closed["mode"], "closed");
    assert_eq!(closed["errors"], 0);
    assert_eq!(closed["status_codes"]["200"], closed["requests"]);
    // 4 connections, 20 ms each: about 200 requests per second.
    assert!(within(closed["rps"].as_f64().unwrap(), 4e6 / delay, 0.1), "{closed}");
    let p50 = closed["latency_us"]["p50"].as_f64().unwrap();
    assert!(within(p50, delay, 0.05), "closed-loop p50 {p50} µs");

    let open = bench_json(&[&server.url(), "-q", "50", "-c", "8", "-z", "2s"]);
    assert_eq!(open["mode"], "open");
    let p50 = open["latency_us"]["p50"].as_f64().unwrap();
    assert!(within(p50, delay, 0.05), "open-loop p50 {p50} µs");
    assert_eq!(open["requests"], 100, "{open}");
    assert!(within(open["rps"].as_f64().unwrap(), 50.0, 0.02), "{open}");
}

#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let _one_at_a_time = measuring();
    let stall = Behaviour::StallOnce { at: 300, stall: Duration::from_millis(200) };
    let server = Server::start(stall);
    let open = bench_json(&[&server.url(), "-q", "1000", "-c", "20", "-z", "2s"]);
    let p99 = open["latency_us"]["p99"].as_f64().unwrap();
    assert!(p99 >= 100_000.0, "open-loop p99 {p99} µs should show the 200 ms stall");

    let server = Server::start(stall);
    let closed = bench_json(&[&server.url(), "-c", "10", "-z", "2s"]);
    let (p99, max) = (closed["latency_us"]["p99"].as_f64().unwrap(), closed["latency_us"]["max"].as_f64().unwrap());
    assert!(max >= 190_000.0, "the stall happened: max {max} µs");
    assert!(p99 < 100_000.0, "closed-loop p99 {p99} µs hides it ({} requests)", closed["requests"]);
}

#[test]
fn request_options_reach_the_server() {
    let _one_at_a_time = measuring();
    let server = Server::start(Behaviour::Delay(Duration::ZERO));
    let out = bench_json(&[&server.url(), "-n", "20", "-c", "2", "-H", "x-test: yes", "-d", "hello body", "--host", "svc.local"]);
    assert_eq!(out["requests"], 20);
    let last = String::from_utf8(server.last.lock().unwrap().clone()).unwrap();
    assert!(last.starts_with("POST /path?q=1 HTTP/1.1\r\n"), "{last}");
    assert!(last.contains("host: svc.local\r\n") && last.contains("x-test: yes\r\n"), "{last}");
    assert!(last.ends_with("\r\n\r\nhello body"), "{last}");
}

#[test]
fn a_silent_server_times_out_requests_by_kind() {
    let _one_at_a_time = measuring();
    let server = Server::start(Behaviour::Silent);
    let out = bench_json(&[&server.url(), "-n", "3", "-c", "1", "--timeout", "200ms"]);
    assert_eq!(out["errors"], 3, "{out}");
    assert_eq!(out["errors_by_kind"]["timeout"], 3, "{out}");
    assert_eq!(out["success_rate"], 0.0);

    // Open loop into the silence: one connection, each try times out; what the schedule
    // still holds when the run ends is reported as unsent.
    let out = bench_json(&[&server.url(), "-q", "100", "-c", "1", "-z", "1s", "--timeout", "200ms"]);
    let (timeouts, unsent) = (out["errors_by_kind"]["timeout"].as_u64().unwrap(), out["unsent"].as_u64().unwrap());
    assert!((4..=7).contains(&timeouts), "{out}");
    assert_eq!(timeouts + unsent, 100, "{out}");
}

#[test]
fn h2c_csv_and_plot() {
    let _one_at_a_time = measuring();
    let backend = common::backend("h2", &[]);
    let url = format!("http://{}/", backend.addr);
    let out = bench_json(&[&url, "--h2", "-c", "2", "-m", "5", "-n", "500"]);
    assert_eq!(
        (out["protocol"].as_str(), out["requests"].as_u64(), out["status_codes"]["200"].as_u64()),
        (Some("h2c"), Some(500), Some(500))
    );
    assert_eq!(out["connections_opened"], 2);

    let svg = common::temp_dir().join("plot.svg");
    let (code, csv, err) = run(&["bench", &url, "-z", "2s", "-c", "2", "-o", "csv", "--plot", svg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "second,responses,ok,errors,rps,p50_us,p99_us,max_us");
    assert!(lines.len() >= 3 && lines.last().unwrap().starts_with("total,"), "{csv}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.matches("<polyline").count() == 4, "{picture}");
}

#[test]
fn ab_tells_identical_from_slower() {
    let _one_at_a_time = measuring();
    let a = Server::start(Behaviour::Delay(Duration::from_millis(2)));
    let same = Server::start(Behaviour::Delay(Duration::from_millis(2)));
    let slower = Server::start(Behaviour::Delay(Duration::from_micros(2400)));
    let ab = |b: &Server| {
        let (code, out, err) = run(&["ab", "--a", &a.url(), "--b", &b.url(), "--rounds", "5", "-z", "1s", "-c", "4", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // The verdict's false-alarm rate is 5 % by design, and 1 s rounds on a busy 2-core VM
    // drift more than that (a clean-clone CI run once saw two alarms in a row): up to
    // three tries keep this test honest and steady.
    let quiet = (0..3).any(|_| ab(&same)["verdict"][0] == "no significant difference");
    assert!(quiet, "identical targets judged different three times");

    // 20 % more latency: B is slower, with an interval that leaves zero out.
    let out = ab(&slower);
    let line = out["verdict"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .find(|l| l.starts_with("B is slower at p"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let metric = format!("{}_us", &line["B is slower at ".len()..].split(' ').next().unwrap());
    let cmp = out["comparisons"].as_array().unwrap().iter().find(|c| c["metric"] == metric.as_str()).unwrap();
    assert!(cmp["low"].as_f64().unwrap() > 0.0, "{line}: {cmp}");

    // The CI gate: a B twice as slow fails it.
    let twice = Server::start(Behaviour::Delay(Duration::from_millis(4)));
    let (code, text, _) =
        run(&["ab", "--a", &a.url(), "--b", &twice.url(), "--rounds", "5", "-z", "500ms", "-c", "4", "--fail-if-worse", "10"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("FAIL: B is worse than A by more than 10 %"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let _one_at_a_time = measuring();
    for (args, code, want) in [
        (vec!["bench", "http://127.0.0.1:1/"], 1, "cannot connect to 127.0.0.1:1"),
        (vec!["bench", "http//nohost"], 1, "invalid URL"),
        (vec!["bench", "https://127.0.0.1/"], 1, "https is not supported"),
        (vec!["bench", "http://127.0.0.1:1/", "-q", "0"], 2, "positive number of requests per second"),
        (vec!["bench", "http://127.0.0.1:1/", "-z", "abc"], 2, "invalid duration \"abc\""),
        (vec!["bench", "http://127.0.0.1:1/", "-c", "0"], 2, "invalid value '0'"),
        (vec!["bench", "http://127.0.0.1:1/", "-H", "nocolon"], 2, "must look like 'Name: value'"),
        (vec!["ab", "--a", "http://127.0.0.1:1/", "--b", "http://127.0.0.1:1/", "--rounds", "1"], 2, "--rounds"),
    ] {
        let (got, _, stderr) = run(&args);
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let _one_at_a_time = measuring();
    let server = Server::start(Behaviour::Delay(Duration::ZERO));
    let cmd = format!("{} bench {} -c 2 -z 2s", common::weft(), server.url());
    // `script` gives the command a pseudo-terminal.
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("script (util-linux) runs");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("] ") && tty.contains(" rps  p99 "), "no progress line on a terminal: {tty}");
    assert!(tty.contains("closed loop"), "{tty}");

    let (code, stdout, stderr) = run(&["bench", &server.url(), "-c", "2", "-z", "1s"]);
    assert_eq!(code, 0);
    assert!(!stderr.contains(" rps  p99 ") && !stdout.contains(" rps  p99 "), "progress drawn into a pipe: {stderr}");
}
