//! An ingress gateway's TLS listener (`weft gateway --https`): each connection's
//! ClientHello is read whole (the records as they came, bounded as passthrough's),
//! its SNI picks the Gateway server ([`weft_config::gateway::GatewayListeners::tls_server`]),
//! and then
//! - a PASSTHROUGH server: the connection goes, bytes untouched, to the `tls[]` route
//!   that SNI takes (the records read are forwarded first), as [`crate::passthrough`];
//! - a SIMPLE / MUTUAL server: the records are replayed into a rustls handshake with
//!   that server's config (its certificate; for MUTUAL its client CA, a client without
//!   a certificate it verifies is refused), then HTTP is served on it by the same code
//!   as every connection, each request routed by that server's hosts only
//!   ([`vhost_index`]) — a client cannot reach a MUTUAL server's hosts through
//!   another server's handshake.
//!
//! No SNI, or an SNI no server takes, closes the connection (counted); a ClientHello
//! over 64 KiB or not arriving within the handshake timeout likewise.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use weft_config::gateway::TlsServerMode;
use weft_config::Snapshot;
use weft_telemetry::HandshakeFailure;

use crate::graceful::Watcher;
use crate::inbound_tls::HANDSHAKE_TIMEOUT;
use crate::request::{ConnCtx, Side};
use crate::server::{serve as serve_http, Accepted};
use crate::state::Shared;

/// The longest DNS name; a longer SNI is closed before it is looked up or logged.
const MAX_SNI: usize = 253;

/// The vhost a request on a connection of TLS server `key` is routed to: one of that
/// server's hosts, in the snapshot the request loaded (none once the server is gone).
pub fn vhost_index(snap: &Snapshot, key: u32, host: &str) -> Option<usize> {
    match &snap.gateway.as_ref()?.tls_server_by_key(key)?.mode {
        TlsServerMode::Terminate { routes, .. } | TlsServerMode::Mesh { routes } => routes.index(host),
        TlsServerMode::Passthrough => None,
    }
}

/// What an ingress gateway, the mesh's edge, says of a request whatever its client sent
/// (Envoy's edge defaults on Istio's gateways): `x-forwarded-proto` is the scheme the
/// client used, and a client's own `x-forwarded-client-cert` is not passed on.
pub fn edge_headers(headers: &mut http::HeaderMap, side: Side) {
    let proto = if matches!(side, Side::GatewayTls(_)) { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), http::HeaderValue::from_static(proto));
    crate::peer::set_forwarded_client_cert(headers, None);
}

static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// One accepted connection on the TLS listener, served until it ends.
pub async fn serve(
    shared: &'static Shared,
    builder: &'static crate::server::Builder,
    watcher: Watcher,
    mut stream: TcpStream,
    remote: SocketAddr,
    worker: usize,
) {
    let accepted = Accepted::count(shared);
    let wait = shared.header_read_timeout.map_or(HANDSHAKE_TIMEOUT, |t| t.min(HANDSHAKE_TIMEOUT));
    let deadline = tokio::time::Instant::now() + wait;
    let hello = match tokio::time::timeout_at(deadline, crate::passthrough::hello(&mut stream)).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            shared.metrics.handshake_failed(HandshakeFailure::Other);
            tracing::debug!(%remote, "gateway: not a TLS ClientHello (or over 64 KiB, or in over 16 records); closed");
            return;
        }
        Err(_) => {
            shared.metrics.counters.downstream_header_timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let sni = hello.sni();
    if sni.as_ref().is_some_and(|n| n.len() > MAX_SNI) {
        shared.metrics.handshake_failed(HandshakeFailure::Other);
        tracing::debug!(%remote, "gateway: an SNI over {MAX_SNI} bytes is no DNS name; closed");
        return;
    }
    let (key, config, passthrough) = {
        let rt = shared.current.load();
        let server = rt.snap.gateway.as_ref().and_then(|g| g.tls_server(sni.as_deref()));
        let Some(server) = server else {
            shared.metrics.counters.no_route.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%remote, sni = sni.as_deref().unwrap_or("(none)"), "gateway: no Gateway server takes this SNI; closed");
            return;
        };
        match &server.mode {
            TlsServerMode::Terminate { config, .. } => (server.key, Some(config.clone()), None),
            TlsServerMode::Mesh { .. } => match &shared.inbound_tls {
                Some(config) => (server.key, Some(config.clone()), None),
                None => {
                    shared.metrics.handshake_failed(HandshakeFailure::NoIdentity);
                    tracing::warn!(%remote, "gateway: an ISTIO_MUTUAL server needs the gateway's mesh identity (follow a control plane with a workload token); closed");
                    return;
                }
            },
            TlsServerMode::Passthrough => {
                let sni = sni.clone().unwrap_or_default();
                let route = rt.snap.gateway.as_ref().and_then(|g| g.passthrough_route(&sni));
                let Some(route) = route else {
                    tracing::info!(%remote, sni, "gateway: no tls route of a bound VirtualService takes this SNI; closed");
                    return;
                };
                let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
                (server.key, None, crate::passthrough::endpoint(&rt, route, port, remote, &sni))
            }
        }
    };
    let Some(config) = config else {
        if let Some(ep) = passthrough {
            crate::passthrough::forward(shared, stream, ep, &hello.records, remote, sni.as_deref().unwrap_or("")).await;
        }
        drop(accepted);
        return;
    };
    let io = Replay { head: hello.records, at: 0, inner: stream };
    let tls = match tokio::time::timeout_at(deadline, tokio_rustls::TlsAcceptor::from(config).accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let why = crate::inbound_tls::failure_of(&e);
            shared.metrics.handshake_failed(why);
            tracing::debug!(%remote, "gateway: TLS handshake failed ({}): {e}", why.as_str());
            return;
        }
        Err(_) => {
            shared.metrics.handshake_failed(HandshakeFailure::Timeout);
            return;
        }
    };
    // Over mesh mTLS the client is a mesh workload: its verified identity goes with its
    // requests (metrics' source principal), as on a sidecar's inbound side.
    // (Only there: a MUTUAL server's client CA is the operator's, not the mesh's.)
    let is_mesh = {
        let rt = shared.current.load();
        rt.snap.gateway.as_ref().and_then(|g| g.tls_server_by_key(key)).is_some_and(|s| matches!(s.mode, TlsServerMode::Mesh { .. }))
    };
    let peer = match (&shared.identity, is_mesh.then(|| weft_tls::peer_identity(tls.get_ref().1)).flatten()) {
        (Some(own), Some(id)) => crate::peer::Peer::new(id, own.id(), shared.metrics),
        _ => None,
    };
    let ctx = ConnCtx { shared, remote, worker, side: Side::GatewayTls(key), peer };
    serve_http(builder, watcher, tls, ctx, accepted).await
}

/// `inner` with `head` (bytes already read from it) read again first.
struct Replay<I> {
    head: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replayed_bytes_come_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Replay { head: b"hello".to_vec(), at: 0, inner: b };
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }
}
