//! The proxy's own key: generated in the proxy, used to sign a CSR, and never sent anywhere.
//! A proxy makes a new one for every renewal, so a leaked key dies with its certificate.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::sign::SigningKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::identity::IdentityError;
use crate::spiffe::SpiffeId;

/// An ECDSA P-256 private key held by a proxy. Its `Debug` shows no key material.
pub struct WorkloadKey {
    key: KeyPair,
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadKey(ECDSA P-256, private)")
    }
}

impl WorkloadKey {
    /// A fresh ECDSA P-256 key from the system's secure random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| IdentityError::Key(e.to_string()))?;
        Ok(WorkloadKey { key })
    }

    /// A PEM CSR asking for `id` as the one URI SAN, with an empty subject (the CA sets
    /// every other field itself).
    pub fn csr(&self, id: &SpiffeId) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = rcgen::string::Ia5String::try_from(id.to_string()).map_err(|e| IdentityError::Key(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.serialize_request(&self.key).and_then(|csr| csr.pem()).map_err(|e| IdentityError::Key(e.to_string()))
    }

    /// The DER SubjectPublicKeyInfo, to check a certificate was issued for this key.
    pub(crate) fn spki(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }

    /// The key as rustls signs handshakes with it.
    pub(crate) fn signing_key(&self) -> Result<Arc<dyn SigningKey>, IdentityError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| IdentityError::Key(e.to_string()))
    }
}
