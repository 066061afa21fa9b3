//! `weft run`: an app and its sidecar under one supervisor, on a machine without
//! Kubernetes. It starts the sidecar (`weft proxy` following the control plane: an
//! inbound listener in front of the app, an outbound one the app calls through), starts
//! the app with `HTTP_PROXY` pointing at the outbound listener, waits until the app is
//! ready, registers the inbound address with a TTL and keeps it alive. A crashed app is
//! deregistered and started again after a back-off ([`restarts`]); a crash loop ends it.
//! SIGTERM (or SIGINT) stops it without losing a request: deregister, wait until the
//! proxies have acknowledged, drain the sidecar, then stop the app (SIGTERM, SIGKILL
//! after the grace period).

mod intercept;
mod registry;
mod restarts;
mod status;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::ctl::ServerArg;
use registry::Endpoint;
use restarts::Restarts;

#[derive(clap::Args)]
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
    /// The app and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
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

/// What ended a watch over the running app.
enum Event {
    Stop,
    AppExited(std::io::Result<ExitStatus>),
    SidecarExited(std::io::Result<ExitStatus>),
}

async fn supervise(a: RunArgs) -> Result<(), String> {
    let app_addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    // (In its own namespace under --intercept, the app's port is free by construction.)
    if !a.intercept && TcpStream::connect_timeout(&app_addr, Duration::from_millis(200)).is_ok() {
        return Err(format!("port {} is already taken on 127.0.0.1: something else listens there", a.port));
    }
    let inbound = a.inbound.map_or_else(free_addr, Ok)?;
    let outbound = match (a.outbound, a.intercept) {
        (Some(o), _) => o,
        (None, true) => intercept::OUTBOUND,
        (None, false) => free_addr()?,
    };
    check(&a, app_addr, inbound, outbound)?;
    let net = intercept::AppNet(if a.intercept { Some(intercept::create(a.port)?) } else { None });
    let netns = net.0.as_ref().map(|(ns, _)| ns.path().to_path_buf());
    let mut sidecar = spawn_sidecar(&a, inbound, outbound, netns.as_deref())?;
    if let Err(e) = wait_listening(&net, outbound, Duration::from_secs(30), &mut sidecar).await {
        stop(&mut sidecar, Duration::from_secs(5)).await;
        return Err(format!("the sidecar did not start: {e}"));
    }
    let app_status = status::AppStatus::new();
    if let Some(addr) = a.metrics {
        if let Err(e) = status::serve(addr, app_status.clone()).await {
            stop(&mut sidecar, Duration::from_secs(5)).await;
            return Err(e);
        }
    }
    let mut endpoint = Endpoint { server: server(&a), registration: registration(&a, inbound) };
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut restarts = Restarts::new(a.max_restarts, Duration::from_secs(60));
    loop {
        let mut app = match spawn_app(&a, outbound, &net) {
            Ok(app) => app,
            Err(e) => {
                stop(&mut sidecar, Duration::from_secs(5)).await;
                return Err(e);
            }
        };
        let app_group = app.id();
        let event = tokio::select! {
            r = ready(&net, app_addr, a.ready_path.as_deref(), a.ready_timeout) => match r {
                Ok(()) => match blocking({ let e = endpoint.clone(); move || e.register() }).await {
                    Ok(rev) => {
                        app_status.up.store(true, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("weft run: {} ready, registered {inbound} (revision {rev})", a.service);
                        watch(&endpoint, &a, &mut app, &mut sidecar, &mut term, &mut int, true).await
                    }
                    // The control plane refused it (a token for another service, a bad value): no use going on.
                    Err(e) if registry::refused(&e) => {
                        stop_all(&mut app, &mut sidecar, a.grace).await;
                        return Err(format!("registering {inbound}: {e}"));
                    }
                    // Away: the app runs; registered at the next heartbeat that reaches it.
                    Err(e) => {
                        app_status.up.store(true, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("weft run: {} ready; registering {inbound}: {e} (tried again every {:?})", a.service, a.ttl / 3);
                        watch(&endpoint, &a, &mut app, &mut sidecar, &mut term, &mut int, false).await
                    }
                },
                Err(e) => {
                    stop_all(&mut app, &mut sidecar, a.grace).await;
                    return Err(e);
                }
            },
            status = app.wait() => Event::AppExited(status),
            _ = term.recv() => Event::Stop,
            _ = int.recv() => Event::Stop,
        };
        match event {
            Event::Stop => return graceful(&endpoint, &mut app, &mut sidecar, &a).await,
            Event::SidecarExited(s) => {
                let _ = blocking({
                    let e = endpoint.clone();
                    move || e.deregister()
                })
                .await;
                stop(&mut app, a.grace).await;
                return Err(format!("the sidecar exited ({}): the app was stopped", shown(&s)));
            }
            Event::AppExited(s) => {
                app_status.exited(&s);
                // What the app forked and left running would answer for a restarted one.
                if let Some(pgid) = app_group {
                    send(pgid, libc::SIGKILL, true);
                }
                let _ = blocking({
                    let e = endpoint.clone();
                    move || e.deregister()
                })
                .await;
                if s.as_ref().is_ok_and(|s| s.success()) {
                    stop(&mut sidecar, Duration::from_secs(15)).await;
                    eprintln!("weft run: {} exited with success: done", a.service);
                    return Ok(());
                }
                let Some(wait) = restarts.crashed(Instant::now()) else {
                    stop(&mut sidecar, Duration::from_secs(15)).await;
                    return Err(format!(
                        "{} crashed {} times within a minute ({}): a crash loop, not started again",
                        a.service,
                        restarts.recent(),
                        shown(&s)
                    ));
                };
                eprintln!("weft run: {} exited ({}); deregistered, starting it again in {wait:?}", a.service, shown(&s));
                app_status.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                endpoint.registration.labels = labels(&a).into_iter().chain(app_status.labels()).collect();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = term.recv() => { stop(&mut sidecar, Duration::from_secs(15)).await; return Ok(()); }
                    _ = int.recv() => { stop(&mut sidecar, Duration::from_secs(15)).await; return Ok(()); }
                }
            }
        }
    }
}

/// Refuses, before starting anything, what would make a run that cannot work.
fn check(a: &RunArgs, app: SocketAddr, inbound: SocketAddr, outbound: SocketAddr) -> Result<(), String> {
    if a.port == 0 {
        return Err("--port: the port the app listens on, 1 to 65535".into());
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

/// Heartbeats while the app runs, until it or the sidecar exits or a stop is asked for.
async fn watch(
    endpoint: &Endpoint,
    a: &RunArgs,
    app: &mut Child,
    sidecar: &mut Child,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
    mut registered: bool,
) -> Event {
    let every = (a.ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                let e = endpoint.clone();
                let beat = move || match registered {
                    true => e.heartbeat().and_then(|alive| if alive { Ok(()) } else { e.register().map(|_| ()) }),
                    false => e.register().map(|_| ()),
                };
                match blocking(beat).await {
                    Ok(()) => registered = true,
                    // The control plane away: the registration lives out its TTL; try again next beat.
                    Err(e) => eprintln!("weft run: heartbeat: {e}"),
                }
            }
            status = app.wait() => return Event::AppExited(status),
            status = sidecar.wait() => return Event::SidecarExited(status),
            _ = term.recv() => return Event::Stop,
            _ = int.recv() => return Event::Stop,
        }
    }
}

/// The way out that loses no request: deregister, wait for the proxies to know, drain
/// the sidecar, stop the app.
async fn graceful(endpoint: &Endpoint, app: &mut Child, sidecar: &mut Child, a: &RunArgs) -> Result<(), String> {
    let limit = a.ack_timeout;
    let e = endpoint.clone();
    match blocking(move || e.deregister().map(|rev| (rev, e.wait_acknowledged(rev, limit)))).await {
        Ok((rev, true)) => eprintln!("weft run: deregistered (revision {rev}), acknowledged by the proxies"),
        Ok((rev, false)) => eprintln!("weft run: deregistered (revision {rev}); not every proxy acknowledged within {limit:?}"),
        Err(e) if e.contains("answered 404") => eprintln!("weft run: nothing was registered"),
        Err(e) => eprintln!("weft run: deregistering: {e} (the registration will expire)"),
    }
    stop(sidecar, Duration::from_secs(15)).await;
    stop(app, a.grace).await;
    Ok(())
}

async fn stop_all(app: &mut Child, sidecar: &mut Child, grace: Duration) {
    stop(app, grace).await;
    stop(sidecar, Duration::from_secs(15)).await;
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`: the sidecar itself; the
/// app's whole process group (it leads one: what it forked goes too, even once it exited).
async fn stop(child: &mut Child, grace: Duration) {
    let group = child.id().filter(|_| is_app(child));
    if let Some(pid) = child.id() {
        send(pid, libc::SIGTERM, group.is_some());
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Some(pgid) = group {
        send(pgid, libc::SIGKILL, true);
    }
}

/// Whether `child` leads its own process group (the app does; the sidecar does not).
fn is_app(child: &Child) -> bool {
    // SAFETY: getpgid(2) on our own child's pid, not yet reaped (it has an id).
    child.id().is_some_and(|pid| unsafe { libc::getpgid(pid as libc::pid_t) } == pid as libc::pid_t)
}

/// `sig` to `pid`, or to the process group it leads.
fn send(pid: u32, sig: libc::c_int, group: bool) {
    let target = if group { -(pid as libc::pid_t) } else { pid as libc::pid_t };
    // SAFETY: kill(2) on our own child or its group, with a valid signal; nothing else.
    unsafe {
        libc::kill(target, sig);
    }
}

fn shown(s: &std::io::Result<ExitStatus>) -> String {
    match s {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))
}

fn server(a: &RunArgs) -> ServerArg {
    ServerArg { server: a.control_plane.clone(), token_file: a.token_file.clone(), ca_file: a.ca_file.clone() }
}

fn labels(a: &RunArgs) -> Vec<(String, String)> {
    let mut l = a.labels.clone();
    if let Some(v) = &a.version {
        l.retain(|(k, _)| k != "version");
        l.push(("version".into(), v.clone()));
    }
    l
}

fn registration(a: &RunArgs, inbound: SocketAddr) -> weft_api::Registration {
    weft_api::Registration {
        service: a.service.clone(),
        namespace: Some(a.namespace.clone()),
        address: inbound.to_string(),
        labels: labels(a).into_iter().collect(),
        locality: None,
        weight: None,
        ttl_ms: Some(a.ttl.as_millis() as u64),
        identity: None,
    }
}

fn spawn_sidecar(a: &RunArgs, inbound: SocketAddr, outbound: SocketAddr, netns: Option<&std::path::Path>) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find weft itself: {e}"))?;
    let node = format!("{}-{}-{}", a.service, crate::ctl::hostname(), std::process::id());
    let mut cmd = Command::new(exe);
    cmd.args(["proxy", "--control-plane", &a.control_plane, "--node", &node, "--service", &a.service, "--namespace", &a.namespace]);
    cmd.args(["--listen", &outbound.to_string(), "--inbound", &inbound.to_string(), "--app", &format!("127.0.0.1:{}", a.port)]);
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
        cmd.arg("--intercept-netns").arg(ns);
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
