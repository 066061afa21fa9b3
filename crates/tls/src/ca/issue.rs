//! Signing a proxy's CSR: the CSR contributes its public key and nothing else. The
//! identity comes from the caller (the control plane, from the token or certificate the
//! proxy authenticated with) and must be exactly what the CSR asks for; every other field
//! of the leaf is the CA's choice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateSigningRequestDer, UnixTime};
use time::OffsetDateTime;

use super::{Ca, CaError};
use crate::pem::certs_to_pem;
use crate::spiffe::SpiffeId;

/// The largest CSR accepted (PEM text). A proxy's CSR is under 1 KiB.
pub const MAX_CSR_LEN: usize = 64 * 1024;
/// The shortest certificate lifetime the CA issues.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(10 * 60);
/// The longest certificate lifetime the CA issues.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Leaves are valid from a minute back, so a peer whose clock lags a little accepts them.
pub(super) const BACKDATE: Duration = Duration::from_secs(60);

/// A signed workload certificate and what a proxy needs with it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The leaf certificate (PEM).
    pub leaf_pem: String,
    /// The intermediates between the leaf and a root (PEM; empty when the root signs).
    pub chain_pem: String,
    /// The root bundle (PEM) to verify peers with.
    pub roots_pem: String,
    /// The leaf's serial number, as `openssl x509 -serial` prints it but with `:`s.
    pub serial: String,
    pub not_after: SystemTime,
}

impl Ca {
    /// Signs `csr_pem` for `expected`, valid for `ttl` (capped at the issuing
    /// certificate's own expiry). Refuses a CSR whose SANs are anything but exactly
    /// `expected` as a URI, whose signature does not verify, or that is over
    /// [`MAX_CSR_LEN`].
    pub fn sign_csr(&self, csr_pem: &str, expected: &SpiffeId, ttl: Duration) -> Result<IssuedCert, CaError> {
        if csr_pem.len() > MAX_CSR_LEN {
            return Err(CaError::CsrTooLarge { len: csr_pem.len() });
        }
        if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&ttl) {
            return Err(CaError::TtlOutOfRange { ttl });
        }
        if expected.trust_domain() != self.trust_domain {
            return Err(CaError::ForeignTrustDomain { ours: self.trust_domain.clone(), requested: expected.trust_domain().to_owned() });
        }
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::BadCsr(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
        // Parses and verifies the CSR's self-signature (proof the requester holds the key).
        let csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| CaError::BadCsr(e.to_string()))?;
        check_requested_identity(&csr.params.subject_alt_names, expected)?;
        if !is_accepted_key_algorithm(&csr.public_key) {
            return Err(CaError::BadCsr("key algorithm not accepted (ECDSA P-256/P-384 or Ed25519 only)".into()));
        }
        let now = SystemTime::now();
        let not_after = (now + ttl).min(self.issuer_not_after);
        let params = leaf_params(expected, now - BACKDATE, not_after)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let serial = params.serial_number.as_ref().map(|s| hex(&s.to_bytes())).unwrap_or_default();
        Ok(IssuedCert {
            leaf_pem: cert.pem(),
            chain_pem: certs_to_pem(&self.intermediates),
            roots_pem: self.roots_pem.clone(),
            serial,
            not_after,
        })
    }

    /// Issues a certificate to a throwaway key and verifies it against the root bundle,
    /// proving the files fit together (key, issuing cert, chain, roots) before any proxy
    /// depends on them.
    pub(super) fn self_check(&self) -> Result<(), CaError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let id = SpiffeId::new(&self.trust_domain, "weft-system", "ca-self-check")?;
        let now = SystemTime::now();
        let params = leaf_params(&id, now - BACKDATE, now + MIN_CERT_TTL)?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let parsed = ParsedCertificate::try_from(leaf.der()).map_err(|e| CaError::Untrusted(e.to_string()))?;
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, &self.intermediates, UnixTime::now(), algs.all)
            .map_err(|e| CaError::Untrusted(e.to_string()))
    }
}

/// The CSR must ask for exactly one name, the expected SPIFFE ID as a URI SAN.
fn check_requested_identity(sans: &[SanType], expected: &SpiffeId) -> Result<(), CaError> {
    let expected_uri = expected.to_string();
    match sans {
        [SanType::URI(uri)] if uri.as_str() == expected_uri => Ok(()),
        _ => Err(CaError::IdentityMismatch { expected: expected_uri, requested: sans.iter().take(8).map(describe_san).collect() }),
    }
}

fn describe_san(san: &SanType) -> String {
    let text = match san {
        SanType::URI(u) => format!("URI:{}", u.as_str()),
        SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
        SanType::Rfc822Name(e) => format!("email:{}", e.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        _ => "other".to_owned(),
    };
    // Bounded and printable, for logs: a hostile CSR chooses these bytes.
    text.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn is_accepted_key_algorithm(key: &impl PublicKeyData) -> bool {
    let alg = key.algorithm();
    alg == &rcgen::PKCS_ECDSA_P256_SHA256 || alg == &rcgen::PKCS_ECDSA_P384_SHA384 || alg == &rcgen::PKCS_ED25519
}

/// A workload leaf: no subject, one critical URI SAN, signing and key agreement for TLS
/// in both directions (a sidecar is a server inbound and a client outbound).
pub(super) fn leaf_params(id: &SpiffeId, not_before: SystemTime, not_after: SystemTime) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(id.to_string())?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// 128 random bits, positive and never zero (RFC 5280: at most 20 octets, positive).
pub(super) fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CaError::Sign("no randomness for a serial number".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(super) fn to_offset(t: SystemTime) -> OffsetDateTime {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}
