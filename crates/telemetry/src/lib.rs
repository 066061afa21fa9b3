//! Telemetry: Istio's standard metrics (names and labels that dashboards and alerts
//! expect), Envoy's response flags, and weft's own counters.
//!
//! Recording is lock-free: a request's series is found in a concurrent map keyed by
//! small copyable values, then updated with relaxed atomics. Scrapes render text.
#![forbid(unsafe_code)]

mod flags;
mod histogram;
pub mod line_protocol;
mod registry;
mod render;
mod summary;
pub mod trace;

pub use flags::ResponseFlags;
pub use histogram::{Histogram, BYTES_BUCKETS, DURATION_BUCKETS_MS};
pub use registry::{
    Counters, DestId, DestLabels, DnsFailure, DnsResult, HandshakeFailure, Metrics, PeerId, PeerLabels, Protocol, SeriesKey,
    INTERCEPTED_KINDS,
};
pub use summary::{DestinationTotals, InboundTotals};
