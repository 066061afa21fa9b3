//! PEM decoding with bounds: certificate and key files come from operators and from the
//! network (a CSR, a bundle pushed by the control plane), so sizes and counts are capped
//! before anything is parsed.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The largest PEM text accepted for a certificate chain, bundle or key.
pub const MAX_PEM_LEN: usize = 1 << 20;
/// The most certificates accepted in one chain or root bundle.
pub const MAX_CERTS: usize = 64;

/// Why PEM text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("{what}: {len} bytes of PEM, over the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("{what}: no PEM block of the expected type")]
    Empty { what: &'static str },
    #[error("{what}: more than {MAX_CERTS} certificates")]
    TooMany { what: &'static str },
    #[error("{what}: malformed PEM: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Every `CERTIFICATE` block in `pem` (possibly none), in order.
pub fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    check_len(pem, what, MAX_PEM_LEN)?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| PemError::Malformed { what, reason: e.to_string() })?;
        if certs.len() == MAX_CERTS {
            return Err(PemError::TooMany { what });
        }
        certs.push(cert);
    }
    Ok(certs)
}

/// Like [`certs_from_pem`], but at least one certificate is required.
pub fn nonempty_certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = certs_from_pem(pem, what)?;
    if certs.is_empty() {
        return Err(PemError::Empty { what });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub fn key_from_pem(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, PemError> {
    check_len(pem, what, MAX_PEM_LEN)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty { what },
        e => PemError::Malformed { what, reason: e.to_string() },
    })
}

/// Encodes DER certificates as concatenated PEM blocks.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| der_to_pem("CERTIFICATE", c)).collect()
}

pub(crate) fn check_len(pem: &str, what: &'static str, max: usize) -> Result<(), PemError> {
    if pem.len() > max {
        return Err(PemError::TooLarge { what, len: pem.len(), max });
    }
    Ok(())
}

fn der_to_pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}
