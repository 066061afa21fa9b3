//! `--influxdb-url` against a real InfluxDB (Debian's `influxdb`, 1.x): the proxy's
//! pushes land as line protocol that InfluxDB parses, `istio_requests_total` counts the
//! requests sent, a hostile tag value arrives whole, and a push InfluxDB refuses is
//! counted and logged once.

mod common;
use common::*;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `influxd` on loopback ports, its data in a temp directory; killed on drop.
struct Influx {
    child: Child,
    http: SocketAddr,
}

impl Drop for Influx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn influxd() -> String {
    for c in ["influxd", "/usr/bin/influxd"] {
        if Command::new(c).arg("version").output().is_ok_and(|o| o.status.success()) {
            return c.into();
        }
    }
    panic!("influxd is not installed: ./scripts/test installs it (apt-get install influxdb)");
}

fn start_influx() -> Influx {
    let dir = temp_dir().join("influx");
    let (http, rpc) = (free_addr(), free_addr());
    let d = dir.display();
    let conf = format!(
        "reporting-disabled = true\nbind-address = \"{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [http]\n  bind-address = \"{http}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n\
         [continuous_queries]\n  enabled = false\n"
    );
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("influxdb.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(influxd())
        .args(["run", "-config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("influxd starts");
    let influx = Influx { child, http };
    let url = format!("http://{http}/ping");
    wait_until("influxd answers /ping", || curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).1 == "204");
    influx
}

impl Influx {
    /// An InfluxQL statement through the HTTP API (POST /query): the JSON answer.
    fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let url = format!("http://{}/query?db={db}", self.http);
        let (rc, out, err) = curl(&["-s", "-XPOST", &url, "--data-urlencode", &format!("q={q}")]);
        assert_eq!(rc, 0, "{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The first value of the first series of a query's answer, if any.
    fn scalar(&self, db: &str, q: &str) -> Option<f64> {
        self.query(db, q)["results"][0]["series"][0]["values"][0][1].as_f64()
    }
}

/// A `--service` that has every character the line protocol must escape but `\`
/// (InfluxDB 1.x keeps `\\` doubled; see the README).
const HOSTILE: &str = "prod page,team=a b\"x'=y";

#[test]
fn pushed_metrics_land_in_influxdb_with_the_request_count() {
    let influx = start_influx();
    influx.query("", "CREATE DATABASE weft");
    let b = backend("reviews-v1", &[]);
    let url = format!("http://{}/write?db=weft", influx.http);
    let cfg = service_entry("reviews.default.svc", &[(b.addr, "version: v1", 1)]);
    let p = proxy_with(&cfg, &["--influxdb-url", &url, "--influxdb-interval", "1s", "--service", HOSTILE]);
    let sent = 37;
    for _ in 0..sent {
        assert_eq!(get(p.addr(), "reviews.default.svc", "/", &[]).status, 200);
    }
    let q = "SELECT last(\"value\") FROM istio_requests_total WHERE destination_service = 'reviews.default.svc' AND response_code = '200'";
    let start = Instant::now();
    wait_until("InfluxDB holds the requests sent", || influx.scalar("weft", q) == Some(sent as f64));
    eprintln!("the count arrived {:?} after the last request", start.elapsed());

    // The hostile --service came through as one tag value, whole.
    let tags = influx.query("weft", "SHOW TAG VALUES FROM istio_requests_total WITH KEY = \"source_workload\"");
    let values: Vec<&str> =
        tags["results"][0]["series"][0]["values"].as_array().expect("tag values").iter().filter_map(|v| v[1].as_str()).collect();
    assert_eq!(values, vec![HOSTILE], "{tags}");
    // Histograms arrive bucket by bucket, and weft's own counters beside them.
    let q = "SELECT last(\"value\") FROM istio_request_duration_milliseconds_bucket WHERE le = '+Inf' AND response_code = '200'";
    assert_eq!(influx.scalar("weft", q), Some(sent as f64));
    let q = "SELECT last(\"value\") FROM weft_downstream_connections_total";
    assert!(influx.scalar("weft", q).is_some_and(|n| n >= 1.0));
    assert!(p.metric("weft_influxdb_pushes_total", &[]) >= 1.0);
    assert_eq!(p.metric("weft_influxdb_push_failed_total", &[]), 0.0, "{}", p.p.log_text());
}

#[test]
fn refused_pushes_are_counted_and_logged_once() {
    let influx = start_influx();
    // No such database: InfluxDB answers 404 to every push.
    let url = format!("http://{}/write?db=missing", influx.http);
    let p = proxy_with(
        &service_entry("reviews.default.svc", &[(free_addr(), "version: v1", 1)]),
        &["--influxdb-url", &url, "--influxdb-interval", "1s"],
    );
    // Nothing listens here: connecting fails.
    let closed = format!("http://{}/write?db=weft", free_addr());
    let q = proxy_with(
        &service_entry("reviews.default.svc", &[(free_addr(), "version: v1", 1)]),
        &["--influxdb-url", &closed, "--influxdb-interval", "1s"],
    );
    wait_until("three pushes failed", || {
        std::thread::sleep(Duration::from_millis(200));
        p.metric("weft_influxdb_push_failed_total", &[]) >= 3.0 && q.metric("weft_influxdb_push_failed_total", &[]) >= 3.0
    });
    assert_eq!(p.metric("weft_influxdb_pushes_total", &[]), 0.0);
    for (proxy, why) in [(&p, "404"), (&q, "connect")] {
        let log = proxy.p.log_text();
        let failed: Vec<_> = log.lines().filter(|l| l.contains("InfluxDB push failed")).collect();
        assert_eq!(failed.len(), 1, "logged once a minute at most: {log}");
        assert!(failed[0].contains(why), "{}", failed[0]);
    }
    assert_eq!(get(p.addr(), "nothing", "/", &[]).status, 404, "the proxy still serves");
}

#[test]
fn a_bad_influxdb_url_stops_the_start() {
    let ok_url = "http://127.0.0.1:1/write?db=w";
    for (url, interval) in [("https://influx:8086/write?db=w", "10s"), ("influx:8086", "10s"), (ok_url, "10ms")] {
        let args = ["proxy", "--listen", "127.0.0.1:0", "--config", "/dev/null", "--influxdb-url", url, "--influxdb-interval", interval];
        let out = Command::new(weft()).args(args).output().unwrap();
        assert!(!out.status.success(), "{url} {interval}");
        assert!(text(&out).contains("--influxdb-"), "{}", text(&out));
    }
}

/// One request to a loopback listener standing in for InfluxDB 2 (which this machine
/// lacks): its head and body; answered 204.
fn receive_one(l: &std::net::TcpListener) -> (String, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).unwrap() > 0, "the request ended early: {head}");
    }
    let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>()));
    let mut body = vec![0; len.expect("a content-length").unwrap()];
    r.read_exact(&mut body).unwrap();
    r.get_mut().write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn a_token_file_is_sent_as_influxdb_2_wants_it() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token = temp_dir().join("influx.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let url = format!("http://{}/write?db=weft", l.local_addr().unwrap());
    let cfg = service_entry("reviews.default.svc", &[(free_addr(), "version: v1", 1)]);
    let args = ["--influxdb-url", &url, "--influxdb-interval", "1s", "--influxdb-token-file", token.to_str().unwrap()];
    let _p = proxy_with(&cfg, &args);
    let (head, body) = receive_one(&l);
    assert!(head.starts_with("POST /write?db=weft HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\nauthorization: token s3cret-token\r\n"), "{head}");
    assert!(body.lines().any(|l| l.starts_with("weft_config_revision value=1 ")), "{body}");
}
