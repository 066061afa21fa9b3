//! Istio's `PeerAuthentication` (security.istio.io/v1, v1beta1): whether a workload's
//! inbound side requires mutual TLS, accepts it, or takes plaintext only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// The workloads it applies to (by label); none: every workload of its namespace
    /// (or of the mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per workload port (the app's port, as a string key in YAML): overrides `mtls`.
    /// (`None` when omitted: Istio refuses an empty map written out.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerMtls>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PeerMtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// `mtls.mode`. `UNSET` inherits from the parent scope (namespace, then mesh).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext, told apart per connection.
    Permissive,
    /// mTLS only.
    Strict,
}
