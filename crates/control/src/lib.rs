//! weft's control plane: a durable config store with revisions ([`store`]), the
//! registry of service endpoints ([`registry`]), and the HTTP API that `weft apply`,
//! `weft get`, `weft register` and the others speak ([`api`]).

mod admission;
pub mod api;
pub mod api_trace;
pub mod auth;
mod body;
pub mod console;
pub mod etcd;
mod group;
pub mod mesh;
pub mod plane;
pub mod proxies;
mod push;
pub mod registration;
pub mod replicas;
pub mod store;
mod tls;
pub mod token_uses;
pub mod zookeeper;

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub struct Options {
    pub store: StoreKind,
    pub listen: SocketAddr,
    pub access: Access,
    /// The mesh CA's directory and trust domain (with tokens only: under `--insecure`
    /// nobody could be told apart, so no identities are issued).
    pub ca: Option<(PathBuf, String)>,
    /// Extra names (DNS names or addresses) the API's certificate is valid for, beside
    /// the listen address, `localhost` and the machine's hostname (`--api-name`).
    pub api_names: Vec<String>,
    /// Spans of the API's calls to an OTLP collector (`--otlp-endpoint`).
    pub tracing: Option<api_trace::TraceOptions>,
    /// ZooKeeper as a discovery source (`--zookeeper`).
    pub zookeeper: Option<zookeeper::Options>,
    /// API connections held at once (`--max-connections`, [`MAX_API_CONNECTIONS`]).
    pub max_connections: usize,
}

/// Who may call the API.
pub enum Access {
    /// Bearer tokens signed with the key in `key` (made on first start, with an admin
    /// token written to `first_admin`).
    Tokens { key: PathBuf, first_admin: Option<PathBuf> },
    /// Everyone may do everything (local demos only).
    Insecure,
}

pub enum StoreKind {
    /// One redb file in this directory.
    Embedded(PathBuf),
    /// An etcd cluster (client URLs) and the key prefix weft's data lives under.
    Etcd { endpoints: Vec<String>, prefix: String, checkpoint_every: u64 },
}

/// API connections held at once by default: a proxy keeps two (its long poll, and one
/// idle for its reports and, on demand, its asks), so ~4,000 proxies plus the CLI's.
/// (The process's file-descriptor limit must allow as many.)
pub const MAX_API_CONNECTIONS: usize = 8192;
/// A request head must arrive within this (nginx's `client_header_timeout`).
pub const API_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the control plane until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<(), String> {
    // One thread: measured with 1,000 streams, two threads pushed no faster on two cores.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let (store, follow, place) = match &opts.store {
            StoreKind::Embedded(dir) => {
                (store::Store::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?, None, format!("data in {}", dir.display()))
            }
            StoreKind::Etcd { endpoints, prefix, checkpoint_every } => {
                let at = format!("etcd {} under {prefix}", endpoints.join(","));
                let mut e = etcd::Etcd::connect(endpoints, prefix, *checkpoint_every).await.map_err(|e| format!("{at}: {e}"))?;
                let snap = e.load().await.map_err(|e| format!("{at}: {e}"))?;
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(e.clone().follow(snap.etcd_revision, tx));
                let alive = snap.alive.clone();
                (store::Store::on_etcd(e, snap), Some((rx, alive)), at)
            }
        };
        let auth = match &opts.access {
            Access::Tokens { key, first_admin } => {
                let (auth, made) = auth::Auth::load_or_create(key, first_admin.as_deref())?;
                match (made, first_admin) {
                    (true, Some(admin)) => tracing::info!("new token key {}; an admin token is in {}", key.display(), admin.display()),
                    (true, None) => tracing::info!("new token key {}", key.display()),
                    (false, _) => {}
                }
                Some(auth)
            }
            Access::Insecure => {
                tracing::warn!("--insecure: the API asks nobody for credentials; anyone who reaches {} can change the mesh", opts.listen);
                None
            }
        };
        let ca = match (&opts.ca, &auth) {
            (Some((dir, td)), Some(_)) => {
                let ca = weft_tls::Ca::load_or_create(dir, td).map_err(|e| format!("the mesh CA in {}: {e}", dir.display()))?;
                tracing::info!("mesh CA for trust domain {td} in {} (roots in {})", dir.display(), dir.join("root-cert.pem").display());
                Some(ca)
            }
            (None, Some(_)) => {
                tracing::warn!("no mesh CA (give --ca-dir): the API is plain HTTP and tokens cross the network in clear text");
                None
            }
            _ => None,
        };
        let mut plane = plane::Plane::new(store);
        if let Some((_, alive)) = &follow {
            // Leases that ran out while no control plane was watching.
            if let Err(e) = plane.expire_dead_leases(alive).await {
                tracing::warn!("expiring registrations: {e}");
            }
        }
        let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // With a CA the API is HTTPS, its certificate re-issued at each start.
        let acceptor = match &ca {
            Some(ca) => Some(tls::acceptor(ca, addr, &opts.api_names)?),
            None => None,
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        tracing::info!("control plane listening on {scheme}://{addr} ({place}, revision {})", plane.revision());
        let server = api::Server::with_security(plane, auth, ca);
        if let Some(t) = &opts.tracing {
            let _ = server.tracer.set(api_trace::ApiTracer::start(t)?);
        }
        tokio::spawn(server.clone().expire_loop());
        tokio::spawn(server.clone().push_loop());
        if let Some(zk) = opts.zookeeper {
            let stats = std::sync::Arc::new(zookeeper::Stats::default());
            let _ = server.zookeeper.set(stats.clone());
            tokio::spawn(zookeeper::follow(server.clone(), zk, stats));
        }
        if let Some((rx, _)) = follow {
            tokio::spawn(server.clone().follow_remote(rx));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut exhausted = 0u64;
        let admission = admission::Admission::new(admission::Limits::for_total(opts.max_connections));
        let _ = server.admission.set(admission.clone());
        loop {
            tokio::select! {
                acc = listener.accept() => {
                    let (stream, from) = match acc {
                        Ok(accepted) => {
                            exhausted = 0;
                            accepted
                        }
                        Err(e) => {
                            // Out of file descriptors: pause rather than spin on the queued connection.
                            if let Some(pause) = accept_backoff(&e) {
                                if exhausted == 0 {
                                    tracing::warn!("accept: {e}; pausing {pause:?} between tries until it recovers");
                                }
                                exhausted += 1;
                                tokio::time::sleep(pause).await;
                            }
                            continue;
                        }
                    };
                    // A place among the connections held, made by closing an unproven one
                    // when needed; none when every one held is proven (closed at accept).
                    let Some(ticket) = admission.admit(from.ip()) else {
                        drop(stream);
                        continue;
                    };
                    let ticket = std::sync::Arc::new(ticket);
                    server.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (server, acceptor) = (server.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(server, acceptor, stream, Some(ticket.clone())) => {}
                            _ = ticket.closed_for_room() => {}
                        }
                    });
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        Ok(())
    })
}

/// Serves one connection: the TLS handshake first when the API is HTTPS (bounded, in
/// this connection's task, so a slow or silent client holds up nobody), then HTTP/1.1.
/// A call with valid credentials proves the connection to `ticket`.
async fn serve(
    server: std::sync::Arc<api::Server>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
    ticket: Option<std::sync::Arc<admission::Ticket>>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // A request head — the first, or the next on a kept-alive connection — within 60 s.
    // (A watch's long poll is the server's wait, not the client's: it is not cut.)
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(API_HEADER_TIMEOUT);
    match acceptor {
        None => {
            let svc = service_fn(move |req| server.clone().handle(with_ticket(req, &ticket), None));
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        }
        Some(acceptor) => {
            if let Some(tls) = tls::handshake(&acceptor, stream).await {
                // A proxy presents its workload certificate (verified against the mesh root
                // in the handshake): it may then call as that workload without a token.
                let peer = std::sync::Arc::new(weft_tls::peer_identity(tls.get_ref().1));
                // A workload certificate of this mesh (verified against its root in the
                // handshake) proves the connection at once: a proxy's spare connection
                // waits idle for its next ask and is not closed to make room.
                if let (Some(id), Some(ca), Some(t)) = (&*peer, &server.ca, &ticket) {
                    if id.trust_domain() == ca.trust_domain() {
                        t.prove(&auth::Principal::workload_name(id.namespace(), id.service_account()), true);
                    }
                }
                let svc = service_fn(move |req| server.clone().handle(with_ticket(req, &ticket), (*peer).clone()));
                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
            }
        }
    }
}

fn with_ticket<B>(mut req: hyper::Request<B>, ticket: &Option<std::sync::Arc<admission::Ticket>>) -> hyper::Request<B> {
    if let Some(t) = ticket {
        req.extensions_mut().insert(t.clone());
    }
    req
}

/// How long the accept loop pauses after `e`: out of file descriptors or memory
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the queued connection stays queued and
/// `accept` fails again at once, spinning a core; other errors are one client's.
fn accept_backoff(e: &std::io::Error) -> Option<std::time::Duration> {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)).then_some(std::time::Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that sends no request head — at first, or after an answered request
    /// — is closed after 60 s (tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn an_api_connection_without_a_request_head_is_closed_after_60_s() {
        let dir = std::env::temp_dir().join(format!("weft-cp-idle-{}", std::process::id()));
        let plane = crate::plane::Plane::new(crate::store::Store::open(&dir).unwrap());
        let server = crate::api::Server::new(plane);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(super::serve(server.clone(), None, stream, None));
            }
        });
        let start = tokio::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 512];
        let n = silent.read(&mut buf).await.unwrap_or(0);
        assert!(n == 0 || buf.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(60) && took < Duration::from_secs(61), "{took:?}");
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /v1/status HTTP/1.1\r\nhost: cp\r\n\r\n").await.unwrap();
        let n = kept.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        let idle = tokio::time::Instant::now();
        let mut rest = Vec::new();
        let _ = kept.read_to_end(&mut rest).await;
        let took = idle.elapsed();
        assert!(took >= Duration::from_secs(60) && took < Duration::from_secs(61), "{took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
