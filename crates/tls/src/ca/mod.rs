//! The mesh CA: it lives in the control plane and signs proxies' CSRs with short-lived
//! SPIFFE certificates. Its key and certificates come from a directory in Istio's
//! plugged-in CA layout, generated on first start or supplied by an operator (a root and an
//! intermediate); either way the CA proves at load that it can issue a certificate that
//! verifies against its own root bundle, so a wrong file fails the start, not the mesh.

mod files;
mod generate;
mod issue;
mod server_cert;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

pub use files::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
pub use issue::{IssuedCert, DEFAULT_CERT_TTL, MAX_CERT_TTL, MAX_CSR_LEN, MIN_CERT_TTL};
pub use server_cert::ServerCert;

use crate::pem::{certs_to_pem, key_from_pem, nonempty_certs_from_pem, PemError};
use crate::spiffe::{validate_trust_domain, SpiffeIdError};
use crate::x509::{CertError, CertInfo};

/// Why the CA could not start or refused to sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("CA directory {dir} is incomplete: missing {missing} (supply all of root-cert.pem, ca-cert.pem and ca-key.pem, or none to have weft generate a root)")]
    Incomplete { dir: PathBuf, missing: String },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("ca-key.pem: not a usable private key: {0}")]
    Key(String),
    #[error("ca-key.pem does not match the public key of ca-cert.pem")]
    KeyMismatch,
    #[error("{what} is not a CA certificate (basicConstraints CA:TRUE and, if keyUsage is present, keyCertSign are required)")]
    NotCa { what: &'static str },
    #[error("ca-cert.pem expired at {not_after:?}; issue a new intermediate (or remove the directory's files to generate a new root)")]
    Expired { not_after: SystemTime },
    #[error("ca-cert.pem is not valid before {not_before:?} (check the clock)")]
    NotYetValid { not_before: SystemTime },
    #[error("cert-chain.pem must start with ca-cert.pem and lead to a root in root-cert.pem")]
    ChainOrder,
    #[error("the CA's certificates do not verify against root-cert.pem: {0}")]
    Untrusted(String),
    #[error(transparent)]
    TrustDomain(#[from] SpiffeIdError),
    #[error("this CA issues for trust domain {ours}, not {requested}")]
    ForeignTrustDomain { ours: String, requested: String },
    #[error("CSR is {len} bytes, over the limit of {MAX_CSR_LEN}")]
    CsrTooLarge { len: usize },
    #[error("CSR refused: {0}")]
    BadCsr(String),
    #[error("CSR asks for {requested:?} but the authenticated identity is {expected}; a CSR must carry exactly one SAN, the caller's own SPIFFE ID")]
    IdentityMismatch { expected: String, requested: Vec<String> },
    #[error("certificate lifetime {ttl:?} is outside {MIN_CERT_TTL:?}..={MAX_CERT_TTL:?}")]
    TtlOutOfRange { ttl: Duration },
    #[error("invalid server certificate name {0:?}: expected a DNS name or an IP address")]
    BadServerName(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The mesh certificate authority.
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// The issuing certificate's expiry: no leaf outlives it.
    issuer_not_after: SystemTime,
    /// Certificates sent after a leaf: `cert-chain.pem` less the roots (empty when the
    /// root issues directly).
    intermediates: Vec<CertificateDer<'static>>,
    roots_pem: String,
    roots: RootCertStore,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir`, or generates a self-signed root there when `dir` holds no
    /// CA files. Files an operator put there are used as they are, never overwritten.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        validate_trust_domain(trust_domain)?;
        if !files::has_ca_material(dir) {
            let generated = generate::self_signed_root(trust_domain)?;
            files::write(dir, &generated)?;
        }
        Ca::from_files(&files::read(dir)?, trust_domain)
    }

    fn from_files(files: &files::CaFiles, trust_domain: &str) -> Result<Ca, CaError> {
        let roots_der = nonempty_certs_from_pem(&files.root_cert, ROOT_CERT)?;
        for root in &roots_der {
            require_ca(&CertInfo::parse(root, ROOT_CERT)?, ROOT_CERT)?;
        }
        let ca_cert = nonempty_certs_from_pem(&files.ca_cert, CA_CERT)?.swap_remove(0);
        let ca_info = CertInfo::parse(&ca_cert, CA_CERT)?;
        require_ca(&ca_info, CA_CERT)?;
        require_current(&ca_info)?;
        let key = KeyPair::try_from(&key_from_pem(&files.ca_key, CA_KEY)?).map_err(|e| CaError::Key(e.to_string()))?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != ca_info.spki {
            return Err(CaError::KeyMismatch);
        }
        let chain = match &files.cert_chain {
            Some(pem) => nonempty_certs_from_pem(pem, CERT_CHAIN)?,
            None => vec![ca_cert.clone()],
        };
        if chain.first() != Some(&ca_cert) {
            return Err(CaError::ChainOrder);
        }
        let mut roots = RootCertStore::empty();
        for root in &roots_der {
            roots.add(root.clone()).map_err(|e| CaError::Untrusted(e.to_string()))?;
        }
        let intermediates = chain.into_iter().filter(|c| !roots_der.contains(c)).collect();
        let issuer = Issuer::from_ca_cert_der(&ca_cert, key).map_err(|e| CaError::Key(format!("cannot issue with ca-cert.pem: {e}")))?;
        let ca = Ca {
            trust_domain: trust_domain.to_owned(),
            issuer,
            issuer_not_after: ca_info.summary.not_after,
            intermediates,
            roots_pem: certs_to_pem(&roots_der),
            roots,
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// The trust domain this CA issues for (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root bundle (PEM) peers verify each other with. It may hold several roots: to
    /// rotate, an operator first adds the new root to `root-cert.pem` and lets the bundle
    /// reach every proxy, then switches the issuing certificate.
    pub fn root_bundle(&self) -> &str {
        &self.roots_pem
    }

    /// The intermediates (PEM) that follow every leaf this CA issues.
    pub fn chain_pem(&self) -> String {
        certs_to_pem(&self.intermediates)
    }
}

fn require_ca(info: &CertInfo, what: &'static str) -> Result<(), CaError> {
    if !info.is_ca || info.key_usage_forbids_signing {
        return Err(CaError::NotCa { what });
    }
    Ok(())
}

fn require_current(info: &CertInfo) -> Result<(), CaError> {
    let now = SystemTime::now();
    if info.summary.not_after <= now {
        return Err(CaError::Expired { not_after: info.summary.not_after });
    }
    if info.summary.not_before > now {
        return Err(CaError::NotYetValid { not_before: info.summary.not_before });
    }
    Ok(())
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Sign(e.to_string())
    }
}
