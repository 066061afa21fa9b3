//! SPIFFE IDs in Istio's shape: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! The ID is the one name a peer is authorized by, so parsing is strict: one canonical
//! spelling per identity (lowercase, no percent-encoding, no empty or dot segments, no
//! extra path), so that two strings that compare unequal never name the same workload and a
//! name that slips past the parser cannot smuggle a path, a newline or a second identity.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE spec's limit for the whole URI).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// A workload identity: who a certificate was issued to and what a policy names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a SPIFFE ID weft accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is {len} bytes, over the limit of {MAX_SPIFFE_ID_LEN}")]
    TooLong { len: usize },
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    NotSpiffe,
    #[error("SPIFFE ID path must be exactly /ns/<namespace>/sa/<service-account>")]
    BadPath,
    #[error("invalid trust domain: {0}")]
    TrustDomain(NameError),
    #[error("invalid namespace: {0}")]
    Namespace(NameError),
    #[error("invalid service account: {0}")]
    ServiceAccount(NameError),
}

/// Why one name (trust domain, namespace, service account) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty")]
    Empty,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("only lowercase letters, digits, '-' and '.' are allowed")]
    BadCharacter,
    #[error("each dot-separated part must start and end with a letter or digit")]
    BadLabel,
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each as [`SpiffeId::parse`] would.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
        validate_dns_label(namespace, 63).map_err(SpiffeIdError::Namespace)?;
        validate_dns_subdomain(service_account).map_err(SpiffeIdError::ServiceAccount)?;
        let id = SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        };
        let len = id.to_string().len();
        if len > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len });
        }
        Ok(id)
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`, refusing anything but that exact shape.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::NotSpiffe)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(SpiffeIdError::BadPath)?;
        validate_trust_domain(trust_domain)?;
        let mut parts = path.split('/');
        let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SpiffeIdError::BadPath);
        };
        SpiffeId::new(trust_domain, ns, sa)
    }

    /// The trust domain: which CA's certificates name this workload (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes-style namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account within the namespace.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// A trust domain is a DNS name (SPIFFE allows `_` too; weft keeps to DNS so that the same
/// string works as a hostname suffix).
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    validate_dns_subdomain(td).map_err(SpiffeIdError::TrustDomain)
}

/// DNS-1123 subdomain: dot-separated labels, 253 characters at most.
fn validate_dns_subdomain(s: &str) -> Result<(), NameError> {
    if s.len() > 253 {
        return Err(NameError::TooLong { max: 253 });
    }
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    s.split('.').try_for_each(|label| validate_dns_label(label, 63))
}

/// DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
fn validate_dns_label(s: &str, max: usize) -> Result<(), NameError> {
    if s.len() > max {
        return Err(NameError::TooLong { max });
    }
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(NameError::Empty);
    };
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.') {
        return Err(NameError::BadCharacter);
    }
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(first) || !alnum(last) || bytes.contains(&b'.') {
        return Err(NameError::BadLabel);
    }
    Ok(())
}
