//! `weft demo` (the README's first command) runs end to end.

mod common;

#[test]
fn demo_spreads_traffic_as_configured() {
    // Ports of its own so it can run beside other tests.
    // (A port found free may be taken by another test before the demo binds it: tried
    // again with others then.)
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let run = || {
        std::process::Command::new(common::weft())
            .args(["demo", "--once", "-n", "1000", "--listen", &free(), "--admin", &free(), "--control-plane", &free()])
            .output()
            .unwrap()
    };
    let mut o = run();
    for _ in 0..2 {
        if o.status.success() || !String::from_utf8_lossy(&o.stderr).contains("Address already in use") {
            break;
        }
        o = run();
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let share = |name: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        line.split_whitespace().last().unwrap().trim_end_matches('%').parse().unwrap()
    };
    // 10% of requests say end-user: jason (v3); the rest split 80/20.
    assert!((share("reviews-v1") - 72.0).abs() < 6.0, "{out}");
    assert!((share("reviews-v2") - 18.0).abs() < 6.0, "{out}");
    assert!((share("reviews-v3") - 10.0).abs() < 1.0, "{out}");
    assert!(out.contains("latency through the proxy: p50"), "{out}");
    // The backends were registered in the mesh with the control plane the proxy follows.
    assert!(out.contains("registered in the mesh with the control plane on https://"), "{out}");
    // Every successful answer came over mTLS: the callee's sidecar saw the client's identity.
    let ok: usize =
        out.lines().find(|l| l.starts_with("200 ")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap();
    assert!(ok >= 900, "{out}");
    let want = format!("mTLS: {ok} of the {ok} successful answers came from an app whose sidecar saw the caller as spiffe://cluster.local/ns/default/sa/demo-client");
    assert!(out.contains(&want), "{out}");
}

fn free() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn a_taken_port_is_replaced_by_a_free_one() {
    // Someone else listens where the demo's proxy would: the demo says so, takes another
    // port, and finishes (it used to send its traffic to the stranger and hang).
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = stranger.local_addr().unwrap().to_string();
    // The other ports are found free, then released: another test may take one before the
    // demo binds it (CI runs the suite in parallel), so such a race is tried again.
    let (mut status, mut out, mut err) = run_demo_beside(&taken);
    for _ in 0..2 {
        if status.success() || !err.contains("Address already in use") {
            break;
        }
        (status, out, err) = run_demo_beside(&taken);
    }
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("{taken} is taken; the proxy uses")), "{out}");
    assert!(out.contains("reviews-v1"), "{out}");
}

/// `weft demo --once` with its proxy told to listen on `taken`: its exit status, stdout
/// and stderr (the children's logs go to a file: a pipe nobody reads could fill and stall it).
fn run_demo_beside(taken: &str) -> (std::process::ExitStatus, String, String) {
    let err_file = std::env::temp_dir().join(format!("weft-demo-taken-{}.err", std::process::id()));
    let mut child = std::process::Command::new(common::weft())
        .args(["demo", "--once", "-n", "200", "--listen", taken, "--admin", &free(), "--control-plane", &free()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the demo hung with its port taken");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let err = String::from_utf8_lossy(&std::fs::read(&err_file).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&err_file);
    // The end of the logs is where the demo says why it failed.
    let tail = (err.len().saturating_sub(4000)..=err.len()).find(|&i| err.is_char_boundary(i)).unwrap_or(0);
    (status, out, err[tail..].to_string())
}

#[cfg(target_os = "linux")]
#[test]
fn killing_the_demo_stops_its_control_plane_and_proxy() {
    use std::io::BufRead;
    let (listen, cp) = (free(), free());
    let mut child = std::process::Command::new(common::weft())
        .args(["demo", "-n", "100", "--listen", &listen, "--admin", &free(), "--control-plane", &cp])
        .env("WEFT_REPORT_INTERVAL_MS", "500")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut console = String::new();
    loop {
        let line = lines.next().expect("the demo ended early").unwrap();
        if line.starts_with("console: ") {
            console = line.clone();
        }
        if line.contains("The mesh keeps running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no summary within 60 s");
    }
    let up = |a: &str| std::net::TcpStream::connect(a).is_ok();
    assert!(up(&cp) && up(&listen), "the control plane and the proxy run while the demo does");
    console_shows_the_demo(&console, &cp);
    child.kill().unwrap(); // SIGKILL: the demo cannot clean up after itself
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while up(&cp) || up(&listen) {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo's children outlived it (control plane {cp} or proxy {listen} still answers)"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The console the demo names (`console: URL (log in with the token in FILE; the
/// certificate is the mesh CA's, CA)`) shows the demo proxy's traffic to reviews.
#[cfg(target_os = "linux")]
fn console_shows_the_demo(line: &str, cp: &str) {
    let url = format!("https://{cp}/ui");
    assert!(line.starts_with(&format!("console: {url} ")), "{line}");
    let token_file = line.split("the token in ").nth(1).and_then(|r| r.split(';').next()).expect("the token file");
    let ca = line.split("mesh CA's, ").nth(1).and_then(|r| r.strip_suffix(')')).expect("the CA file");
    let token = std::fs::read_to_string(token_file).unwrap();
    let auth = format!("authorization: Bearer {}", token.trim());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, page, _) = common::curl(&["--cacert", ca, "-H", &auth, &url]);
        if page.contains("demo-client.default.svc.cluster.local</td><td class=\"destination\">reviews.default.svc.cluster.local") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the console shows no demo traffic after 20 s:\n{page}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
