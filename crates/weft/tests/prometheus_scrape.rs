//! A real Prometheus (Debian's `prometheus`, from the same package as `promtool`) runs
//! the shipped `deploy/prometheus/prometheus.yml` — its targets pointed at this test's
//! processes and its commented HTTPS/token lines for the control plane turned on, as the
//! README says — and scrapes two proxies following a control plane. Its
//! `histogram_quantile(0.95, …istio_request_duration_milliseconds_bucket…)` for each proxy
//! falls within one bucket of the p95 that `weft bench` measured through that proxy, and
//! every query of the Grafana dashboards answers with data.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::grafana;
use common::*;

/// Istio's duration buckets, as weft's histogram has them (ms).
const BUCKETS_MS: [f64; 13] = [0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

fn bucket(ms: f64) -> usize {
    BUCKETS_MS.iter().position(|le| ms <= *le).unwrap_or(BUCKETS_MS.len())
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(config: &Path, dir: &Path) -> Prometheus {
        let addr = free_addr();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = match Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("prometheus not found: install prometheus (promtool), e.g. `apt-get install prometheus`; ./scripts/test does it")
            }
            Err(e) => panic!("cannot run prometheus: {e}"),
        };
        let p = Prometheus { child, addr, log };
        let start = Instant::now();
        while curl(&["-f", &format!("http://{addr}/-/ready")]).0 != 0 {
            assert!(start.elapsed() < Duration::from_secs(15), "prometheus did not start:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, query: Option<&str>) -> serde_json::Value {
        let url = format!("http://{}{path}", self.addr);
        let q = query.map(|q| format!("query={q}"));
        let mut args = vec!["-G", url.as_str()];
        if let Some(q) = &q {
            args.extend(["--data-urlencode", q.as_str()]);
        }
        let (rc, out, err) = curl(&args);
        assert_eq!(rc, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["status"], "success", "{q:?}: {out}");
        v["data"].clone()
    }

    /// An instant query's samples: (instance label, value).
    fn query(&self, q: &str) -> Vec<(String, f64)> {
        let data = self.get("/api/v1/query", Some(q));
        let mut out: Vec<_> = data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (s["metric"]["instance"].as_str().unwrap_or_default().to_owned(), v)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Polls `q` (every 200 ms, up to 15 s) until `done` holds for its samples.
    fn wait(&self, q: &str, done: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
        let start = Instant::now();
        loop {
            let got = self.query(q);
            if done(&got) {
                return got;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "{q}: {got:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The shipped config with the README's edits: targets, the control plane over HTTPS with
/// a token, rules by absolute path; scraped every second.
fn config(proxies: [SocketAddr; 2], cp: &Plane, token: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shipped = std::fs::read_to_string(repo.join("deploy/prometheus/prometheus.yml")).unwrap();
    let rules = repo.join("deploy/prometheus/rules").canonicalize().unwrap();
    let ca = cp.ca_file();
    let edits = [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
        ("  - rules/*.yml", format!("  - {}/*.yml", rules.display())),
        ("- 127.0.0.1:15000", format!("- {}", proxies[0])),
        ("- 127.0.0.1:15100", format!("- {}", proxies[1])),
        ("- 127.0.0.1:15010", format!("- {}", cp.addr)),
        ("    scheme: http\n", String::new()),
        ("    # scheme: https", "    scheme: https".to_owned()),
        ("    # tls_config:", "    tls_config:".to_owned()),
        ("    #   ca_file: /path/to/data-dir/ca/root-cert.pem", format!("      ca_file: {}", ca.display())),
        ("    # authorization:", "    authorization:".to_owned()),
        ("    #   credentials_file: /etc/prometheus/weft.token", format!("      credentials_file: {}", token.display())),
    ];
    let mut c = shipped;
    for (from, to) in edits {
        assert!(c.contains(from), "deploy/prometheus/prometheus.yml no longer has {from:?}");
        c = c.replacen(from, &to, 1);
    }
    c
}

fn bench(proxy: SocketAddr, host: &str) -> f64 {
    let url = format!("http://{proxy}/");
    let o = Command::new(weft()).args(["bench", &url, "--host", host, "-c", "4", "-z", "2s", "-o", "json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], r["requests"], "{r}");
    r["latency_us"]["p95"].as_f64().unwrap() / 1000.0
}

#[test]
fn prometheus_p95_per_proxy_within_one_bucket_of_bench() {
    let cp = plane();
    // One backend answers in 35 ms, the other in 150 ms: different buckets, (25, 50] and
    // (100, 250], so each proxy's quantile is told apart.
    let (fast, slow) = (backend("fast", &["--latency", "35ms"]), backend("slow", &["--latency", "150ms"]));
    let mesh = service_entry("fast", &[(fast.addr, "", 1)]) + "---\n" + &service_entry("slow", &[(slow.addr, "", 1)]);
    assert!(cp.apply("mesh.yaml", &mesh).status.success());
    let (a, b) = (follower(&cp, "proxy-a"), follower(&cp, "proxy-b"));
    let token = cp.dir.join("prometheus.token");
    let o = cp.weft(&["token", "create", "--role", "read"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&token, &o.stdout).unwrap();

    let dir = temp_dir();
    let cfg = dir.join("prometheus.yml");
    let (admin_a, admin_b) = (a.p.admin.unwrap(), b.p.admin.unwrap());
    std::fs::write(&cfg, config([admin_a, admin_b], &cp, &token)).unwrap();
    let prom = Prometheus::start(&cfg, &dir);
    for (p, host) in [(&a, "fast"), (&b, "slow")] {
        wait_until("the proxy routes", || get(p.addr(), host, "/", &[]).status == 200);
    }
    // Every target up: the two proxies' admin /metrics and the control plane over HTTPS
    // with a read token. (Prometheus scrapes first ~5 s after its start.) This scrape,
    // before the load, lets rate() see the load.
    prom.wait("up", |s| s.len() == 3 && s.iter().all(|(_, v)| *v == 1.0));

    let (pa, pb) = std::thread::scope(|s| {
        let ta = s.spawn(|| bench(a.addr(), "fast"));
        let tb = s.spawn(|| bench(b.addr(), "slow"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    eprintln!("weft bench p95: through proxy-a {pa:.1} ms, through proxy-b {pb:.1} ms");

    // Until Prometheus has scraped the counts the proxies hold now.
    let (na, nb) = (a.metric("istio_requests_total", &[]), b.metric("istio_requests_total", &[]));
    let want = {
        let mut w = vec![(admin_a.to_string(), na), (admin_b.to_string(), nb)];
        w.sort_by(|x, y| x.0.cmp(&y.0));
        w
    };
    prom.wait("sum by (instance) (istio_requests_total{job=\"weft-proxy\"})", |s| s == want.as_slice());

    let q = "histogram_quantile(0.95, sum by (instance, le) (istio_request_duration_milliseconds_bucket{job=\"weft-proxy\",reporter=\"source\"}))";
    let got = prom.query(q);
    eprintln!("prometheus: {got:?}");
    for (admin, bench_p95) in [(admin_a, pa), (admin_b, pb)] {
        let (_, p95) = got.iter().find(|(i, _)| *i == admin.to_string()).unwrap_or_else(|| panic!("no {admin} in {got:?}"));
        let (bp, bb) = (bucket(*p95), bucket(bench_p95));
        assert!(bp.abs_diff(bb) <= 1, "{admin}: prometheus p95 {p95} ms (bucket {bp}) vs weft bench {bench_p95} ms (bucket {bb})");
    }
    assert!(bucket(pa) < bucket(pb), "the two proxies' backends differ: {pa} vs {pb} ms");

    // The control plane, scraped over HTTPS with the token: its revision, and each proxy
    // caught up with it (the lag WeftProxyConfigStale and the dashboards compute).
    let latest = cp.history_len() as f64;
    prom.wait("weft_control_revision", |s| s.len() == 1 && s[0].1 == latest);
    prom.wait("scalar(max(weft_control_revision)) - weft_control_plane_revision", |s| s.len() == 2 && s.iter().all(|(_, v)| *v == 0.0));

    // Every dashboard query runs on what was scraped, its variables set as a user picking
    // proxy-a's service would set them.
    let fast = prom.get("/api/v1/query", Some("istio_requests_total{reporter=\"source\",destination_service=~\"fast.*\"}"));
    let labels = fast["result"][0]["metric"].clone();
    let label = |l: &str| labels[l].as_str().unwrap_or_else(|| panic!("no {l} in {labels}")).to_owned();
    let value = |var: &str| match var {
        "service" => label("destination_service"),
        "reporter" => "source".into(),
        "srcns" => label("source_workload_namespace"),
        "srcwl" => label("source_workload"),
        "namespace" | "dstns" => label("destination_workload_namespace"),
        "workload" | "dstwl" => label("destination_workload"),
        "instance" => admin_a.to_string(),
        other => panic!("a dashboard variable this test does not know: {other}"),
    };
    // Each answers (no query error), and with data unless this test makes none for it: no
    // workload certificates, no 5xx, no alert firing, and the workload "fast" calls nothing.
    let no_data_here = |panel: &str| {
        ["Workload certificate time left, by proxy", "5xx responses by service and response flags", "Firing alerts"].contains(&panel)
            || panel.starts_with("Outgoing")
            || panel.starts_with("Response size by destination")
            || panel.starts_with("Bytes sent on outgoing")
    };
    let mut empty = Vec::new();
    for (file, dash) in grafana::dashboards() {
        let vars = grafana::variables(&dash);
        for q in grafana::queries(&file, &dash) {
            let e = grafana::substitute(&q.expr, &vars, value);
            if prom.get("/api/v1/query", Some(&e))["result"].as_array().is_none_or(|r| r.is_empty()) && !no_data_here(&q.panel) {
                empty.push(format!("{file}: {}: {e}", q.panel));
            }
        }
    }
    assert!(empty.is_empty(), "dashboard queries with no data:\n{}", empty.join("\n"));

    // The shipped rules loaded in a real Prometheus, none failing.
    let rules = prom.get("/api/v1/rules", None);
    let all: Vec<_> = rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect();
    assert_eq!(all.len(), 11, "{rules}");
    assert!(all.iter().all(|r| r["health"] != "err"), "{rules}");
}
