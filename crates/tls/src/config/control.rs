//! TLS for the control plane's API. The control plane serves HTTPS with a certificate
//! from the mesh CA ([`crate::ca::Ca::issue_server_cert`]); its clients verify it by
//! name or address against the mesh root, as any HTTPS client does (`--ca-file`).
//! Proxies present their workload certificate, so the control plane knows which proxy
//! is calling from its SPIFFE ID; CLI users present none and authenticate with a token.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::resolve::CurrentCert;
use super::tls_err;
use super::verify::{algorithms, MeshClientVerifier, RootsSource};
use crate::ca::ServerCert;
use crate::identity::{root_store, IdentityError, WorkloadIdentity};
use crate::pem::{nonempty_certs_from_pem, PemError};
use crate::provider::provider;

/// The API speaks HTTP/1.1 only (one request per connection from the CLI, long polls
/// from proxies): offered alone so that no client negotiates h2 with it.
const API_ALPN: &[u8] = b"http/1.1";

/// The control plane's HTTPS config: presents `cert`; a client certificate is optional,
/// but one that is presented must chain to `roots_pem` and carry a SPIFFE ID (read it
/// with [`super::peer_identity`]). TLS 1.2 and 1.3, for the variety of API clients.
pub fn control_plane_server_config(cert: &ServerCert, roots_pem: &str) -> Result<ServerConfig, IdentityError> {
    let chain = nonempty_certs_from_pem(&cert.cert_chain_pem, "control plane certificate")?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| PemError::Malformed { what: "control plane key", reason: e.to_string() })?;
    let roots = Arc::new(root_store(&nonempty_certs_from_pem(roots_pem, "trust bundle")?)?);
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider()).build().map_err(|e| IdentityError::Tls(e.to_string()))?;
    let verifier = Arc::new(MeshClientVerifier { roots: RootsSource::Fixed(inner), mandatory: false, algs: algorithms() });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![API_ALPN.to_vec()];
    Ok(config)
}

/// A client of the control plane's API: verifies the server by the name or address it
/// connects to, against the mesh root bundle; presents the workload certificate when
/// `identity` is given (a proxy), none otherwise (the CLI).
pub fn control_plane_client_config(roots_pem: &str, identity: Option<Arc<WorkloadIdentity>>) -> Result<ClientConfig, IdentityError> {
    let roots = root_store(&nonempty_certs_from_pem(roots_pem, "CA file")?)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(CurrentCert(identity))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![API_ALPN.to_vec()];
    Ok(config)
}
