//! Listeners and workers. Each worker is a thread with its own single-threaded tokio
//! runtime and its own `SO_REUSEPORT` listener on the shared address: the kernel
//! spreads connections, and a connection's requests, upstream connections and pool
//! stay on one core.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::time::Duration;
use tokio::sync::watch;

use crate::graceful::{GracefulShutdown, Watcher};
use crate::phases::{handle, ConnCtx};
use crate::request::Side;
use crate::state::Shared;
use crate::watchdog::{Closed, ConnSlot, Watched};
use weft_config::istio::MtlsMode;

/// Largest request head accepted; beyond it the client gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Binds `addr` (port 0 picks one) with `SO_REUSEPORT`, once per worker.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    bind_in(None, addr, workers)
}

/// [`bind`], in another network namespace when `ns` is given.
pub fn bind_in(
    ns: Option<&crate::netns::NetNs>,
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut out = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let l = crate::netns::listener(ns, addr)?;
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok((addr, out))
}

/// Runs one worker until `stop` turns true, then drains for at most `drain`: its
/// outbound listener, its inbound one when the proxy stands beside an app, and an
/// ingress gateway's TLS listener (`weft gateway --https`).
pub fn run_worker(
    shared: &'static Shared,
    worker: usize,
    listener: std::net::TcpListener,
    inbound: Option<std::net::TcpListener>,
    gateway_tls: Option<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
) {
    let drain = shared.drain;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {worker}: cannot start runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let builder: &'static crate::server::Builder = Box::leak(Box::new(builder(shared)));
        let graceful = GracefulShutdown::new();
        // Worker 0 also keeps the listeners of opaque TCP service ports (crate::tcp).
        let listen_ip = listener.local_addr().map(|a| a.ip());
        let tcp = async {
            // (Intercepting, the app reaches TCP services at their addresses through the
            // outbound listener: listeners on the machine's loopback would serve everyone
            // else on it as this app.)
            if let (0, Ok(ip), false) = (worker, listen_ip, shared.intercepting) {
                crate::tcp::manage(shared, ip, stop.clone()).await;
            }
        };
        let outbound = accept_loop(shared, worker, listener, Side::Outbound, builder, &graceful, stop.clone());
        let inbound = async {
            if let Some(l) = inbound {
                accept_loop(shared, worker, l, Side::Inbound, builder, &graceful, stop.clone()).await;
            }
        };
        let gateway_tls = async {
            if let Some(l) = gateway_tls {
                accept_loop(shared, worker, l, Side::GatewayTls(0), builder, &graceful, stop.clone()).await;
            }
        };
        tokio::join!(outbound, inbound, tcp, gateway_tls);
        // HTTP connections finish their requests; tunnels run on until they end. Both
        // within `drain`.
        let _ = tokio::time::timeout(drain, async {
            graceful.shutdown().await;
            shared.tunnels.wait().await;
        })
        .await;
    });
}

/// Accepts `listener`'s connections until `stop` turns true, serving each on its own task.
async fn accept_loop(
    shared: &'static Shared,
    worker: usize,
    listener: std::net::TcpListener,
    side: Side,
    builder: &'static crate::server::Builder,
    graceful: &GracefulShutdown,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("worker {worker}: {e}");
            return;
        }
    };
    let mut exhausted = false;
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (stream, remote) = match acc {
                    Ok(a) => {
                        exhausted = false;
                        a
                    }
                    Err(e) => {
                        if let Some(pause) = accept_backoff(&e) {
                            shared.metrics.counters.accept_exhausted.fetch_add(1, Ordering::Relaxed);
                            if !std::mem::replace(&mut exhausted, true) {
                                tracing::warn!("worker {worker}: accept: {e}; pausing {pause:?} between tries until it recovers");
                            }
                            tokio::time::sleep(pause).await;
                        }
                        continue;
                    }
                };
                if over_limit(shared) {
                    // Accepted and closed at once: the client learns now (and may try
                    // another proxy) while the connections already open are served.
                    shared.metrics.counters.downstream_overflow.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                match side {
                    // PeerAuthentication decides, per connection and in its own task:
                    // mTLS, plaintext, or either (detected from the first byte).
                    Side::Inbound => {
                        tokio::spawn(crate::inbound_tls::serve(shared, builder, graceful.watcher(), stream, remote, worker));
                    }
                    // An ingress gateway's TLS listener: the SNI picks the Gateway server.
                    Side::GatewayTls(_) => {
                        let watcher = graceful.watcher();
                        shared.tunnels.spawn(crate::gateway_tls::serve(shared, builder, watcher, stream, remote, worker));
                    }
                    Side::Outbound if shared.intercepting => {
                        let watcher = graceful.watcher();
                        shared.tunnels.spawn(crate::intercept::serve(shared, builder, watcher, stream, remote, worker));
                    }
                    Side::Outbound if shared.current.load().snap.tls_routes.is_empty() => {
                        tokio::spawn(connection(shared, builder, graceful, stream, remote, worker, side));
                    }
                    Side::Outbound => {
                        // VirtualService tls[] routes: a TLS ClientHello is passed through by SNI.
                        let watcher = graceful.watcher();
                        shared.tunnels.spawn(async move {
                            match crate::passthrough::first(&stream, shared).await {
                                crate::passthrough::First::Tls => crate::passthrough::serve(shared, stream, remote).await,
                                crate::passthrough::First::Other => {
                                    connection_watched(shared, builder, watcher, stream, remote, worker, side).await
                                }
                                crate::passthrough::First::Nothing => {}
                            }
                        });
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// The mTLS mode PeerAuthentication gives this proxy's app port now.
pub(crate) fn inbound_mode(shared: &Shared) -> MtlsMode {
    let Some(spec) = &shared.inbound else { return MtlsMode::Permissive };
    let rt = shared.current.load();
    weft_config::mtls::mode_for(&rt.snap.peer_authentication, &spec.namespace, &shared.node.labels, spec.app.port())
}

/// How long an accept loop pauses after `e`: out of file descriptors or memory
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the pending connection stays queued and
/// `accept` would fail again at once, spinning a core; anything else (a client that
/// reset before its accept) is that connection's own failure.
pub fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)).then_some(Duration::from_millis(100))
}

/// Whether the proxy already holds `--max-connections` client connections (across its
/// workers; a race between workers may let a few more in).
pub(crate) fn over_limit(shared: &Shared) -> bool {
    shared.max_connections > 0
        && shared.metrics.counters.downstream_connections_active.load(Ordering::Relaxed) >= shared.max_connections as u64
}

/// The client-facing HTTP server (h1 and h2c), with its executor.
pub type Builder = auto::Builder<StreamExecutor>;

/// Spawns each HTTP/2 stream's task boxed. hyper hands a stream's task over by value —
/// the request's whole future, ~2.9 KB — and tokio moved it three more times on its way
/// into the task (~2 k instructions of copying per h2c request, callgrind); boxed once,
/// those moves are of a pointer.
#[derive(Clone, Copy, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}

/// The client-facing HTTP server as configured: h1 and h2c on one port (hyper-util's
/// `auto`), made once per worker.
pub fn builder(_shared: &Shared) -> Builder {
    let mut b = auto::Builder::new(StreamExecutor);
    b.http1().max_buf_size(MAX_HEADER_BYTES);
    // The header timeout is the watchdog's ([`crate::watchdog`]), not hyper's: hyper
    // arms a timer for every request head, ~1.5 k instructions a request (6 %).
    b.http1().header_read_timeout(None);
    b.http2().timer(TokioTimer::new()).max_concurrent_streams(1024).enable_connect_protocol();
    b
}

/// One client connection, served until it ends (or `graceful` shuts it down), its
/// requests each through [`handle`]. Generic over the stream so that the in-process
/// harness ([`crate::testing`]) serves an in-memory stream through this same code.
pub fn connection<I>(
    shared: &'static Shared,
    builder: &'static crate::server::Builder,
    graceful: &GracefulShutdown,
    io: I,
    remote: SocketAddr,
    worker: usize,
    side: Side,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    connection_watched(shared, builder, graceful.watcher(), io, remote, worker, side)
}

/// [`connection`] with the shutdown watcher taken beforehand (so that it can start
/// on another task, after the passthrough check).
pub fn connection_watched<I>(
    shared: &'static Shared,
    builder: &'static crate::server::Builder,
    watcher: Watcher,
    io: I,
    remote: SocketAddr,
    worker: usize,
    side: Side,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ctx = ConnCtx { shared, remote, worker, side, peer: None };
    serve(builder, watcher, io, ctx, Accepted::count(shared))
}

/// A client connection, counted from accept (TLS handshake included) to close.
pub(crate) struct Accepted(&'static Shared);

impl Accepted {
    pub(crate) fn count(shared: &'static Shared) -> Accepted {
        let counters = &shared.metrics.counters;
        counters.downstream_connections.fetch_add(1, Ordering::Relaxed);
        counters.downstream_connections_active.fetch_add(1, Ordering::Relaxed);
        Accepted(shared)
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        self.0.metrics.counters.downstream_connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP on an accepted connection (plaintext, or TLS already terminated) with
/// `ctx` as what its requests share.
pub(crate) fn serve<I>(
    builder: &'static crate::server::Builder,
    watcher: Watcher,
    io: I,
    ctx: ConnCtx,
    accepted: Accepted,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shared = ctx.shared;
    let counters = &shared.metrics.counters;
    let slot = ConnSlot::watch(shared.idle_timeout, shared.header_read_timeout);
    let requests = slot.clone();
    let svc = service_fn(move |req| {
        requests.begin();
        handle(ctx.clone(), req)
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(Watched::new(io, slot.clone())), svc);
    let conn = watcher.watch(conn.into_owned());
    async move {
        let r = conn.await;
        let fired = slot.fired();
        slot.retire();
        match fired {
            Some(Closed::Idle) => {
                counters.downstream_idle_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Some(Closed::HeaderTimeout) => {
                counters.downstream_header_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                if let Err(e) = r {
                    classify(shared, &*e);
                }
            }
        }
        drop(accepted);
    }
}

/// Counts why a client connection ended in error.
fn classify(shared: &Shared, e: &(dyn std::error::Error + 'static)) {
    let c = &shared.metrics.counters;
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        // hyper-util's own errors: an unreadable preface and the like.
        c.bad_request.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if h.is_parse_too_large() {
        c.header_too_large.fetch_add(1, Ordering::Relaxed);
    } else if h.is_parse() || h.is_parse_status() {
        c.bad_request.fetch_add(1, Ordering::Relaxed);
    } else if h.is_incomplete_message() || h.is_canceled() || h.is_body_write_aborted() {
        c.downstream_reset.fetch_add(1, Ordering::Relaxed);
    } else if h.is_timeout() {
        c.bad_request.fetch_add(1, Ordering::Relaxed);
    } else {
        tracing::debug!("client connection error: {h}");
    }
}
