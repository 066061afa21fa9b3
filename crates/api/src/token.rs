//! `POST /v1/tokens` (admin role): a new API token, for a user with a role or for a
//! workload bound to its namespace and service account (the bootstrap token a proxy
//! presents, as Istio's proxies present Kubernetes service-account tokens).

use serde::{Deserialize, Serialize};

use crate::{check_id, Message};

/// What a token lets its holder do. A workload token has no role: it acts as its
/// workload (follow the mesh, register and heartbeat its own service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read resources, history, registry, status, metrics; follow the mesh.
    Read,
    /// And apply, delete, roll back, register and deregister any service.
    Write,
    /// And create tokens.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// `POST /v1/tokens`: either a `role` or a workload (`namespace` and
/// `service_account`), never both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Valid for this long; none: until the signing key changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// A workload token good for at most this many certificates (1: single-use, a replay
    /// is refused); none: as many as asked while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

impl Message for TokenRequest {
    const WHAT: &'static str = "token request";
    const MAX_BYTES: usize = 4 << 10;

    fn check(&self) -> Result<(), String> {
        match (&self.role, &self.namespace, &self.service_account) {
            (Some(_), None, None) if self.uses.is_some() => return Err("uses: only workload tokens are counted".into()),
            (Some(_), None, None) => {}
            (None, Some(ns), Some(sa)) => {
                check_id("namespace", ns)?;
                check_id("service account", sa)?;
                if self.uses.is_some_and(|u| !(1..=10_000).contains(&u)) {
                    return Err("uses: 1 to 10,000 certificates".into());
                }
            }
            (Some(_), _, _) => return Err("a token has a role or a workload (namespace and service account), not both".into()),
            (None, _, _) => return Err("a token needs a role, or a namespace and a service account".into()),
        }
        Ok(())
    }
}

/// The new token (shown once; the control plane keeps only its signing key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub token: String,
    /// Its id, as the history and logs name it.
    pub id: String,
    /// Unix seconds; none: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl Message for TokenAnswer {
    const WHAT: &'static str = "token";
    const MAX_BYTES: usize = 16 << 10;
}

/// `POST /v1/certificate` (a workload's token): a CSR for the workload's own SPIFFE ID,
/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`. The private key
/// stays with the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The CSR, PEM.
    pub csr: String,
    /// Valid for this long (10 min to 30 days); none: 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Message for CertificateRequest {
    const WHAT: &'static str = "certificate request";
    const MAX_BYTES: usize = 80 << 10;

    fn check(&self) -> Result<(), String> {
        if self.csr.is_empty() || self.csr.len() > 64 << 10 {
            return Err("csr: a PEM certificate signing request of at most 64 KiB".into());
        }
        Ok(())
    }
}

/// The signed certificate, and what to verify peers with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAnswer {
    /// The SPIFFE ID it names.
    pub identity: String,
    /// The leaf (PEM).
    pub cert_pem: String,
    /// Intermediates between the leaf and a root (PEM; may be empty).
    pub chain_pem: String,
    /// The mesh's root bundle (PEM; may hold several roots while they rotate).
    pub roots_pem: String,
    /// Unix seconds.
    pub not_after: u64,
}

impl Message for CertificateAnswer {
    const WHAT: &'static str = "certificate";
    const MAX_BYTES: usize = 1 << 20;
}
