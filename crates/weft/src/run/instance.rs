//! One instance of the app under `weft run` (moved from the supervisor whole): its
//! sidecar, the app started and made ready, registered and heartbeated, restarted with
//! a back-off after a crash, and the graceful way out when asked to stop — deregister,
//! wait for the proxies' acknowledgement, drain the sidecar, stop the app.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::watch;

use super::registry::{self, Endpoint};
use super::restarts::Restarts;
use super::status::AppStatus;
use super::{check, intercept, labels, ready, spawn_app, spawn_sidecar, wait_listening, RunArgs};
use crate::ctl::ServerArg;

/// Set to true to stop an instance the graceful way.
pub type Stop = watch::Receiver<bool>;

/// Until a stop is asked for (or whoever could ask is gone).
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What ended a watch over the running app.
enum Event {
    Stop,
    AppExited(std::io::Result<ExitStatus>),
    SidecarExited(std::io::Result<ExitStatus>),
}

/// Runs the instance `a` describes until it ends: a stop (Ok), the app's success (Ok), a
/// crash loop, a refused registration or the sidecar's exit (Err).
pub async fn run(a: &RunArgs, app_status: &Arc<AppStatus>, stop: &mut Stop) -> Result<(), String> {
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
    check(a, app_addr, inbound, outbound)?;
    let net = intercept::AppNet(if a.intercept { Some(intercept::create(a.port)?) } else { None });
    let netns = net.0.as_ref().map(|(ns, _)| ns.path().to_path_buf());
    let mut sidecar = spawn_sidecar(a, inbound, outbound, netns.as_deref())?;
    if let Err(e) = wait_listening(&net, outbound, Duration::from_secs(30), &mut sidecar).await {
        stop_child(&mut sidecar, Duration::from_secs(5)).await;
        return Err(format!("the sidecar did not start: {e}"));
    }
    let mut endpoint = Endpoint { server: server(a), registration: registration(a, inbound) };
    let mut restarts = Restarts::new(a.max_restarts, Duration::from_secs(60));
    loop {
        let mut app = match spawn_app(a, outbound, &net) {
            Ok(app) => app,
            Err(e) => {
                stop_child(&mut sidecar, Duration::from_secs(5)).await;
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
                        watch(&endpoint, a, &mut app, &mut sidecar, stop, true).await
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
                        watch(&endpoint, a, &mut app, &mut sidecar, stop, false).await
                    }
                },
                Err(e) => {
                    stop_all(&mut app, &mut sidecar, a.grace).await;
                    return Err(e);
                }
            },
            status = app.wait() => Event::AppExited(status),
            _ = stopped(stop) => Event::Stop,
        };
        match event {
            Event::Stop => return graceful(&endpoint, &mut app, &mut sidecar, a).await,
            Event::SidecarExited(s) => {
                let _ = blocking({
                    let e = endpoint.clone();
                    move || e.deregister()
                })
                .await;
                stop_child(&mut app, a.grace).await;
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
                    stop_child(&mut sidecar, Duration::from_secs(15)).await;
                    eprintln!("weft run: {} exited with success: done", a.service);
                    return Ok(());
                }
                let Some(wait) = restarts.crashed(Instant::now()) else {
                    stop_child(&mut sidecar, Duration::from_secs(15)).await;
                    return Err(format!(
                        "{} crashed {} times within a minute ({}): a crash loop, not started again",
                        a.service,
                        restarts.recent(),
                        shown(&s)
                    ));
                };
                eprintln!("weft run: {} exited ({}); deregistered, starting it again in {wait:?}", a.service, shown(&s));
                app_status.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                endpoint.registration.labels = labels(a).into_iter().chain(app_status.labels()).collect();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => { stop_child(&mut sidecar, Duration::from_secs(15)).await; return Ok(()); }
                }
            }
        }
    }
}

/// Heartbeats while the app runs, until it or the sidecar exits or a stop is asked for.
async fn watch(endpoint: &Endpoint, a: &RunArgs, app: &mut Child, sidecar: &mut Child, stop: &mut Stop, mut registered: bool) -> Event {
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
            _ = stopped(stop) => return Event::Stop,
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
    stop_child(sidecar, Duration::from_secs(15)).await;
    stop_child(app, a.grace).await;
    Ok(())
}

async fn stop_all(app: &mut Child, sidecar: &mut Child, grace: Duration) {
    stop_child(app, grace).await;
    stop_child(sidecar, Duration::from_secs(15)).await;
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`: the sidecar itself; the
/// app's whole process group (it leads one: what it forked goes too, even once it exited).
async fn stop_child(child: &mut Child, grace: Duration) {
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

pub fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))
}

fn server(a: &RunArgs) -> ServerArg {
    ServerArg { server: a.control_plane.clone(), token_file: a.token_file.clone(), ca_file: a.ca_file.clone() }
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
