//! weft's control protocol: every message the control plane, the proxies following it,
//! `weft`'s client commands and `bench-control-plane` exchange, defined once with the
//! one function that encodes it and the one that decodes it. Nothing else in weft
//! frames these messages by hand, so a key or a document can hold any bytes without
//! being read as framing (a namespace holding `\n# remove …` once made every proxy
//! drop a service).
//!
//! The transport is HTTP/1.1 (see `weft-control`'s `api` module for the routes); the
//! bodies are JSON. The mesh answer, the one large message (~10 MB for a
//! 10,000-service mesh), embeds each document as raw JSON, so a proxy decodes the
//! envelope without building a tree of every document and hands each one, as text,
//! to the config loader (see [`mesh`]).
//!
//! Decoding is bounded: every message has a largest size checked before parsing
//! (`serde_json` also caps nesting at 128), and what it yields is at most as large
//! as its input.

pub mod admin;
pub mod mesh;
pub mod query;
pub mod report;
pub mod token;
pub mod watch;

pub use admin::{
    AckReport, ApplyRequest, ChangeEntry, Committed, EndpointInfo, EndpointRef, ErrorAnswer, FileText, HistoryEntry, Listing, ProxyStatus,
    Registration, ResourceQuery, Rollback, StatusAnswer,
};
pub use mesh::{EncodedAnswer, MeshAnswer, MeshBody, MeshEncoder, MeshKind};
pub use report::{DestinationCounts, Ejected, InboundCounts, Recommendation, Report};
pub use serde_json::value::RawValue;
pub use token::{CertificateAnswer, CertificateRequest, Role, TokenAnswer, TokenRequest};
pub use watch::{Identity, Outcome, WatchRequest};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message that could not be decoded: which one, and why (serde's reason, with the
/// line and column, or the size limit it passed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

impl DecodeError {
    pub fn new(what: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError { what, reason: reason.into() }
    }
}

/// Parses JSON after checking its size, so that a hostile peer cannot make the
/// decoder hold more than `max` bytes' worth.
fn json<'a, T: serde::Deserialize<'a>>(what: &'static str, bytes: &'a [u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::new(what, format!("{} bytes, over the {max} allowed", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::new(what, e.to_string()))
}

/// A JSON message body: one `encode` and one `decode` per type.
pub trait Message: Serialize + DeserializeOwned {
    /// Its name in decoding errors.
    const WHAT: &'static str;
    /// The largest encoding accepted.
    const MAX_BYTES: usize;

    /// Compact JSON and a newline (readable with curl).
    fn encode(&self) -> Vec<u8> {
        // (Serialising these types cannot fail: their maps have string keys.)
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: Self = json(Self::WHAT, bytes, Self::MAX_BYTES)?;
        m.check().map_err(|reason| DecodeError::new(Self::WHAT, reason))?;
        Ok(m)
    }

    /// What serde cannot say about a decoded message (e.g. a node id's characters).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An identifier a peer chose (a node id, a label): not empty, at most 253 bytes, no
/// control characters — it ends up in logs, `weft status` lines and metrics.
pub fn check_id(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || s.chars().any(char::is_control) {
        return Err(format!("{field} {:?}: must be 1 to 253 bytes without control characters", truncate(s, 64)));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
