//! A self-signed root for a mesh whose operator brought none: ECDSA P-256, ten years.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};

use super::files::CaFiles;
use super::issue::{random_serial, to_offset};
use super::CaError;

/// How long a generated root is valid.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Generates the key and root certificate, and the directory's files for them: the root is
/// also the issuing certificate, and the chain is the root alone.
pub(super) fn self_signed_root(trust_domain: &str) -> Result<CaFiles, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "weft mesh root CA");
    params.distinguished_name = dn;
    // Path length 0: this root signs workload certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    params.not_before = to_offset(now - Duration::from_secs(60));
    params.not_after = to_offset(now + ROOT_TTL);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    let pem = cert.pem();
    Ok(CaFiles { root_cert: pem.clone(), ca_cert: pem.clone(), ca_key: key.serialize_pem(), cert_chain: Some(pem) })
}
