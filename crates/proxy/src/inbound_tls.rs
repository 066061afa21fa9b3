//! The inbound listener's connections: mTLS terminated or plaintext served, as
//! PeerAuthentication's mode for the app's port says, decided per connection in the
//! connection's own task (the accept loop never waits on a client).
//!
//! - `STRICT`: TLS only. The first byte must open a TLS handshake record (0x16); a
//!   plaintext client is counted (`weft_inbound_plaintext_refused_total`) and closed.
//! - `PERMISSIVE`: the first byte decides: TLS is terminated, anything else is served
//!   as plaintext HTTP on the same listener.
//! - `DISABLE`: plaintext only; nothing is read ahead, and a TLS ClientHello is
//!   garbage to the HTTP server like any other non-HTTP bytes.
//!
//! TLS is mesh mTLS ([`weft_tls::server_config`] with a required client certificate,
//! also under PERMISSIVE as in Istio: a client that speaks TLS to a sidecar must be a
//! mesh workload), with one config built at start from the proxy's identity. The first
//! byte and the handshake together must arrive within [`HANDSHAKE_TIMEOUT`] (or the
//! header-read timeout, if shorter). A refused handshake is counted by reason
//! (`weft_inbound_tls_handshake_failures_total`) and logged with it; a completed one
//! hands the peer's SPIFFE ID ([`Peer`]) to every request on the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{CertificateError, HandshakeKind};
use tokio::io::{AsyncRead, AsyncWrite};
use weft_config::istio::MtlsMode;
use weft_telemetry::HandshakeFailure;

use crate::graceful::Watcher;
use crate::peer::Peer;
use crate::request::{ConnCtx, Side};
use crate::rewind::Rewind;
use crate::server::{inbound_mode, serve as serve_http, Accepted};
use crate::state::Shared;

/// The first byte of a TLS record that carries a handshake message (a ClientHello).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a client has to send its first byte and finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The inbound TLS config for `identity`, built once at start; none without an
/// identity (then TLS clients are refused, and say so in the log).
pub fn server_config(identity: Option<&Arc<weft_tls::WorkloadIdentity>>) -> Option<Arc<rustls::ServerConfig>> {
    let identity = identity?;
    match weft_tls::server_config(identity.clone(), weft_tls::ClientAuth::Required) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!("inbound: cannot build the mTLS config for {}: {e}; TLS clients will be refused", identity.id());
            None
        }
    }
}

/// One accepted inbound connection, served until it ends: mode, detection, handshake,
/// then HTTP through the same server code as every connection ([`crate::server::serve`]).
pub async fn serve<I>(
    shared: &'static Shared,
    builder: &'static crate::server::Builder,
    graceful: Watcher,
    io: I,
    remote: SocketAddr,
    worker: usize,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = Accepted::count(shared);
    let ctx = |peer| ConnCtx { shared, remote, worker, side: Side::Inbound, peer };
    let mode = inbound_mode(shared);
    if mode == MtlsMode::Disable {
        return serve_http(builder, graceful, Rewind::untouched(io), ctx(None), accepted).await;
    }
    let deadline = tokio::time::Instant::now() + handshake_timeout(shared);
    let (first, io) = match tokio::time::timeout_at(deadline, Rewind::read_first(io)).await {
        Ok(Ok((Some(first), io))) => (first, io),
        // Closed, or broke, before saying anything: nothing to serve or count.
        Ok(Ok((None, _))) | Ok(Err(_)) => return,
        Err(_) => {
            shared.metrics.counters.downstream_header_timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if first != TLS_HANDSHAKE_RECORD {
        if mode == MtlsMode::Strict {
            shared.metrics.counters.inbound_plaintext_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("inbound: plaintext connection from {remote} refused: PeerAuthentication STRICT requires mTLS");
            return;
        }
        return serve_http(builder, graceful, io, ctx(None), accepted).await;
    }
    let Some((tls, peer)) = handshake(shared, io, remote, deadline).await else { return };
    serve_http(builder, graceful, tls, ctx(Some(peer)), accepted).await
}

/// The mTLS handshake on a connection whose first byte said TLS: the stream and its
/// verified peer, or `None` (counted and logged) when refused.
async fn handshake<I>(
    shared: &'static Shared,
    io: Rewind<I>,
    remote: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<(tokio_rustls::server::TlsStream<Rewind<I>>, Arc<Peer>)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = shared.metrics;
    let (Some(config), Some(own)) = (&shared.inbound_tls, &shared.identity) else {
        metrics.handshake_failed(HandshakeFailure::NoIdentity);
        if !NO_IDENTITY_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "inbound: TLS connection from {remote} refused: this proxy has no mesh identity to terminate mTLS with \
                 (it gets one from the control plane's CA); logged once, counted in weft_inbound_tls_handshake_failures_total{{reason=\"no_identity\"}}"
            );
        }
        return None;
    };
    let accept = tokio_rustls::TlsAcceptor::from(config.clone()).accept(io);
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let why = failure_of(&e);
            metrics.handshake_failed(why);
            // A refused certificate is worth a line, but a flood of them is not worth
            // a flood of lines: at most one a second at info, the rest at debug.
            if why != HandshakeFailure::Other && first_this_second() {
                tracing::info!("inbound: mTLS refused to {remote} ({}): {e}", why.as_str());
            } else {
                tracing::debug!("inbound: TLS handshake with {remote} failed ({}): {e}", why.as_str());
            }
            return None;
        }
        Err(_) => {
            metrics.handshake_failed(HandshakeFailure::Timeout);
            tracing::debug!("inbound: TLS handshake with {remote} took longer than {:?}", handshake_timeout(shared));
            return None;
        }
    };
    let state = tls.get_ref().1;
    let resumed = state.handshake_kind() == Some(HandshakeKind::Resumed);
    // The verifier let in only certificates with a SPIFFE ID; without one, refuse.
    let Some(peer) = weft_tls::peer_identity(state).and_then(|id| Peer::new(id, own.id(), metrics)) else {
        metrics.handshake_failed(HandshakeFailure::BadCertificate);
        tracing::info!("inbound: mTLS refused to {remote} (bad_certificate): its certificate names no SPIFFE ID");
        return None;
    };
    metrics.counters.inbound_tls_handshakes[resumed as usize].fetch_add(1, Ordering::Relaxed);
    Some((tls, peer))
}

/// Whether the no-identity refusal was logged (once per process).
static NO_IDENTITY_LOGGED: AtomicBool = AtomicBool::new(false);
/// The second (since the epoch) of the last refusal logged at info.
static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);

/// Whether this is the first refusal logged this second.
fn first_this_second() -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST_LOGGED_SECOND.swap(now, Ordering::Relaxed) != now
}

/// The first byte and the handshake together: [`HANDSHAKE_TIMEOUT`], or the
/// header-read timeout when that is shorter.
fn handshake_timeout(shared: &Shared) -> Duration {
    shared.header_read_timeout.map_or(HANDSHAKE_TIMEOUT, |t| t.min(HANDSHAKE_TIMEOUT))
}

/// Why rustls refused a handshake (tokio-rustls carries its error inside the `io::Error`).
pub(crate) fn failure_of(e: &std::io::Error) -> HandshakeFailure {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return HandshakeFailure::Other;
    };
    match tls {
        rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCert,
        rustls::Error::InvalidCertificate(c) => match c {
            // Both generated roots bear the trust domain's name, so a foreign mesh's
            // certificate finds our namesake root and fails its signature.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => HandshakeFailure::UnknownCa,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => HandshakeFailure::Expired,
            _ => HandshakeFailure::BadCertificate,
        },
        _ => HandshakeFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{Error, OtherError};

    fn io(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn refusals_are_named_by_what_was_wrong_with_the_client() {
        let cert = |c: CertificateError| io(Error::InvalidCertificate(c));
        let other = Arc::new(std::io::Error::other("no SPIFFE ID"));
        for (e, why) in [
            (io(Error::NoCertificatesPresented), HandshakeFailure::NoClientCert),
            (cert(CertificateError::UnknownIssuer), HandshakeFailure::UnknownCa),
            (cert(CertificateError::BadSignature), HandshakeFailure::UnknownCa),
            (cert(CertificateError::Expired), HandshakeFailure::Expired),
            (cert(CertificateError::NotValidYet), HandshakeFailure::Expired),
            (cert(CertificateError::Other(OtherError(other))), HandshakeFailure::BadCertificate),
            (io(Error::DecryptError), HandshakeFailure::Other),
            (std::io::Error::from(std::io::ErrorKind::UnexpectedEof), HandshakeFailure::Other),
        ] {
            assert_eq!(failure_of(&e), why, "{e}");
        }
    }
}
