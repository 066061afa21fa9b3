//! TLS passthrough (VirtualService `tls[]`): a listener connection whose first byte
//! starts a TLS handshake record is routed by its ClientHello's SNI and the listener
//! port, and tunnelled byte for byte to an endpoint of the route's destination. No
//! termination: weft never holds the keys or sees the requests. Only listeners whose
//! config has `tls[]` routes look at the first byte (one `peek`); others go straight
//! to the HTTP server. A ClientHello with no SNI, or none that a route takes, is closed.
//! The records that carry it (one, or several for a large or fragmented one) are
//! forwarded as they came.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sni::{client_hello_sni, handshake_record_len, HelloAssembler, Progress, RECORD_HEADER};
use crate::state::Shared;

/// What a new connection starts with.
pub enum First {
    Tls,
    Other,
    /// Nothing arrived within the header timeout, or the connection failed.
    Nothing,
}

/// Peeks at the first byte (it stays in the socket for whoever reads next).
pub async fn first(stream: &TcpStream, shared: &Shared) -> First {
    let mut b = [0u8; 1];
    let wait = shared.header_read_timeout.unwrap_or(Duration::from_secs(60));
    match tokio::time::timeout(wait, stream.peek(&mut b)).await {
        Ok(Ok(1)) if b[0] == 0x16 => First::Tls,
        Ok(Ok(1)) => First::Other,
        _ => First::Nothing,
    }
}

/// Serves one TLS connection: read the ClientHello record, route by SNI, tunnel.
pub async fn serve(shared: &'static Shared, mut down: TcpStream, remote: SocketAddr) {
    let counters = &shared.metrics.counters;
    counters.downstream_connections.fetch_add(1, Ordering::Relaxed);
    counters.downstream_connections_active.fetch_add(1, Ordering::Relaxed);
    let port = down.local_addr().map(|a| a.port()).unwrap_or(0);
    let wait = shared.header_read_timeout.unwrap_or(Duration::from_secs(60));
    match tokio::time::timeout(wait, hello(&mut down)).await {
        Ok(Some(rec)) => tunnel(shared, down, remote, port, &rec).await,
        Ok(None) => tracing::debug!(%remote, "tls passthrough: not a ClientHello (or over 64 KiB, or in over 16 records); closed"),
        Err(_) => {
            counters.downstream_header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
    counters.downstream_connections_active.fetch_sub(1, Ordering::Relaxed);
}

/// A ClientHello, read: the records as they came (to forward unchanged) and the
/// handshake message they carry.
pub(crate) struct Hello {
    pub records: Vec<u8>,
    pub message: HelloAssembler,
}

impl Hello {
    /// Its SNI, lower case.
    pub fn sni(&self) -> Option<String> {
        client_hello_sni(self.message.message()).map(str::to_ascii_lowercase)
    }
}

/// The handshake records that carry the ClientHello (one, or a few for a large or
/// fragmented one; bounded by [`crate::sni`]'s limits).
pub(crate) async fn hello<S: tokio::io::AsyncRead + Unpin>(down: &mut S) -> Option<Hello> {
    let mut h = Hello { records: Vec::with_capacity(512), message: HelloAssembler::default() };
    loop {
        let mut head = [0u8; RECORD_HEADER];
        down.read_exact(&mut head).await.ok()?;
        let len = handshake_record_len(&head)?;
        let start = h.records.len();
        h.records.extend_from_slice(&head);
        h.records.resize(start + RECORD_HEADER + len, 0);
        down.read_exact(&mut h.records[start + RECORD_HEADER..]).await.ok()?;
        match h.message.push(&h.records[start + RECORD_HEADER..]) {
            Progress::Done => return Some(h),
            Progress::More => continue,
            Progress::Invalid => return None,
        }
    }
}

/// Routes a read ClientHello by its SNI and `port` (closed when no route takes it).
pub(crate) async fn route(shared: &'static Shared, down: TcpStream, remote: SocketAddr, port: u16, hello: &Hello) {
    tunnel(shared, down, remote, port, hello).await
}

async fn tunnel(shared: &'static Shared, down: TcpStream, remote: SocketAddr, port: u16, hello: &Hello) {
    let Some(sni) = hello.sni() else {
        tracing::info!(%remote, "tls passthrough: ClientHello without SNI; closed");
        return;
    };
    let ep = {
        let rt = shared.current.load();
        let Some(route) = rt.snap.tls_route(&sni, port) else {
            tracing::info!(%remote, sni, port, "tls passthrough: no tls route for this SNI; closed");
            return;
        };
        let Some(ep) = endpoint(&rt, route, port, remote, &sni) else { return };
        ep
    };
    forward(shared, down, ep, &hello.records, remote, &sni).await;
}

/// An endpoint of a destination `route` picks (`port`: the listener's, choosing among
/// a destination's ports); none (logged) when the cluster has no healthy one.
pub(crate) fn endpoint(
    rt: &crate::state::Runtime,
    route: &weft_config::tls_route::TlsRouteSpec,
    port: u16,
    remote: SocketAddr,
    sni: &str,
) -> Option<std::sync::Arc<crate::cluster::Endpoint>> {
    let target = route.targets.pick(fastrand::u32(..));
    let cluster = rt.clusters.get(target.cluster.resolve(port))?;
    let Some(i) = cluster.pick(None) else {
        tracing::info!(%remote, sni, cluster = %cluster.spec.name, "tls passthrough: no healthy endpoint; closed");
        return None;
    };
    Some(cluster.endpoints[i].clone())
}

/// Connects to `ep`, sends the ClientHello's records as they came, then copies bytes
/// both ways until either side ends.
pub(crate) async fn forward(
    shared: &'static Shared,
    mut down: TcpStream,
    ep: std::sync::Arc<crate::cluster::Endpoint>,
    rec: &[u8],
    remote: SocketAddr,
    sni: &str,
) {
    let mut up = match crate::pool::connect(&ep).await {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, sni, endpoint = %ep.id, "tls passthrough: {e}");
            return;
        }
    };
    ep.metrics.tcp_connection(ep.dest, ep.peer, true);
    if up.write_all(rec).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    }
    ep.metrics.tcp_connection(ep.dest, ep.peer, false);
}
