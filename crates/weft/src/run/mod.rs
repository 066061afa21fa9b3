//! `weft run`: an app and its sidecar under one supervisor, on a machine without
//! Kubernetes. It starts the sidecar (`weft proxy` following the control plane: an
//! inbound listener in front of the app, an outbound one the app calls through), starts
//! the app with `HTTP_PROXY` pointing at the outbound listener, waits until the app is
//! ready, registers the inbound address with a TTL and keeps it alive. A crashed app is
//! deregistered and started again after a back-off ([`restarts`]); a crash loop ends it.
//! SIGTERM (or SIGINT) stops it without losing a request: deregister, wait until the
//! proxies have acknowledged, drain the sidecar, then stop the app (SIGTERM, SIGKILL
//! after the grace period).
//!
//! `--replicas MIN..MAX` runs several instances of the app, each with its own sidecar
//! and registration ([`instance`]), on consecutive ports, and scales between MIN and
//! MAX on what their sidecars measure ([`fleet`], [`scaler`], [`sample`]).

mod fleet;
mod instance;
mod intercept;
mod registry;
mod restarts;
mod sample;
mod scaler;
mod scaling;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// The service the app is (registered as <service>.<namespace>.svc.cluster.local).
    #[arg(long)]
    service: String,
    /// The port the app listens on at 127.0.0.1.
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The app's version: its `version` label (subsets select it).
    #[arg(long)]
    version: Option<String>,
    /// key=value (repeatable): the endpoint's labels, and the sidecar's.
    #[arg(long = "label", value_parser = crate::parse_label)]
    labels: Vec<(String, String)>,
    /// The control plane (default: $WEFT_SERVER, else http://127.0.0.1:15010).
    #[arg(long, env = "WEFT_SERVER", default_value = crate::ctl::DEFAULT_SERVER)]
    control_plane: String,
    /// A file holding the token the sidecar and the registration present (default $WEFT_TOKEN_FILE).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The mesh root an https:// control plane is verified with (default $WEFT_CA_FILE).
    #[arg(long, env = "WEFT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The sidecar's inbound listener, the address registered (default: a free port on 127.0.0.1).
    #[arg(long)]
    inbound: Option<SocketAddr>,
    /// The sidecar's outbound listener, the app's HTTP_PROXY (default: a free port on 127.0.0.1).
    #[arg(long)]
    outbound: Option<SocketAddr>,
    /// Ready when this path answers 2xx (default: when the port accepts).
    #[arg(long)]
    ready_path: Option<String>,
    /// How long the app may take to become ready.
    #[arg(long, default_value = "60s", value_parser = crate::parse_dur)]
    ready_timeout: Duration,
    /// The registration's TTL (heartbeats every third of it).
    #[arg(long, default_value = "15s", value_parser = crate::parse_dur)]
    ttl: Duration,
    /// Between the app's SIGTERM and its SIGKILL.
    #[arg(long, default_value = "10s", value_parser = crate::parse_dur)]
    grace: Duration,
    /// How long the proxies may take to acknowledge the deregistration on the way out.
    #[arg(long, default_value = "10s", value_parser = crate::parse_dur)]
    ack_timeout: Duration,
    /// Crashes within a minute that make a crash loop (the app is not started again).
    #[arg(long, default_value_t = 5)]
    max_restarts: usize,
    /// Transparent interception (Linux): the app runs in a network namespace of its own
    /// whose outbound TCP and DNS go to the sidecar (nftables rules; needs `ip` and `nft`;
    /// root, or user namespaces), instead of HTTP_PROXY. The app then calls mesh services by
    /// name (`http://reviews:9080/`) with no proxy settings.
    #[arg(long)]
    intercept: bool,
    /// Serve the app's metrics here (weft_app_up, weft_app_restarts_total, weft_app_last_exit_code).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Instances of the app: N, or MIN..MAX scaled on --target-concurrency or
    /// --target-p95 (1 to 64). Instance i listens on --port + i: `{port}` in the
    /// command's arguments and $PORT in its environment say which.
    #[arg(long, value_parser = scaling::parse_replicas)]
    replicas: Option<scaling::Replicas>,
    /// Scale to keep this many requests in progress per instance (a mean over each second).
    #[arg(long, requires = "replicas", conflicts_with = "target_p95", value_parser = scaling::parse_target)]
    target_concurrency: Option<f64>,
    /// Scale to keep the instances' 95th percentile request duration under this (at most 10s).
    #[arg(long, requires = "replicas", value_parser = crate::parse_dur)]
    target_p95: Option<Duration>,
    /// A step down goes no lower than the highest recommendation within this window.
    #[arg(long, default_value = "5m", value_parser = crate::parse_dur)]
    scale_down_window: Duration,
    /// A step up goes no higher than the lowest recommendation within this window.
    #[arg(long, default_value = "0s", value_parser = crate::parse_dur)]
    scale_up_window: Duration,
    /// The app and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    /// Under --replicas: which instance these arguments are (its sidecar's node and $PORT).
    #[arg(skip)]
    instance: Option<usize>,
    /// Under --replicas: the sidecar's admin address, where its counts are read.
    #[arg(skip)]
    sidecar_admin: Option<SocketAddr>,
}

pub fn run(a: RunArgs) -> ExitCode {
    if a.intercept {
        if let Err(e) = intercept::enter_user_namespace() {
            eprintln!("weft run: {e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(supervise(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft run: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn supervise(a: RunArgs) -> Result<(), String> {
    if a.replicas.is_some() {
        return fleet::supervise(a).await;
    }
    let app_status = status::AppStatus::new();
    if let Some(addr) = a.metrics {
        status::serve(addr, status::Page::One(app_status.clone())).await?;
    }
    let mut stop = stop_on_signals()?;
    instance::run(&a, &app_status, &mut stop).await
}

/// A stop that SIGTERM or SIGINT sets.
fn stop_on_signals() -> Result<instance::Stop, String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
        // (Held until the process ends: a dropped sender reads as a stop too.)
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

/// Refuses, before starting anything, what would make a run that cannot work.
fn check(a: &RunArgs, app: SocketAddr, inbound: SocketAddr, outbound: SocketAddr) -> Result<(), String> {
    if a.port == 0 {
        return Err("--port: the port the app listens on, 1 to 65535".into());
    }
    if a.intercept {
        if a.outbound.is_some() {
            return Err(format!("--outbound: with --intercept the outbound listener is {} in the app's namespace", intercept::OUTBOUND));
        }
        intercept::check_port(a.port)?;
    }
    for (flag, addr) in [("--inbound", inbound), ("--outbound", outbound)] {
        if addr.port() == a.port && (addr.ip().is_loopback() || addr.ip().is_unspecified()) {
            return Err(format!("{flag} {addr}: the app's own port (the sidecar would answer for the app)"));
        }
    }
    if inbound == outbound {
        return Err(format!("--inbound and --outbound are both {inbound}"));
    }
    if inbound.ip().is_unspecified() {
        return Err(format!("--inbound {inbound}: an address other proxies can reach (it is what is registered), not 0.0.0.0 or ::"));
    }
    // (The control plane's range: 1 s to 24 h.)
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&a.ttl) {
        return Err(format!("--ttl {:?}: 1s to 24h", a.ttl));
    }
    let _ = app;
    Ok(())
}

fn labels(a: &RunArgs) -> Vec<(String, String)> {
    let mut l = a.labels.clone();
    if let Some(v) = &a.version {
        l.retain(|(k, _)| k != "version");
        l.push(("version".into(), v.clone()));
    }
    l
}

fn spawn_sidecar(a: &RunArgs, inbound: SocketAddr, outbound: SocketAddr, netns: Option<&std::path::Path>) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find weft itself: {e}"))?;
    let mut node = format!("{}-{}-{}", a.service, crate::ctl::hostname(), std::process::id());
    if let Some(i) = a.instance {
        node = format!("{node}-{i}");
    }
    let mut cmd = Command::new(exe);
    cmd.args(["proxy", "--control-plane", &a.control_plane, "--node", &node, "--service", &a.service, "--namespace", &a.namespace]);
    cmd.args(["--listen", &outbound.to_string(), "--inbound", &inbound.to_string(), "--app", &format!("127.0.0.1:{}", a.port)]);
    if let Some(admin) = a.sidecar_admin {
        cmd.args(["--admin", &admin.to_string()]);
    }
    for (k, v) in labels(a) {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    if let Some(f) = &a.token_file {
        cmd.arg("--token-file").arg(f);
    }
    if let Some(f) = &a.ca_file {
        cmd.arg("--ca-file").arg(f);
    }
    if let Some(ns) = netns {
        // Mesh DNS inside the namespace, where its rules send the app's DNS.
        cmd.arg("--intercept-netns").arg(ns).args(["--dns", &intercept::DNS.to_string()]);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    die_with_supervisor(&mut cmd);
    cmd.spawn().map_err(|e| format!("cannot start the sidecar: {e}"))
}

fn spawn_app(a: &RunArgs, outbound: SocketAddr, net: &intercept::AppNet) -> Result<Child, String> {
    let (program, args) = a.command.split_first().ok_or("no command to run (after --)")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    match &net.0 {
        // Intercepted: no proxy settings (the namespace's rules do it).
        Some((_, ns)) => intercept::join_before_exec(&mut cmd, ns),
        None => proxy_env(&mut cmd, outbound),
    }
    if a.instance.is_some() {
        cmd.env("PORT", a.port.to_string());
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    // Its own process group: what it forks is stopped with it.
    cmd.process_group(0);
    die_with_supervisor(&mut cmd);
    cmd.spawn().map_err(|e| format!("cannot start {program:?}: {e}"))
}

/// HTTP_PROXY at the outbound listener; local calls (the app's own health checks) go
/// direct, beside what the user listed in NO_PROXY.
fn proxy_env(cmd: &mut Command, outbound: SocketAddr) {
    let proxy = format!("http://{outbound}");
    for k in ["HTTP_PROXY", "http_proxy"] {
        cmd.env(k, &proxy);
    }
    for k in ["NO_PROXY", "no_proxy"] {
        let mine = std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        cmd.env(k, mine.map_or_else(|| "localhost,127.0.0.1".to_owned(), |v| format!("{v},localhost,127.0.0.1")));
    }
}

/// The child is killed if `weft run` itself dies (even by SIGKILL): no app or sidecar is
/// left running, and registered, without its supervisor.
fn die_with_supervisor(cmd: &mut Command) {
    // SAFETY: between fork and exec only prctl(2) runs, which allocates nothing and
    // takes no lock (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Until `addr` accepts (the sidecar's listener), failing if the child exits first.
async fn wait_listening(net: &intercept::AppNet, addr: SocketAddr, limit: Duration, child: &mut Child) -> Result<(), String> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if net.connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("it exited: {s}"));
        }
        if tokio::time::Instant::now() >= end {
            return Err(format!("{addr} not listening after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until the app is ready: its port accepts, or `path` answers 2xx.
async fn ready(net: &intercept::AppNet, addr: SocketAddr, path: Option<&str>, limit: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(s) = net.connect(addr).await {
            match path {
                None => return Ok(()),
                Some(p) => {
                    if probe(s, addr, p).await.is_some_and(|code| (200..300).contains(&code)) {
                        return Ok(());
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= end {
            return Err(format!("the app was not ready within {limit:?} (port {}{})", addr.port(), path.unwrap_or("")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `GET path` (HTTP/1.0, 2 s at most): the status code.
async fn probe(mut s: tokio::net::TcpStream, addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n");
    let exchange = async {
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}
