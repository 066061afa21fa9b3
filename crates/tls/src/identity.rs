//! The proxy's current identity: certificate, key and trust bundle, swapped as one value.
//!
//! Every handshake reads the current value (a lock-free `ArcSwap` load), so a renewed
//! certificate or a new root bundle takes effect at the next handshake without rebuilding
//! any rustls config, and connections already established keep their session untouched.
//! Nothing is swapped in until it has been checked: the certificate names this workload,
//! belongs to the key, is within its validity, and chains to the bundle that comes with it.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::pem::{certs_from_pem, nonempty_certs_from_pem, PemError};
use crate::provider::provider;
use crate::spiffe::SpiffeId;
use crate::workload::WorkloadKey;
use crate::x509::{CertError, CertInfo, CertSummary};

/// Why a certificate was not installed (the previous one stays in use).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("workload key: {0}")]
    Key(String),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("certificate is for {found}, but this proxy is {expected}")]
    WrongIdentity { expected: String, found: String },
    #[error("certificate was not issued for this proxy's key")]
    KeyMismatch,
    #[error("certificate expired at {not_after:?}")]
    Expired { not_after: SystemTime },
    #[error("certificate is not valid before {not_before:?} (check the clock)")]
    NotYetValid { not_before: SystemTime },
    #[error("certificate does not verify against the trust bundle: {0}")]
    Untrusted(String),
    #[error("building TLS config: {0}")]
    Tls(String),
}

/// What a handshake reads: the certified key to present and the roots to verify peers by.
pub(crate) struct Credentials {
    pub certified: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    pub summary: CertSummary,
}

/// A workload's certificate, key and trust bundle, replaceable while in use.
pub struct WorkloadIdentity {
    id: SpiffeId,
    current: ArcSwap<Credentials>,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentity").field("id", &self.id.to_string()).field("serial", &self.current.load().summary.serial).finish()
    }
}

impl WorkloadIdentity {
    /// An identity for `id` from its first certificate (PEM leaf, intermediates, roots).
    pub fn new(id: SpiffeId, key: &WorkloadKey, leaf_pem: &str, chain_pem: &str, roots_pem: &str) -> Result<Self, IdentityError> {
        let creds = credentials(&id, key.signing_key()?, &key.spki(), leaf_pem, chain_pem, roots_pem)?;
        Ok(WorkloadIdentity { id, current: ArcSwap::from_pointee(creds) })
    }

    /// Replaces the certificate (a renewal, usually with a new key) and the bundle after
    /// checking them; on error the current ones stay.
    pub fn install(&self, key: &WorkloadKey, leaf_pem: &str, chain_pem: &str, roots_pem: &str) -> Result<(), IdentityError> {
        let creds = credentials(&self.id, key.signing_key()?, &key.spki(), leaf_pem, chain_pem, roots_pem)?;
        self.current.store(Arc::new(creds));
        Ok(())
    }

    /// Replaces the trust bundle alone (a root being added or retired). Refused if the
    /// current certificate would no longer verify against it.
    pub fn update_roots(&self, roots_pem: &str) -> Result<(), IdentityError> {
        let roots = root_store(&nonempty_certs_from_pem(roots_pem, "trust bundle")?)?;
        // Compare-and-swap, so a renewal installed meanwhile is never replaced by the
        // certificate it renewed.
        loop {
            let current = self.current.load_full();
            let creds = Arc::new(verified(current.certified.clone(), roots.clone(), current.summary.clone())?);
            let previous = self.current.compare_and_swap(&current, creds);
            if Arc::ptr_eq(&previous, &current) {
                return Ok(());
            }
        }
    }

    /// The SPIFFE ID this workload holds certificates for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the current certificate expires.
    pub fn expires_at(&self) -> SystemTime {
        self.current.load().summary.not_after
    }

    /// When to renew: half-way through the current certificate's life (Istio's default),
    /// leaving the other half for a control plane that is away to come back.
    pub fn renew_at(&self) -> SystemTime {
        let current = self.current.load();
        let (start, end) = (current.summary.not_before, current.summary.not_after);
        start + end.duration_since(start).unwrap_or_default() / 2
    }

    /// The current certificate, for `/config_dump` and `weft status` (never the key).
    pub fn summary(&self) -> CertSummary {
        self.current.load().summary.clone()
    }

    pub(crate) fn credentials(&self) -> Arc<Credentials> {
        self.current.load_full()
    }
}

fn credentials(
    id: &SpiffeId,
    signing_key: Arc<dyn SigningKey>,
    key_spki: &[u8],
    leaf_pem: &str,
    chain_pem: &str,
    roots_pem: &str,
) -> Result<Credentials, IdentityError> {
    // A leaf file may carry its chain after it, as many tools write them.
    let mut certs = nonempty_certs_from_pem(leaf_pem, "workload certificate")?;
    certs.extend(certs_from_pem(chain_pem, "certificate chain")?);
    let roots = root_store(&nonempty_certs_from_pem(roots_pem, "trust bundle")?)?;
    let info = CertInfo::parse(&certs[0], "workload certificate")?;
    let found = info.spiffe_id()?;
    if &found != id {
        return Err(IdentityError::WrongIdentity { expected: id.to_string(), found: found.to_string() });
    }
    check_validity(&info.summary)?;
    if info.spki != key_spki {
        return Err(IdentityError::KeyMismatch);
    }
    let certified = Arc::new(CertifiedKey::new(certs, signing_key));
    verified(certified, roots, info.summary)
}

/// Checks the chain against `roots` for both directions a sidecar uses it (as a server
/// inbound, as a client outbound) and builds the per-bundle client verifier once.
fn verified(certified: Arc<CertifiedKey>, roots: RootCertStore, summary: CertSummary) -> Result<Credentials, IdentityError> {
    let untrusted = |e: rustls::Error| IdentityError::Untrusted(e.to_string());
    let roots = Arc::new(roots);
    let (leaf, chain): (&CertificateDer<'_>, &[CertificateDer<'_>]) = match certified.cert.split_first() {
        Some(split) => split,
        None => return Err(IdentityError::Untrusted("no certificate".into())),
    };
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build().map_err(|e| IdentityError::Tls(e.to_string()))?;
    let now = UnixTime::now();
    client_verifier.verify_client_cert(leaf, chain, now).map_err(untrusted)?;
    let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
    let algs = provider().signature_verification_algorithms;
    verify_server_cert_signed_by_trust_anchor(&parsed, &roots, chain, now, algs.all).map_err(untrusted)?;
    Ok(Credentials { certified, roots, client_verifier, summary })
}

fn check_validity(summary: &CertSummary) -> Result<(), IdentityError> {
    let now = SystemTime::now();
    if summary.not_after <= now {
        return Err(IdentityError::Expired { not_after: summary.not_after });
    }
    if summary.not_before > now {
        return Err(IdentityError::NotYetValid { not_before: summary.not_before });
    }
    Ok(())
}

pub(crate) fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, IdentityError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| IdentityError::Untrusted(format!("trust bundle: {e}")))?;
    }
    Ok(store)
}
