//! Peer verification against the workload's current trust bundle (read per handshake, so
//! a rotated bundle applies to the next handshake), plus what a mesh needs beyond a chain:
//! the peer's SPIFFE ID. DNS names play no part; a mesh peer is named by its SPIFFE ID,
//! as Istio's `subjectAltNames` do.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::WorkloadIdentity;
use crate::provider::provider;
use crate::spiffe::SpiffeId;
use crate::x509::spiffe_id_of;

/// A peer presented a valid chain but not an identity this side accepts.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer certificate has no usable SPIFFE ID: {0}")]
    NoSpiffeId(#[from] crate::x509::CertError),
    #[error("peer is {found}, not one of the expected identities [{expected}]")]
    Unexpected { found: String, expected: String },
}

/// rustls prints a custom certificate error with `{:?}`; this makes that the message, so
/// a refusal in a log line reads as a sentence.
impl std::fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<PeerIdentityError> for rustls::Error {
    fn from(e: PeerIdentityError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Inbound: verifies client certificates against the current bundle and requires a
/// SPIFFE ID. With `mandatory` false a client without a certificate is let through
/// (PERMISSIVE); one that presents a certificate must still present a valid one.
#[derive(Debug)]
pub(crate) struct MeshClientVerifier {
    pub roots: RootsSource,
    pub mandatory: bool,
    pub algs: WebPkiSupportedAlgorithms,
}

/// Where the client-certificate verifier for a handshake comes from.
#[derive(Debug)]
pub(crate) enum RootsSource {
    /// The workload's current bundle (a sidecar's inbound side).
    Identity(Arc<WorkloadIdentity>),
    /// A bundle fixed when the config was built (the control plane's API).
    Fixed(Arc<dyn ClientCertVerifier>),
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No CA names are sent: the bundle may change per handshake and mesh clients have one
    /// certificate anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.roots {
            RootsSource::Identity(identity) => identity.credentials().client_verifier.verify_client_cert(end_entity, intermediates, now)?,
            RootsSource::Fixed(verifier) => verifier.verify_client_cert(end_entity, intermediates, now)?,
        };
        spiffe_id_of(end_entity).map_err(PeerIdentityError::from)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Outbound: verifies the server's chain against the current bundle and its SPIFFE ID
/// against `expected` (any mesh identity when `None`).
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    pub identity: Arc<WorkloadIdentity>,
    pub expected: Option<Vec<SpiffeId>>,
    pub algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let creds = self.identity.credentials();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&parsed, &creds.roots, intermediates, now, self.algs.all)?;
        let found = spiffe_id_of(end_entity).map_err(PeerIdentityError::from)?;
        if let Some(expected) = &self.expected {
            if !expected.contains(&found) {
                let list: Vec<String> = expected.iter().map(ToString::to_string).collect();
                return Err(PeerIdentityError::Unexpected { found: found.to_string(), expected: list.join(", ") }.into());
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The signature algorithms of the one provider.
pub(crate) fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}
