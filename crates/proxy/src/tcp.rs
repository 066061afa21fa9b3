//! Opaque TCP (ServiceEntry ports `TCP`, `MONGO`, `MYSQL`, `REDIS`; VirtualService
//! `tcp[]`): the proxy listens on each such service port (on its listen address, or on
//! the service's VIPs) and tunnels each connection, byte for byte, to an endpoint of
//! the route's destination. See `weft_config::tcp_route` for the routing rules.
//!
//! The listeners follow the config: [`manage`] opens the ports a new config adds and
//! closes those it drops (connections already open run on). Per connection: the
//! cluster's `maxConnections` (circuit breaker), `connectTimeout`, outlier detection on
//! connect failures (another endpoint is tried, up to 3 in all), the
//! `connectionPool.tcp.idleTimeout` (no byte either way for that long closes both
//! sides), `istio_tcp_*` metrics, and drain on shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use weft_resilience::outlier::Observed;

use crate::state::Shared;

/// How often the listeners are compared with the config.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// Connect tries per connection (another endpoint after a failure).
const CONNECT_TRIES: usize = 3;

/// Keeps one listener open per TCP port of the running config until `stop`.
pub async fn manage(shared: &'static Shared, listen_ip: IpAddr, mut stop: watch::Receiver<bool>) {
    let mut open: HashMap<SocketAddr, tokio::task::AbortHandle> = HashMap::new();
    let mut failed: HashMap<SocketAddr, String> = HashMap::new();
    let mut seen_revision = u64::MAX;
    // The app's own port is never taken from it.
    let app_port = shared.inbound.as_ref().map(|i| i.app.port());
    loop {
        let rt = shared.current.load();
        if rt.revision != seen_revision {
            seen_revision = rt.revision;
            // A VIP is listened on only when it is a loopback address (or the listen
            // address itself): config never makes a proxy listen on other interfaces.
            let (wanted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = rt
                .snap
                .tcp_listeners
                .iter()
                .map(|l| SocketAddr::new(l.ip.unwrap_or(listen_ip), l.port))
                .partition(|a| (a.ip() == listen_ip || a.ip().is_loopback()) && Some(a.port()) != app_port);
            for addr in refused {
                if failed.insert(addr, "not loopback".into()).is_none() {
                    tracing::warn!(%addr, "tcp listener not opened: a VIP is listened on only when it is a loopback address, and never on the app's port");
                }
            }
            open.retain(|addr, task| {
                let keep = wanted.contains(addr);
                if !keep {
                    task.abort();
                    tracing::info!(%addr, "tcp listener closed (no TCP service on it any more)");
                }
                keep
            });
            failed.retain(|addr, why| wanted.contains(addr) || why == "not loopback");
            for addr in wanted {
                if open.contains_key(&addr) {
                    continue;
                }
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        tracing::info!(%addr, "tcp listener open");
                        failed.remove(&addr);
                        open.insert(addr, tokio::spawn(accept(shared, l)).abort_handle());
                    }
                    Err(e) => {
                        // Once per address and error: the next config revision tries again.
                        if failed.insert(addr, e.to_string()).as_deref() != Some(&e.to_string()) {
                            tracing::warn!(%addr, "cannot open the tcp listener: {e}");
                        }
                    }
                }
            }
        }
        drop(rt);
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    for task in open.values() {
        task.abort();
    }
}

/// The TCP service listening on `local`: the one with this VIP, else the one on the
/// proxy's own address and this port.
fn find_listener(snap: &weft_config::Snapshot, local: SocketAddr) -> Option<&weft_config::tcp_route::TcpListenerSpec> {
    let on_port = || snap.tcp_listeners.iter().filter(move |l| l.port == local.port());
    on_port().find(|l| l.ip == Some(local.ip())).or_else(|| on_port().find(|l| l.ip.is_none()))
}

/// The TCP service an intercepted connection to `orig` is for: one with that VIP and
/// port, or the service whose address (a mesh DNS answer: declared, or a virtual IP) it
/// is, on that port. (A connection to any other address is not the proxy's to route by
/// port.)
pub fn listener_for(shared: &Shared, orig: SocketAddr) -> Option<SocketAddr> {
    let rt = shared.current.load();
    if rt.snap.tcp_listeners.iter().any(|l| l.ip == Some(orig.ip()) && l.port == orig.port()) {
        return Some(orig);
    }
    let host = rt.vips.host_for(orig.ip())?;
    let l = rt.snap.tcp_listeners.iter().find(|l| l.service == host && l.port == orig.port())?;
    // Routed as the listener of that service would be (its VIP, or the listen address).
    Some(SocketAddr::new(l.ip.unwrap_or(orig.ip()), l.port))
}

/// Whether `ip` is an address the mesh gave a service (meaningless outside it): a VIP
/// of a TCP service, or one the mesh DNS answers with.
pub fn is_mesh_vip(shared: &Shared, ip: IpAddr) -> bool {
    let rt = shared.current.load();
    rt.vips.is_vip(ip) || rt.snap.tcp_listeners.iter().any(|l| l.ip == Some(ip))
}

async fn accept(shared: &'static Shared, listener: tokio::net::TcpListener) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                if let Some(pause) = crate::server::accept_backoff(&e) {
                    shared.metrics.counters.accept_exhausted.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        if crate::server::over_limit(shared) {
            shared.metrics.counters.downstream_overflow.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        shared.tunnels.spawn(serve(shared, stream, local, remote));
    }
}

/// Serves one client connection that arrived on `local` (the listener's address).
pub async fn serve<S>(shared: &'static Shared, mut down: S, local: SocketAddr, remote: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counters = &shared.metrics.counters;
    counters.downstream_connections.fetch_add(1, Ordering::Relaxed);
    counters.downstream_connections_active.fetch_add(1, Ordering::Relaxed);
    tunnel(shared, &mut down, local, remote).await;
    counters.downstream_connections_active.fetch_sub(1, Ordering::Relaxed);
}

async fn tunnel<S>(shared: &'static Shared, down: &mut S, local: SocketAddr, remote: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counters = &shared.metrics.counters;
    let rt = shared.current.load_full();
    let listener = find_listener(&rt.snap, local);
    let route = listener.and_then(|l| l.route(local.ip(), &shared.node.labels));
    let Some(route) = route else {
        counters.no_route.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%remote, %local, "tcp: no route; closed");
        return;
    };
    let target = route.targets.pick(fastrand::u32(..));
    let Some(cluster) = rt.clusters.get(target.cluster.resolve(local.port())).cloned() else { return };
    drop(rt);
    let Some(_permit) = cluster.breaker.tcp_connection() else {
        counters.overflow.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%remote, cluster = %cluster.spec.name, "tcp: maxConnections reached (UO); closed");
        return;
    };
    let mut up = None;
    for _ in 0..CONNECT_TRIES {
        let Some(i) = cluster.pick(None) else { break };
        let ep = cluster.endpoints[i].clone();
        let started = crate::cluster::now_ns();
        match crate::pool::connect(&ep).await {
            Ok(c) => {
                crate::outlier::report(shared, &cluster, &ep, Observed::Status(200), crate::cluster::now_ns() - started);
                up = Some((c, ep));
                break;
            }
            Err(e) => {
                counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
                crate::outlier::report(shared, &cluster, &ep, Observed::LocalOrigin, 0);
                tracing::warn!(%remote, endpoint = %ep.id, "tcp: {e}");
            }
        }
    }
    let Some((mut conn, ep)) = up else {
        counters.no_endpoint.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ep.metrics.tcp_connection(ep.dest, ep.peer, true);
    let idle = Some(cluster.spec.pool.idle_timeout).filter(|d| !d.is_zero());
    let (sent, received) = copy_both_ways(down, &mut conn, idle).await;
    ep.metrics.tcp_bytes(ep.dest, ep.peer, sent, received);
    ep.metrics.tcp_connection(ep.dest, ep.peer, false);
}

/// Copies both ways until both sides are done (each end's close passed on as a
/// half-close), an error, or `idle` with no byte either way. Returns (client → upstream,
/// upstream → client) byte counts.
pub async fn copy_both_ways<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut up, mut down) = (0u64, 0u64);
    let (mut a_open, mut b_open) = (true, true);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let forever = Duration::from_secs(365 * 24 * 3600);
    while a_open || b_open {
        let wait = tokio::time::sleep(idle.unwrap_or(forever));
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(&abuf[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            },
            r = br.read(&mut bbuf), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    if aw.write_all(&bbuf[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                }
            },
            _ = wait => {
                tracing::debug!("tcp: idle timeout; closed");
                break;
            }
        }
    }
    (up, down)
}
