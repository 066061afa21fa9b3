//! `weft demo`: a local mesh in one command, identities and mTLS on. Three `reviews`
//! backends (v1 fast, v2 slower, v3 flaky) run in-process, each behind a sidecar (a real
//! `weft proxy --inbound` child with its own certificate from the control plane's CA,
//! registering its inbound address with its workload token: in the mesh); a real `weft
//! control-plane` child gets an Istio config applied (VirtualService 80/20 split, a header
//! route to v3, a DestinationRule with subsets, PeerAuthentication STRICT); the client's
//! `weft proxy` (identity `demo-client`) follows it and calls the sidecars over mTLS;
//! the spread, speed and how many answers came over mutual TLS are printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::backend::{serve, BackendArgs};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo proxy listens.
    #[arg(long, default_value = "127.0.0.1:15001")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Where the demo control plane listens.
    #[arg(long, default_value = "127.0.0.1:15010")]
    control_plane: SocketAddr,
    /// Requests to send.
    #[arg(long, short = 'n', default_value_t = 2000)]
    requests: usize,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Exit after the summary instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
}

/// Applied to the control plane once the three backends are registered as `reviews`
/// (each with its `version` label).
const CONFIG: &str = r#"# weft demo: three versions of "reviews" behind one host, mTLS required.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason-tries-v3
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: canary
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
    headers:
      response:
        set: {x-served-by: weft}
"#;

pub fn run(a: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(demo(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(mut a: DemoArgs) -> Result<(), String> {
    // A default port someone else holds is not an error: the demo takes a free one.
    a.listen = free_or_other(a.listen, "proxy")?;
    a.admin = free_or_other(a.admin, "proxy admin")?;
    a.control_plane = free_or_other(a.control_plane, "control plane")?;
    let backends = [("reviews-v1", "1ms", 0.0), ("reviews-v2", "5ms", 0.0), ("reviews-v3", "2ms", 0.1)];
    let mut ports = Vec::new();
    for (name, lat, err) in backends {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        ports.push(l.local_addr().map_err(|e| e.to_string())?.port());
        let args = BackendArgs {
            listen: l.local_addr().map_err(|e| e.to_string())?,
            name: name.into(),
            latency: weft_config::duration::parse_duration(lat)?,
            error_rate: err,
            capacity: 0,
        };
        tokio::spawn(serve(l, args));
    }
    let dir = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;

    // The control plane: the backends registered, the routing config applied.
    let cp = child_of_ours(Command::new(&exe).args(["control-plane", "--listen", &a.control_plane.to_string(), "--data-dir"]))
        .arg(dir.join("control-plane"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the control plane: {e}"))?;
    let mut cp_guard = ChildGuard(Some(cp));
    wait_port(a.control_plane, &mut cp_guard, "control plane").await?;
    // Its API is HTTPS, verified with the mesh root it made on first start.
    let server = format!("https://{}", a.control_plane);
    let ca = dir.join("control-plane").join("ca").join("root-cert.pem");
    // The API asks for tokens: the admin token the control plane wrote on first start
    // registers and applies; the proxy gets a workload token of its own.
    let admin = dir.join("control-plane").join("admin-token");
    let cfg = dir.join("routing.yaml");
    std::fs::write(&cfg, CONFIG).map_err(|e| e.to_string())?;
    ctl_cmd(&exe, &server, &ca, &admin, &["apply", "-f", &cfg.display().to_string()])?;
    let workload_token = |sa: &str| -> Result<std::path::PathBuf, String> {
        let f = dir.join(format!("{sa}.token"));
        let token = ctl_cmd(&exe, &server, &ca, &admin, &["token", "create", "--namespace", "default", "--service-account", sa])?;
        std::fs::write(&f, token).map_err(|e| e.to_string())?;
        Ok(f)
    };
    // Each backend behind its sidecar, which gets its certificate, then registers its
    // inbound address with the workload's own token (so it is in the mesh).
    let reviews_token = workload_token("reviews")?;
    let mut sidecars = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let inbound = free_port()?;
        let version = format!("version=v{}", i + 1);
        let child = child_of_ours(&mut Command::new(&exe))
            .args(["proxy", "--control-plane", &server, "--node", &format!("reviews-v{}", i + 1), "--token-file"])
            .arg(&reviews_token)
            .arg("--ca-file")
            .arg(&ca)
            .args(["--listen", &free_port()?.to_string(), "--inbound", &inbound.to_string(), "--app", &format!("127.0.0.1:{port}")])
            .args(["--service", "reviews", "--label", &version])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a sidecar: {e}"))?;
        let mut guard = ChildGuard(Some(child));
        wait_port(inbound, &mut guard, "sidecar").await?;
        sidecars.push(guard);
        let args = ["register", "--service", "reviews", "--address", &inbound.to_string(), "--label", &version];
        ctl_cmd(&exe, &server, &ca, &reviews_token, &args)?;
    }
    let proxy_token = workload_token("demo-client")?;

    let child = child_of_ours(&mut Command::new(&exe))
        .args(["proxy", "--control-plane", &server, "--node", "demo-proxy", "--token-file"])
        .arg(&proxy_token)
        .arg("--ca-file")
        .arg(&ca)
        .args(["--listen", &a.listen.to_string(), "--admin", &a.admin.to_string(), "--service", "demo-client"])
        .args(["--service-account", "demo-client"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    let mut guard = ChildGuard(Some(child));
    wait_port(a.listen, &mut guard, "proxy").await?;
    println!("weft demo: 3 backends (reviews v1 1ms, v2 5ms, v3 2ms with 10% errors), each behind a sidecar with its own certificate");
    println!("and registered in the mesh with the control plane on {server}; PeerAuthentication STRICT: mTLS only");
    println!(
        "proxy on {} following it as spiffe://cluster.local/ns/default/sa/demo-client (admin {}); config from {}\n",
        a.listen,
        a.admin,
        cfg.display()
    );
    println!("console: {server}/ui (log in with the token in {}; the certificate is the mesh CA's, {})\n", admin.display(), ca.display());

    let started = Instant::now();
    let per = a.requests.div_ceil(a.connections.max(1));
    let mut tasks = Vec::new();
    for c in 0..a.connections.max(1) {
        let addr = a.listen;
        // Bounded: a demo never hangs, whatever the proxy does.
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(TRAFFIC_LIMIT, client(addr, per, c))
                .await
                .unwrap_or_else(|_| Err(format!("no answers within {TRAFFIC_LIMIT:?}")))
        }));
    }
    let mut by_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut lat = Vec::with_capacity(a.requests);
    let mut failures = 0;
    let mut mutual_tls = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(rows)) => {
                for (b, s, d, mtls) in rows {
                    mutual_tls += usize::from(mtls);
                    *by_backend.entry(b).or_default() += 1;
                    *by_status.entry(s).or_default() += 1;
                    lat.push(d);
                }
            }
            _ => failures += 1,
        }
    }
    let elapsed = started.elapsed();
    let n = lat.len();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((n as f64 * p) as usize).min(n.saturating_sub(1))).copied().unwrap_or_default();
    println!(
        "sent {n} requests over {} connections in {:.2}s: {:.0} requests/s",
        a.connections,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!("\n{:<14} {:>9} {:>7}", "backend", "requests", "share");
    for (b, c) in &by_backend {
        println!("{:<14} {:>9} {:>6.1}%", b, c, 100.0 * *c as f64 / n.max(1) as f64);
    }
    println!("\n{:<14} {:>9}", "status", "requests");
    for (s, c) in &by_status {
        println!("{:<14} {:>9}", s, c);
    }
    println!(
        "\nlatency through the proxy: p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  max {:.2}ms",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    println!("(the split follows the VirtualService: 80/20 between v1 and v2; requests with end-user: jason go to v3)");
    let ok = by_status.get(&200).copied().unwrap_or(0);
    println!("\nmTLS: {mutual_tls} of the {ok} successful answers came from an app whose sidecar saw the caller as {CLIENT_ID} (x-forwarded-client-cert)");
    if failures > 0 {
        println!("{failures} client connections failed");
    }
    if failures == a.connections.max(1) {
        return Err("no request went through the proxy".into());
    }
    if a.once {
        println!("\nRun `weft demo` without --once to keep the mesh running and try it yourself.");
        return Ok(());
    }
    // A light load while the mesh runs, so that the console's graph has traffic to show.
    tokio::spawn(trickle(a.listen));
    println!(
        "\nThe mesh keeps running. Try:\n  weft bench http://{listen}/reviews/1 --host reviews -c 20 -z 10s     # load through the proxy\n  curl -s -H 'Host: reviews' http://{listen}/\n  curl -s http://{admin}/metrics | grep istio_requests_total\n  export WEFT_SERVER={server} WEFT_CA_FILE={ca} WEFT_TOKEN_FILE={admin_token}\n  weft get endpoints\n  weft get virtualservice reviews\n  weft status\n  open {server}/ui                  # the console: the mesh graph, services, proxies, history\nCtrl-C stops everything.",
        listen = a.listen,
        admin = a.admin,
        ca = ca.display(),
        admin_token = admin.display(),
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// About 5 requests a second through the demo's proxy, until the demo ends.
async fn trickle(addr: SocketAddr) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(5), client(addr, 10, 0)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long the demo's traffic may take before it gives up.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(60);

/// `addr` if nothing listens there, else a free port on the same address (said so).
fn free_or_other(addr: SocketAddr, what: &str) -> Result<SocketAddr, String> {
    if std::net::TcpListener::bind(addr).is_ok() {
        return Ok(addr);
    }
    let other = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port for the {what} on {}: {e}", addr.ip()))?;
    println!("weft demo: {addr} is taken; the {what} uses {other} instead");
    Ok(other)
}

/// The demo's children die with it, even when it is killed with SIGKILL (Linux: the
/// kernel sends them SIGTERM when the demo's thread goes; elsewhere they are stopped
/// when the demo exits normally or fails).
fn child_of_ours(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure calls only async-signal-safe
        // functions (prctl, getppid) and allocates nothing.
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo may have died before the prctl: then do not start at all.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the demo is gone"));
                }
                Ok(())
            });
        }
    }
    cmd
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The demo client's identity, as the callee's sidecar reports it to the app.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/demo-client";

/// One answer: (backend, status, latency, whether the app saw the caller's mTLS identity).
type Row = (String, u16, Duration, bool);

/// Sends `n` requests on one keep-alive connection; every tenth says `end-user: jason`.
async fn client(addr: SocketAddr, n: usize, id: usize) -> Result<Vec<Row>, String> {
    let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let (mut tx, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = http::Request::builder().uri("/reviews/1").header("host", "reviews");
        if (i + id).is_multiple_of(10) {
            b = b.header("end-user", "jason");
        }
        let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
        let t = Instant::now();
        tx.ready().await.map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let backend = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("(proxy)").to_owned();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let latency = t.elapsed();
        // The backend echoes the request's headers: the sidecar's XFCC names the caller.
        let mtls = body.windows(CLIENT_ID.len()).any(|w| w == CLIENT_ID.as_bytes());
        out.push((backend, status, latency, mtls));
    }
    Ok(out)
}

struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SIGTERM: the proxy drains and exits on its own.
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a client command (`weft register …`, `weft apply …`) against the demo's control plane.
/// A free loopback port (bound, then released).
fn free_port() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))
}

/// Runs `weft ARGS --server SERVER` with the token in `token` and the mesh root in `ca`; its stdout.
fn ctl_cmd(exe: &std::path::Path, server: &str, ca: &std::path::Path, token: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(exe)
        .args(args)
        .args(["--server", server])
        .env("WEFT_TOKEN_FILE", token)
        .env("WEFT_CA_FILE", ca)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("weft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

async fn wait_port(addr: SocketAddr, child: &mut ChildGuard, what: &str) -> Result<(), String> {
    let exited = |child: &mut ChildGuard| match child.0.as_mut().map(|c| c.try_wait()) {
        Some(Ok(Some(st))) => {
            child.0 = None;
            Some(format!("the {what} exited ({st}); is {addr} already in use?"))
        }
        _ => None,
    };
    for _ in 0..200 {
        if let Some(e) = exited(child) {
            return Err(e);
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            // Listening — ours, not another process that took the port meanwhile.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return exited(child).map_or(Ok(()), Err);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the {what} did not start listening on {addr} within 10s"))
}
