//! Building blocks of the response filters (issue 11): on-the-fly compression and an
//! RFC 9111 shared cache. Each part is self-contained — pure decisions on headers, body
//! wrappers, the store — so that a filter only strings them together.
//!
//! Policies come compiled from `weft_config` ([`weft_config::CompressionPolicy`],
//! [`weft_config::CachePolicy`]); the live state (the cache's entries and counters) is here.

pub mod cache;
pub mod compression;

/// The error type of the body wrappers: whatever the inner body failed with, or the codec.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
