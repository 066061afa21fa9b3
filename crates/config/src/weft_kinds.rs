//! weft's own kinds (`policy.weft.dev/v1alpha1`), for what Istio has no field for.

use serde::{Deserialize, Serialize};

use crate::duration::Dur;
use crate::istio::HttpMatchRequest;

pub const POLICY_VERSIONS: [&str; 1] = ["policy.weft.dev/v1alpha1"];

/// Local rate limiting of the requests to one host (optionally only those that match).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[serde(default)]
    pub host: String,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_bucket: Option<TokenBucketSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaky_bucket: Option<LeakyBucketSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<AdaptiveConcurrencySpec>,
}

/// In-flight requests limited to what keeps latency near its measured minimum.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveConcurrencySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_window: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rtt_interval: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rtt_samples: Option<u32>,
    /// Percent of latency above the minimum tolerated before the limit shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buffer_percent: Option<f64>,
}

/// Envoy's local rate limit bucket.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenBucketSpec {
    #[serde(default)]
    pub max_tokens: u32,
    /// Defaults to 1, as Envoy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_interval: Option<Dur>,
}

/// Requests wait in a bounded queue and leave at a steady rate.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakyBucketSpec {
    /// Requests per second.
    #[serde(default)]
    pub rate: f64,
    /// How many may wait at once.
    #[serde(default)]
    pub queue: u32,
    /// The longest one may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Dur>,
}

/// Active health checking of a host's endpoints (Istio has none).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

/// `grpc.health.v1.Health/Check` for `service` (empty: the server as a whole).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcProbeSpec {
    #[serde(default)]
    pub service: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbeSpec {
    #[serde(default)]
    pub path: String,
    /// Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
}

/// Request hedging for a host: idempotent requests get a second try on another endpoint
/// when the first has not answered within `delay`; the first answer wins.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hedging {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Dur>,
    /// Hedge after this percentile (0–100, exclusive) of the host's recent latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_percentile: Option<f64>,
    /// Tries in all, the first included (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// On-the-fly compression of a host's responses (Envoy's compressor filter, with
/// gzip, brotli and zstd chosen by the client's `Accept-Encoding`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    #[serde(default)]
    pub host: String,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// The server's preference, best first (`gzip`, `br`, `zstd`); breaks the client's ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encodings: Option<Vec<String>>,
    /// Responses whose `Content-Length` is below this are sent as they are (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_content_length: Option<u64>,
    /// Media types compressed (parameters ignored); default: Envoy's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_types: Option<Vec<String>>,
    /// One level for every codec (`level: 5`) or one per codec (`level: {gzip: 6, br: 4}`);
    /// kept as JSON so that validation can name the offending key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<serde_json::Value>,
}

/// A shared HTTP cache (RFC 9111) in front of a host.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseCache {
    #[serde(default)]
    pub host: String,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Bytes the cache may hold, bodies and headers counted (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// The largest response stored (default 1 MiB, or `maxBytes` if smaller); larger
    /// ones stream through uncached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<u64>,
}
