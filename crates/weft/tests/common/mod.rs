//! Test harness: real `weft` processes (proxy and backends) on loopback, and a small
//! blocking HTTP/1.1 client that can also send malformed bytes.
#![allow(dead_code)]

pub mod grafana;
pub mod ingress;
pub mod otlp;
mod tcp;

#[allow(unused_imports)] // (each test binary uses what it needs)
pub use tcp::{tcp_call, tcp_echo};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod workload;
#[allow(unused_imports)] // (each test binary uses what it needs)
pub use workload::{spawn_reviews_sidecar, workload_token};

pub fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Where a sidecar's inbound listener listens (from its start line).
    pub fn inbound(&self) -> Option<SocketAddr> {
        self.log.lock().unwrap().iter().find(|l| l.contains("listening on ")).and_then(|l| after(&strip_ansi(l), "inbound on "))
    }
}

/// Starts `weft ARGS`, waiting for the stderr line that says where it listens.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_program(weft(), args)
}

/// Starts `program ARGS` (a `weft`, or a test server such as a python script), waiting
/// for the stderr line that says where it listens ("listening on ADDR").
pub fn spawn_program(program: &str, args: &[&str]) -> Proc {
    try_spawn_program(program, args).unwrap_or_else(|log| panic!("{program} {args:?} did not start: {log}"))
}

/// [`spawn_program`], or what it logged when it did not start.
pub fn try_spawn_program(program: &str, args: &[&str]) -> Result<Proc, String> {
    let mut child = Command::new(program)
        .args(args)
        .env("WEFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // (Logged before it is announced: the start line is in the log by the time
            // spawn returns.)
            log2.lock().unwrap().push(line.clone());
            if line.contains("listening on ") {
                let _ = tx.send(line);
            }
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
        // Not left running behind the failed test.
        let _ = child.kill();
        let _ = child.wait();
        return Err(log.lock().unwrap().join("\n"));
    };
    let clean = strip_ansi(&line);
    let addr = after(&clean, "listening on ").expect("address");
    let admin = after(&clean, "admin on ");
    Ok(Proc { child, addr, admin, log })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if c == '\x1b' {
            esc = true;
        } else if esc {
            if c == 'm' {
                esc = false;
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn after(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    // (The control plane logs a URL: https://ADDR, or http://ADDR when insecure.)
    let rest = rest.strip_prefix("https://").or_else(|| rest.strip_prefix("http://")).unwrap_or(rest);
    let tok: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ',').collect();
    tok.parse().ok()
}

/// A demo backend answering as `name`.
pub fn backend(name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["backend", "--listen", "127.0.0.1:0", "--name", name];
    args.extend_from_slice(extra);
    spawn(&args)
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-test-{}-{}", std::process::id(), DIRS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A proxy serving `config`, with an admin endpoint; `cfg` is the file it watches.
pub struct Proxy {
    pub p: Proc,
    pub cfg: PathBuf,
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        self.p.addr
    }

    pub fn admin(&self, path: &str) -> String {
        let mut c = Client::connect(self.p.admin.expect("admin"));
        let r = c.get("admin", path, &[]);
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Sum of a metric's samples whose label text contains every `labels` item.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.admin("/metrics"), name, labels)
    }

    /// Waits (up to 5 s) for a metric to reach `want`; counters of connection-level
    /// events are bumped when the connection's task ends, just after the reply.
    pub fn wait_metric(&self, name: &str, labels: &[&str], want: f64) -> f64 {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name, labels);
            if v >= want || Instant::now() >= end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn revision(&self) -> u64 {
        self.metric("weft_config_revision", &[]) as u64
    }

    /// Rewrites the config file and waits until the proxy reports a new revision.
    pub fn rewrite(&self, config: &str) {
        let before = self.revision();
        std::fs::write(&self.cfg, config).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.revision() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("config not reloaded:\n{}", self.p.log_text());
    }
}

pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn proxy(config: &str) -> Proxy {
    proxy_with(config, &[])
}

pub fn proxy_with(config: &str, extra: &[&str]) -> Proxy {
    let dir = temp_dir();
    let cfg = dir.join("mesh.yaml");
    std::fs::write(&cfg, config).unwrap();
    let c = cfg.to_str().unwrap().to_owned();
    let mut args = vec!["proxy", "--config", &c, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "2"];
    args.extend_from_slice(extra);
    Proxy { p: spawn(&args), cfg }
}

/// A ServiceEntry for `host` with the given (address, labels, weight) endpoints.
pub fn service_entry(host: &str, eps: &[(SocketAddr, &str, u32)]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n"
    );
    for (a, labels, w) in eps {
        s.push_str(&format!("  - {{address: {}, ports: {{http: {}}}, weight: {w}, labels: {{{labels}}}}}\n", a.ip(), a.port()));
    }
    s
}

/// A DestinationRule for `host` with a traffic policy (YAML flow text).
pub fn destination_rule(host: &str, policy: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n  trafficPolicy: {policy}\n")
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or("-").to_owned()
    }
}

/// A keep-alive HTTP/1.1 client over one connection.
pub struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { r: BufReader::new(s) }
    }

    /// Connects from a chosen loopback source address (for useSourceIp).
    pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { r: BufReader::new(s) }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.r.get_mut()
    }

    pub fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", host, path, headers, b"")
    }

    pub fn request(&mut self, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes, method == "HEAD")
    }

    /// Writes `bytes` as they are and reads one response.
    pub fn raw(&mut self, bytes: &[u8], head: bool) -> Resp {
        self.r.get_mut().write_all(bytes).unwrap();
        self.read_response(head).expect("a response")
    }

    pub fn read_response(&mut self, head: bool) -> Option<Resp> {
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).ok()?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v): &(String, String)| v.clone());
        let mut body = Vec::new();
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if let Some(n) = get("content-length") {
            body.resize(n.parse().ok()?, 0);
            self.r.read_exact(&mut body).ok()?;
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut l = String::new();
                self.r.read_line(&mut l).ok()?;
                let n = usize::from_str_radix(l.trim().split(';').next()?, 16).ok()?;
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.r.read_to_end(&mut body).ok()?;
        }
        Some(Resp { status, headers, body })
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    Client::connect(addr).get(host, path, headers)
}

/// Counts responses by backend over `n` requests on one connection.
pub fn spread(addr: SocketAddr, host: &str, n: usize, headers: &[(&str, &str)]) -> std::collections::BTreeMap<String, usize> {
    let mut c = Client::connect(addr);
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = c.get(host, "/", headers);
        assert_eq!(r.status, 200, "{}", r.text());
        *m.entry(r.backend()).or_insert(0) += 1;
    }
    m
}

/// Asserts each backend's share is within `tol` (absolute, e.g. 0.03) of `want`.
pub fn assert_shares(got: &std::collections::BTreeMap<String, usize>, want: &[(&str, f64)], tol: f64) {
    let total: usize = got.values().sum();
    for (name, share) in want {
        let s = *got.get(*name).unwrap_or(&0) as f64 / total as f64;
        assert!((s - share).abs() <= tol, "{name}: share {s:.4}, want {share:.4} ± {tol} ({got:?})");
    }
}

pub fn curl(args: &[&str]) -> (i32, String, String) {
    let o = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl is installed");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A free loopback address (bound, then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A control plane (embedded store under `dir`) and where it listens.
pub struct Plane {
    pub p: Proc,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

/// Starts a control plane on `dir` and `addr`, waiting until it accepts connections.
pub fn start_plane(dir: &std::path::Path, addr: SocketAddr) -> Proc {
    let p = spawn(&["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string()]);
    wait_accepting(addr, &p);
    p
}

fn wait_accepting(addr: SocketAddr, p: &Proc) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "control plane did not start:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh control plane on a free port. (The port is picked before the control plane
/// binds it, so that a restart can take it again: another process may take it first —
/// an outgoing connection's ephemeral port, under the full suite's load — and then
/// another is picked.)
pub fn plane() -> Plane {
    let dir = temp_dir().join("cp");
    for _ in 0..5 {
        let addr = free_addr();
        let args = ["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string()];
        match try_spawn_program(weft(), &args) {
            Ok(p) => {
                wait_accepting(addr, &p);
                return Plane { p, addr, dir };
            }
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("the control plane did not start: {log}"),
        }
    }
    panic!("no free port for the control plane in 5 tries")
}

impl Plane {
    /// Whether its API is HTTPS: it is whenever the control plane has a CA (not under
    /// `--insecure`).
    pub fn tls(&self) -> bool {
        self.ca_file().exists()
    }

    /// Its API's URL: HTTPS, with a certificate from its mesh CA (http:// when insecure).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls() { "https" } else { "http" }, self.addr)
    }

    /// The mesh root its API is verified with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca").join("root-cert.pem")
    }

    /// `--ca-file PATH` as `weft proxy` arguments.
    pub fn ca_args(&self) -> [String; 2] {
        ["--ca-file".into(), self.ca_file().to_str().unwrap().to_owned()]
    }

    /// The admin token the control plane wrote on first start.
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin-token")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_file()).expect("the control plane wrote an admin token").trim().to_owned()
    }

    /// Runs the `weft` CLI against this control plane, as its admin.
    pub fn weft(&self, args: &[&str]) -> std::process::Output {
        self.weft_as(&self.admin_token_file(), args)
    }

    /// Runs the `weft` CLI against this control plane with the token in `token_file`.
    pub fn weft_as(&self, token_file: &std::path::Path, args: &[&str]) -> std::process::Output {
        Command::new(weft())
            .args(args)
            .env("WEFT_SERVER", self.url())
            .env("WEFT_CA_FILE", self.ca_file())
            .env("WEFT_TOKEN_FILE", token_file)
            .env_remove("WEFT_TOKEN")
            .output()
            .unwrap()
    }

    /// `weft apply -f` of `yaml` (written to a file named `name`).
    pub fn apply(&self, name: &str, yaml: &str) -> std::process::Output {
        let f = temp_dir().join(name);
        std::fs::write(&f, yaml).unwrap();
        self.weft(&["apply", "-f", f.to_str().unwrap()])
    }

    pub fn history_len(&self) -> usize {
        let out = self.weft(&["history"]);
        String::from_utf8_lossy(&out.stdout).lines().count() - 1
    }
}

/// A command's stdout then stderr.
pub fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A proxy following `cp` (admin token) as `node`, in `namespace` (no files; its admin
/// on an ephemeral port).
pub fn follower_in(cp: &Plane, node: &str, namespace: &str) -> Proxy {
    follower_with(cp, node, &["--namespace", namespace])
}

/// A proxy following `cp` (admin token) as `node`, with more proxy flags.
pub fn follower_with(cp: &Plane, node: &str, extra: &[&str]) -> Proxy {
    follower_via(cp, &cp.url(), node, extra)
}

/// [`follower_with`], reaching `cp` at `url` (through a relay, say).
pub fn follower_via(cp: &Plane, url: &str, node: &str, extra: &[&str]) -> Proxy {
    let (token, ca) = (cp.admin_token_file(), cp.ca_file());
    let mut args = vec!["proxy", "--control-plane", url, "--ca-file", ca.to_str().unwrap(), "--token-file", token.to_str().unwrap()];
    args.extend(["--node", node, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    Proxy { p: spawn(&args), cfg: std::path::PathBuf::new() }
}

pub fn follower(cp: &Plane, node: &str) -> Proxy {
    follower_in(cp, node, "default")
}

/// Polls `f` every 10 ms until it holds; fails after 10 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// A control plane's metric (the sum of its samples), read from its `/metrics` (on an
/// API connection of its own).
#[allow(dead_code)]
pub fn cp_metric(cp: &Plane, name: &str) -> f64 {
    metric_sum(&plane_raw(cp, "GET", "/metrics", b"").1, name, &[])
}

/// One raw HTTP/1.1 request to a control plane's API, as its admin: (status, body).
pub fn plane_raw(cp: &Plane, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    plane_raw_as(cp, Some(&cp.admin_token()), method, path, body)
}

/// One raw HTTP/1.1 request with `token` (none: no `Authorization`): (status, body).
pub fn plane_raw_as(cp: &Plane, token: Option<&str>, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\nhost: cp\r\nconnection: close\r\n{auth}content-length: {}\r\n\r\n", body.len());
    let t = plane_send(cp, &[head.as_bytes(), body].concat());
    let code = t.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, t.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default())
}

/// A TLS connection to `cp`'s API, verified with its mesh root, as the CLI makes one.
pub fn plane_tls(cp: &Plane) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    tls_to(cp.addr, &std::fs::read_to_string(cp.ca_file()).unwrap()).expect("a TLS connection to the control plane")
}

/// A TLS connection to `addr` verified with `roots_pem`: Err(the handshake's error).
pub fn tls_to(addr: SocketAddr, roots_pem: &str) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let config = weft_tls::config::control_plane_client_config(roots_pem, None).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Sends `raw` bytes to `cp` (over TLS unless it is insecure) and reads until it
/// closes: the answer's text.
pub fn plane_send(cp: &Plane, raw: &[u8]) -> String {
    let mut s: Box<dyn ReadWrite> = match cp.tls() {
        true => Box::new(plane_tls(cp)),
        false => Box::new(TcpStream::connect(cp.addr).unwrap()),
    };
    let _ = s.write_all(raw).and_then(|_| s.flush());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
