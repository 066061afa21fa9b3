//! The watch request: what a proxy (or `bench-control-plane`'s simulated ones) sends
//! on each long poll of `POST /v1/watch`, and on `POST /v1/mesh` at start. It says
//! who the proxy is, the revision it holds, how long to wait for a newer one, what
//! scopes its mesh (namespace and labels, for Sidecars), and the outcome of the last
//! answer it got — an ACK, or a NACK with the reason — named by that answer's nonce,
//! as xDS does. Repeating the last outcome on every watch lets a restarted control
//! plane learn each proxy's revision at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{check_id, truncate, Message};

/// Hosts a proxy may ask for on demand at most (beyond, it should follow the whole mesh).
pub const MAX_ON_DEMAND_HOSTS: usize = 2048;

/// A NACK's reason is cut to this many bytes: a mesh with thousands of errors would
/// otherwise be repeated in full on every watch (and pass [`WatchRequest::MAX_BYTES`]).
pub const MAX_REASON_BYTES: usize = 8 << 10;

/// What a control plane scopes a proxy's mesh by (its Sidecar).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How the proxy took the last answer, naming it by its nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Installed.
    Ack { nonce: u64, revision: u64 },
    /// Refused (the proxy keeps its last good mesh), and why.
    Nack { nonce: u64, revision: u64, reason: String },
}

impl Outcome {
    /// A NACK, its reason cut to [`MAX_REASON_BYTES`].
    pub fn nack(nonce: u64, revision: u64, reason: &str) -> Outcome {
        Outcome::Nack { nonce, revision, reason: truncate(reason, MAX_REASON_BYTES).to_owned() }
    }

    pub fn nonce(&self) -> u64 {
        match self {
            Outcome::Ack { nonce, .. } | Outcome::Nack { nonce, .. } => *nonce,
        }
    }

    pub fn revision(&self) -> u64 {
        match self {
            Outcome::Ack { revision, .. } | Outcome::Nack { revision, .. } => *revision,
        }
    }

    /// The NACK's reason; `None` for an ACK.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ack { .. } => None,
            Outcome::Nack { reason, .. } => Some(reason),
        }
    }
}

/// `POST /v1/watch` (and `POST /v1/mesh`, which answers at once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    /// The proxy's `--node`; none for an anonymous fetch (its ACK then comes with the
    /// first watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The revision held (0: none): the answer is what changed since.
    #[serde(default)]
    pub since: u64,
    /// How long the control plane may wait for a revision past `since`.
    #[serde(default)]
    pub wait_ms: u64,
    /// None: the whole mesh, unscoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The outcome of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Outcome>,
    /// When the proxy's workload certificate expires (unix seconds), for `weft status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<u64>,
    /// On-demand discovery: the hosts (as the answer's `names` give them) the proxy has
    /// asked for; the answer holds their documents (and what their VirtualServices route
    /// to) and the mesh's names. None: everything its Sidecar admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// On demand: the revision of the names the proxy holds (none: it has none); the
    /// answer carries them only if they changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_since: Option<u64>,
    /// On demand: the last `newly` of `hosts` are new since the answer the proxy holds (at
    /// `since`), the others were asked for then: the answer is a delta (what the new hosts
    /// bring, and what changed since in the whole set), given at once. None or 0: `hosts`
    /// is answered as a set (whole when `since` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newly: Option<u32>,
}

impl Message for WatchRequest {
    const WHAT: &'static str = "watch request";
    const MAX_BYTES: usize = 640 << 10;

    fn check(&self) -> Result<(), String> {
        if let Some(n) = &self.node {
            check_id("node", n)?;
        }
        if let Some(id) = &self.identity {
            if id.namespace.chars().any(char::is_control) || id.namespace.len() > 253 {
                return Err(format!("namespace {:?}: at most 253 bytes without control characters", truncate(&id.namespace, 64)));
            }
            for (k, v) in &id.labels {
                check_id("label", k)?;
                if v.chars().any(char::is_control) || v.len() > 253 {
                    return Err(format!("label {k}: value at most 253 bytes without control characters"));
                }
            }
        }
        if let Some(n) = self.newly.filter(|n| *n > 0) {
            if self.hosts.as_ref().is_none_or(|h| n as usize > h.len()) {
                return Err(format!("newly: {n}, more than the hosts asked for"));
            }
        }
        if let Some(hosts) = &self.hosts {
            if hosts.len() > MAX_ON_DEMAND_HOSTS {
                return Err(format!("hosts: {} asked for, at most {MAX_ON_DEMAND_HOSTS} (follow the whole mesh instead)", hosts.len()));
            }
            if let Some(h) =
                hosts.iter().find(|h| h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_control() || c.is_whitespace() || c == ','))
            {
                return Err(format!("hosts: {:?}: 1 to 253 bytes, no spaces, commas or control characters", truncate(h, 64)));
            }
        }
        Ok(())
    }
}
