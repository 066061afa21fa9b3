//! The web console in a real browser: a control plane (HTTPS, tokens) with two proxies
//! following it and traffic from each to a registered backend; headless Chromium,
//! driven by Selenium (`console_browser.py`), logs in with a token, sees the edges the
//! proxies' reports make (a rate above zero), both proxies and their revision, and
//! rolls the config back with the history page's button — which the API then confirms.
//! Screenshots land in `$CARGO_TARGET_TMPDIR/console-screenshots/`.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn rule(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews\n  subsets:\n  - name: {subset}\n    labels: {{version: {subset}}}\n"
    )
}

/// A proxy following `cp` beside `service`, reporting every 500 ms.
fn reporting_proxy(cp: &Plane, node: &str, service: &str) -> Proc {
    follower_with(cp, node, &["--service", service]).p
}

/// Requests to `reviews` through `proxy` until `stop` (~40 a second).
fn traffic(proxy: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let mut c = Client::connect(proxy);
            for _ in 0..10 {
                c.get("reviews", "/", &[]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The control plane's latest revision, from `/v1/history`.
fn latest(cp: &Plane) -> u64 {
    let (code, history) = plane_raw(cp, "GET", "/v1/history", b"");
    assert_eq!(code, 200, "{history}");
    serde_json::from_str::<serde_json::Value>(&history).unwrap()["revision"].as_u64().unwrap()
}

fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python3");
    if std::path::Path::new(venv).exists() {
        venv.into()
    } else {
        "python3".into()
    }
}

#[test]
fn the_console_shows_the_mesh_and_rolls_back_in_a_browser() {
    // (Read by the proxies this test starts: the only test in this binary.)
    std::env::set_var("WEFT_REPORT_INTERVAL_MS", "500");
    let cp = plane();
    let backend = backend("reviews", &["--error-rate", "0.1", "--latency", "2ms"]);
    let out = cp.weft(&["register", "--service", "reviews", "--address", &backend.addr.to_string(), "--label", "version=v1"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = cp.apply("v1.yaml", &rule("v1"));
    assert!(first.status.success(), "{}", text(&first));
    let rollback_to = latest(&cp);
    assert!(cp.apply("v2.yaml", &rule("v2")).status.success());
    let proxies = [reporting_proxy(&cp, "productpage-1", "productpage"), reporting_proxy(&cp, "ratings-1", "ratings")];
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = proxies.iter().map(|p| traffic(p.addr, stop.clone())).collect();

    // The console, as a client with the admin token sees it, shows both edges.
    let token = cp.admin_token();
    let start = Instant::now();
    loop {
        let (code, page) = plane_raw_as(&cp, Some(&token), "GET", "/ui", b"");
        assert_eq!(code, 200, "{page}");
        if page.contains("productpage.default.svc.cluster.local</td>") && page.contains("ratings.default.svc.cluster.local</td>") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no edges on /ui after 20 s:\n{page}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Without a token, the console asks for one (and the API's rules stand).
    let (code, page) = plane_raw_as(&cp, None, "GET", "/ui/proxies", b"");
    assert_eq!(code, 401, "{page}");
    assert!(page.contains("name=\"token\""), "{page}");

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console_browser.py");
    let latest_before = latest(&cp);
    let out = Command::new(python())
        .arg(script)
        .env("CONSOLE_URL", format!("{}/ui", cp.url()))
        .env("CONSOLE_TOKEN", &token)
        .env("CONSOLE_NODES", "productpage-1,ratings-1")
        .env("CONSOLE_SOURCES", "productpage.default.svc.cluster.local,ratings.default.svc.cluster.local")
        .env("CONSOLE_DESTINATION", "reviews.default.svc.cluster.local")
        .env("CONSOLE_ENDPOINT", backend.addr.to_string())
        .env("CONSOLE_ROLLBACK_TO", rollback_to.to_string())
        .env("CONSOLE_SCREENSHOTS", &shots)
        .output()
        .expect("python3 runs (./scripts/test installs selenium, chromium and chromedriver)");
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|t| t.join().unwrap());
    assert!(out.status.success(), "the browser test failed:\n{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("rolled back to {rollback_to}: revision {}", latest_before + 1)), "{said}");

    // The API agrees: a new revision rolled back to the first rule, by the admin token.
    let (code, history) = plane_raw(&cp, "GET", "/v1/history", b"");
    assert_eq!(code, 200);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let last = history["items"].as_array().and_then(|i| i.last()).cloned().unwrap_or_default();
    assert_eq!(last["revision"], latest_before + 1, "{last}");
    assert_eq!(last["action"], format!("rollback to {rollback_to}"), "{last}");
    assert!(last["client"].as_str().unwrap_or("").starts_with("admin token"), "{last}");
    let (_, dr) = plane_raw(&cp, "GET", "/v1/resources?kind=DestinationRule&name=reviews", b"");
    assert!(dr.contains("\"v1\"") && !dr.contains("\"v2\""), "{dr}");
    for name in ["1-login", "2-mesh", "3-proxies", "4-services", "5-history", "6-rolled-back"] {
        assert!(shots.join(format!("{name}.png")).exists(), "screenshot {name}.png");
    }
}

/// A report as a proxy sends it, with `destinations` generated.
fn report_json(node: &str, started: u64, destinations: &str) -> String {
    format!(r#"{{"node":"{node}","startedMs":{started},"service":"productpage","namespace":"default","destinations":[{destinations}]}}"#)
}

fn destination(name: &str, requests: i64) -> String {
    format!(r#"{{"service":"{name}","requests":{requests},"errors":0,"buckets":[0,0,0,0,0,0,0,0,0,0,0,0,0]}}"#)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

#[test]
fn hostile_reports_are_refused_clearly_and_cost_bounded_memory() {
    let cp = plane();
    let post = |body: &str| plane_raw(&cp, "POST", "/v1/report", body.as_bytes());
    let (code, answer) = post(&report_json("p-1", 1, &destination("reviews", 10)));
    assert_eq!(code, 200, "{answer}");
    let refused = [
        (report_json("p-1", 1, &destination("reviews", 5)), "went down"),
        (report_json("p-1", 1, &destination("reviews", -1)), "invalid value"),
        (report_json("p-1", 1, &destination("a\\nb", 1)), "control characters"),
        (report_json("bad\\nnode", 1, ""), "control characters"),
        ("{\"node\":".to_owned(), "EOF"),
        (
            report_json("p-2", 1, &(0..10_000).map(|i| destination(&format!("s{i}"), 1)).collect::<Vec<_>>().join(",")),
            "over the 1024 allowed",
        ),
        (report_json("p-2", 1, &destination(&"x".repeat(2 << 20), 1)), "allowed"),
    ];
    let before = rss_kb(cp.p.pid());
    for _ in 0..10 {
        for (body, why) in &refused {
            let (code, answer) = post(body);
            assert_eq!(code, 400, "{why}: {answer}");
            assert!(answer.contains(why), "{why}: {answer}");
        }
    }
    let grew_mb = rss_kb(cp.p.pid()).saturating_sub(before) / 1024;
    assert!(grew_mb < 64, "the control plane grew {grew_mb} MB over 70 hostile reports");
    // A workload may report only as a node it follows as; the API's tokens rule.
    let (code, _) = plane_raw_as(&cp, None, "POST", "/v1/report", report_json("p-3", 1, "").as_bytes());
    assert_eq!(code, 401);
    let workload = std::fs::read_to_string(workload_token(&cp, "default", "ratings")).unwrap();
    let (code, answer) = plane_raw_as(&cp, Some(&workload), "POST", "/v1/report", report_json("p-1", 1, "").as_bytes());
    assert_eq!(code, 403, "p-1 is another identity's node: {answer}");
    let (code, answer) = plane_raw_as(&cp, Some(&workload), "POST", "/v1/report", report_json("ratings-1", 1, "").as_bytes());
    assert_eq!(code, 200, "{answer}");
    // It reports as itself whatever its body says (`productpage` here): another service's
    // edges cannot be made up.
    for n in [1, 100] {
        let body = report_json("ratings-1", 1, &destination("payments.default.svc.cluster.local", n));
        assert_eq!(plane_raw_as(&cp, Some(&workload), "POST", "/v1/report", body.as_bytes()).0, 200);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, page) = plane_raw(&cp, "GET", "/ui", b"");
    assert!(page.contains("<td class=\"source\">ratings.default.svc.cluster.local</td>"), "{page}");
    assert!(!page.contains("<td class=\"source\">productpage"), "{page}");
    // A cross-site form cannot roll back: no Origin naming the console, no rollback.
    let (code, page) = plane_raw(&cp, "POST", "/ui/rollback", b"to=1");
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("Origin"), "{page}");
}

/// One request with the console's cookie holding `token` (and an `Origin` naming the
/// control plane): the status line and the rest.
fn with_cookie(cp: &Plane, token: &str, method: &str, path: &str, body: &str) -> String {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: cp\r\norigin: https://cp\r\ncookie: weft_console={token}\r\n\
         content-type: application/x-www-form-urlencoded\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    plane_send(cp, head.as_bytes())
}

/// The cookie opens the console's pages, never the API; a read token may read but not
/// roll back; logging in sets the cookie HttpOnly and SameSite=Strict.
#[test]
fn the_console_cookie_opens_its_pages_only_and_roles_hold() {
    let cp = &plane();
    let admin = cp.admin_token();
    assert!(with_cookie(cp, &admin, "GET", "/ui/proxies", "").starts_with("HTTP/1.1 200"));
    assert!(with_cookie(cp, &admin, "GET", "/v1/status", "").starts_with("HTTP/1.1 401"), "the API takes no cookie");
    let out = cp.weft(&["token", "create", "--role", "read"]);
    let read = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(with_cookie(cp, &read, "GET", "/ui/history", "").starts_with("HTTP/1.1 200"));
    let answer = with_cookie(cp, &read, "POST", "/ui/rollback", "to=1");
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("a read token may not do this"), "{answer}");
    let answer = with_cookie(cp, "", "POST", "/ui/login", &format!("token={read}"));
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let cookie = format!("set-cookie: weft_console={read}; Path=/ui; HttpOnly; SameSite=Strict; Secure");
    assert!(answer.to_ascii_lowercase().contains(&cookie.to_ascii_lowercase()), "{answer}");
    let answer = with_cookie(cp, "", "POST", "/ui/login", "token=weft1.forged.token");
    assert!(answer.starts_with("HTTP/1.1 401") && !answer.contains("set-cookie"), "{answer}");
}

/// Under `--insecure` the console is open, as the API is; changes still need an Origin.
#[test]
fn an_insecure_control_plane_serves_an_open_console() {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let p = spawn(&["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string(), "--insecure"]);
    wait_until("it listens", || std::net::TcpStream::connect(addr).is_ok());
    let cp = Plane { p, addr, dir };
    let (code, page) = plane_raw_as(&cp, None, "GET", "/ui", b"");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<svg id=\"mesh\"") && page.contains("No traffic reported yet"), "{page}");
    let (_, page) = plane_raw_as(&cp, None, "GET", "/ui/login", b"");
    assert!(page.contains("--insecure"), "{page}");
    let yaml = service_entry("reviews", &[("10.0.0.1:80".parse().unwrap(), "version: v1", 1)]);
    let apply = serde_json::json!({ "files": [{ "name": "se.yaml", "text": yaml }] }).to_string();
    let (code, answer) = plane_raw_as(&cp, None, "POST", "/v1/apply", apply.as_bytes());
    assert_eq!(code, 200, "{answer}");
    let (code, _) = plane_raw_as(&cp, None, "POST", "/ui/rollback", b"to=1");
    assert_eq!(code, 403, "no Origin: refused even when open");
    let answer = with_cookie(&cp, "", "POST", "/ui/rollback", "to=1");
    assert!(answer.starts_with("HTTP/1.1 303") && answer.contains("location: /ui/history?rev=1"), "unchanged: {answer}");
}
