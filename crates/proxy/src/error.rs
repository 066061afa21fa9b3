//! Upstream failures, each with the status code, response flag and message a client gets.

use http::StatusCode;
use weft_telemetry::ResponseFlags;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connect error: {0}")]
    Connect(String),
    #[error("upstream reset before response headers: {0}")]
    Reset(String),
    #[error("upstream request timeout")]
    Timeout,
    /// No response head within the stream idle timeout (no route or per-try timeout set).
    #[error("stream timeout")]
    Idle,
    /// The client's request body failed: malformed (400, flag DPE) or cut short
    /// (flag DC). Not the endpoint's fault: no outlier detection, no retry.
    #[error("{}", if *malformed { "bad request: malformed request body" } else { "downstream disconnected during the request body" })]
    Client { malformed: bool },
}

impl UpstreamError {
    pub fn from_hyper(e: hyper::Error) -> Self {
        UpstreamError::Reset(e.to_string())
    }

    /// Envoy's answers: 503 UF for connect failures, 503 UC for resets, 504 UT for timeouts.
    pub fn status_and_flag(&self) -> (StatusCode, ResponseFlags) {
        match self {
            UpstreamError::Connect(_) => (StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UF),
            UpstreamError::Reset(_) => (StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UC),
            UpstreamError::Timeout => (StatusCode::GATEWAY_TIMEOUT, ResponseFlags::UT),
            // Envoy's answer when a stream idles out before its response starts.
            UpstreamError::Idle => (StatusCode::REQUEST_TIMEOUT, ResponseFlags::SI),
            UpstreamError::Client { malformed: true } => (StatusCode::BAD_REQUEST, ResponseFlags::DPE),
            UpstreamError::Client { malformed: false } => (StatusCode::BAD_REQUEST, ResponseFlags::DC),
        }
    }
}
