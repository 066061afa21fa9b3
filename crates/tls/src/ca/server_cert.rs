//! The control plane's own serving certificate: signed by the mesh CA so that proxies and
//! CLI users verify the control plane with the mesh root they already hold
//! (`--ca-file <ca-dir>/root-cert.pem`), and named by the addresses it listens on, as any
//! HTTPS server is. Its key is made here, in the control plane, and never leaves it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{DnType, ExtendedKeyUsagePurpose, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

use super::issue::{hex, leaf_params, BACKDATE, MAX_CERT_TTL, MIN_CERT_TTL};
use super::{Ca, CaError};
use crate::pem::certs_to_pem;
use crate::spiffe::SpiffeId;

/// A serving certificate with its key, ready for a rustls `ServerConfig`.
pub struct ServerCert {
    /// Leaf followed by the intermediates (PEM), as a TLS server sends them.
    pub cert_chain_pem: String,
    /// The private key (PKCS#8 PEM). Keep it in memory or in a 0600 file.
    pub key_pem: String,
    pub serial: String,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").field("serial", &self.serial).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl Ca {
    /// Issues a serving certificate for `names` (DNS names or IP addresses, at least one),
    /// for TLS server use only, with the SPIFFE ID `spiffe://<td>/ns/weft-system/sa/control-plane`
    /// beside the names so that a mesh peer can also check it by identity.
    pub fn issue_server_cert(&self, names: &[&str], ttl: Duration) -> Result<ServerCert, CaError> {
        if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&ttl) {
            return Err(CaError::TtlOutOfRange { ttl });
        }
        if names.is_empty() {
            return Err(CaError::BadServerName(String::new()));
        }
        let id = SpiffeId::new(&self.trust_domain, "weft-system", "control-plane")?;
        let now = SystemTime::now();
        let not_after = (now + ttl).min(self.issuer_not_after);
        let mut params = leaf_params(&id, now - BACKDATE, not_after)?;
        for name in names {
            params.subject_alt_names.push(server_name(name)?);
        }
        params.distinguished_name.push(DnType::CommonName, "weft control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_chain_pem: cert.pem() + &certs_to_pem(&self.intermediates),
            key_pem: key.serialize_pem(),
            serial: params.serial_number.as_ref().map(|s| hex(&s.to_bytes())).unwrap_or_default(),
            not_after,
        })
    }
}

fn server_name(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    match valid {
        true => Ok(SanType::DnsName(name.to_ascii_lowercase().try_into()?)),
        false => Err(CaError::BadServerName(name.chars().take(100).collect())),
    }
}
