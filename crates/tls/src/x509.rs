//! Reading what a certificate says (names, validity, serial, key) with x509-parser, for the
//! checks rustls does not make (a SPIFFE URI SAN, a CA's basic constraints, whether a key
//! belongs to a certificate) and for `/config_dump`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate could not be read or does not carry a usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("certificate has {0} URI SANs; a workload certificate must have exactly one, its SPIFFE ID")]
    UriSanCount(usize),
    #[error("certificate's URI SAN is not a SPIFFE ID weft accepts: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
}

/// What weft reads from a certificate: everything `/config_dump` shows, plus the public key
/// and CA flags the CA and the identity checks need. Never holds a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject DN in RFC 4514 form (empty for workload certificates).
    pub subject: String,
    /// The issuer DN in RFC 4514 form.
    pub issuer: String,
    /// Subject alternative names, each as `URI:...`, `DNS:...`, `IP:...` or `other`.
    pub sans: Vec<String>,
    /// Serial number, lowercase hex with `:` between bytes (as `openssl x509` prints it).
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A parsed certificate: its summary and the fields the checks use.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub summary: CertSummary,
    pub uri_sans: Vec<String>,
    /// The DER SubjectPublicKeyInfo, to compare with a private key's public half.
    pub spki: Vec<u8>,
    /// basicConstraints cA=TRUE.
    pub is_ca: bool,
    /// keyUsage present and without keyCertSign.
    pub key_usage_forbids_signing: bool,
}

impl CertInfo {
    pub fn parse(der: &[u8], what: &'static str) -> Result<Self, CertError> {
        let parse_err = |reason: String| CertError::Parse { what, reason };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
        if !rest.is_empty() {
            return Err(parse_err("trailing data after the certificate".into()));
        }
        let mut sans = Vec::new();
        let mut uri_sans = Vec::new();
        let mut is_ca = false;
        let mut key_usage_forbids_signing = false;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::URI(uri) = name {
                            uri_sans.push((*uri).to_owned());
                        }
                        sans.push(san_to_string(name));
                    }
                }
                ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
                ParsedExtension::KeyUsage(ku) => key_usage_forbids_signing = !ku.key_cert_sign(),
                _ => {}
            }
        }
        let validity = cert.validity();
        let summary = CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            serial: hex_serial(cert.raw_serial()),
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
        };
        Ok(CertInfo { summary, uri_sans, spki: cert.public_key().raw.to_vec(), is_ca, key_usage_forbids_signing })
    }

    /// The certificate's SPIFFE ID: its one URI SAN, which must parse (X.509-SVID rules).
    pub fn spiffe_id(&self) -> Result<SpiffeId, CertError> {
        match self.uri_sans.as_slice() {
            [uri] => Ok(SpiffeId::parse(uri)?),
            other => Err(CertError::UriSanCount(other.len())),
        }
    }
}

/// Summarizes a DER certificate for display (`/config_dump`, `weft status`).
pub fn summarize(der: &[u8]) -> Result<CertSummary, CertError> {
    CertInfo::parse(der, "certificate").map(|info| info.summary)
}

/// The SPIFFE ID of a DER certificate, by the X.509-SVID rules (exactly one URI SAN).
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, CertError> {
    CertInfo::parse(der, "certificate")?.spiffe_id()
}

fn san_to_string(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(ip);
                format!("IP:{}", std::net::Ipv6Addr::from(b))
            }
            _ => "IP:<malformed>".to_owned(),
        },
        _ => "other".to_owned(),
    }
}

fn hex_serial(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()),
    }
}
