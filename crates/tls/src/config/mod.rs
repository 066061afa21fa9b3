//! rustls configs for mesh mTLS, built once from a [`WorkloadIdentity`] and valid for its
//! whole life: certificate and bundle are read per handshake, so rotation needs no rebuild.
//!
//! Both sides speak TLS 1.3 only: both ends are weft, 1.3 encrypts the certificates (a
//! passive observer does not learn who talks to whom), and its tickets make resumption
//! stateless on the server. ALPN offers `h2` first so two proxies multiplex one
//! connection, with `http/1.1` for peers that do not speak HTTP/2.

mod control;
mod resolve;
mod verify;

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::ServerSessionMemoryCache;
use rustls::{ClientConfig, CommonState, ServerConfig};

pub use control::{control_plane_client_config, control_plane_server_config};
pub use verify::PeerIdentityError;

use crate::identity::{IdentityError, WorkloadIdentity};
use crate::provider::provider;
use crate::spiffe::SpiffeId;
use crate::x509::spiffe_id_of;
use resolve::CurrentCert;
use verify::{algorithms, MeshClientVerifier, MeshServerVerifier, RootsSource};

/// ALPN protocol IDs, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Server-side session cache entries (sessions of clients that do not take tickets).
pub const SERVER_SESSION_CACHE_SIZE: usize = 4096;
/// Client-side resumption cache entries (one per peer server name, and a few tickets each).
pub const CLIENT_SESSION_CACHE_SIZE: usize = 1024;

/// Whether the inbound side requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// STRICT mTLS: a client without a valid mesh certificate is refused.
    Required,
    /// A client may present no certificate (then it has no peer identity), but one that
    /// presents a certificate must present a valid one.
    Optional,
}

/// The inbound listener's config: presents the workload certificate, verifies clients
/// against the mesh roots and requires a SPIFFE ID; TLS 1.3 tickets for resumption.
pub fn server_config(identity: Arc<WorkloadIdentity>, client_auth: ClientAuth) -> Result<ServerConfig, IdentityError> {
    let verifier = Arc::new(MeshClientVerifier {
        roots: RootsSource::Identity(identity.clone()),
        mandatory: client_auth == ClientAuth::Required,
        algs: algorithms(),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentCert(identity)));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(tls_err)?;
    config.session_storage = ServerSessionMemoryCache::new(SERVER_SESSION_CACHE_SIZE);
    Ok(config)
}

/// The outbound mesh client's config (Istio's `ISTIO_MUTUAL`): presents the workload
/// certificate and accepts a server whose chain leads to the mesh roots and whose SPIFFE
/// ID is one of `expected` (any mesh identity when `None`). The server name given to
/// `connect` is only sent as SNI and keys the resumption cache; it is not verified.
/// Use one config per `expected` set: its resumption cache is part of it.
pub fn client_config(identity: Arc<WorkloadIdentity>, expected: Option<Vec<SpiffeId>>) -> Result<ClientConfig, IdentityError> {
    let verifier = Arc::new(MeshServerVerifier { identity: identity.clone(), expected, algs: algorithms() });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentCert(identity)));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::in_memory_sessions(CLIENT_SESSION_CACHE_SIZE);
    Ok(config)
}

/// The SPIFFE ID of the peer of an established connection (server or client side, full
/// or resumed handshake); `None` when it presented no certificate or one without a
/// SPIFFE ID. Pass `conn.get_ref().1` of a tokio-rustls stream (it derefs to this).
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    spiffe_id_of(leaf).ok()
}

pub(crate) fn tls_err(e: rustls::Error) -> IdentityError {
    IdentityError::Tls(e.to_string())
}
