//! Istio's `Telemetry` (telemetry.istio.io/v1, v1alpha1): its `tracing` part — how
//! many traces the selected proxies sample, whether they report spans, and the custom
//! tags their spans carry. `metrics` and `accessLogging` are read (so a file written for
//! Istio loads) and not applied: weft's metrics and access log have flags of their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::peer_authentication::WorkloadSelector;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Gateway API targets: not served by weft (refused when given with a selector, as Istio does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<serde_json::Value>,
    #[serde(default)]
    pub tracing: Vec<TracingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logging: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TracingMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TracingMatch {
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Which side's spans a rule is for: the outbound (client) side, the inbound (server)
/// side, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// A span tag: exactly one of a fixed value, the proxy's environment variable, or a
/// request header.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedTag>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedTag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}
