//! Distributed tracing's parts that know nothing of a proxy's requests: the trace
//! context in headers ([`propagation`]: W3C and B3), finished spans ([`record`]) and
//! their export in batches from a bounded queue ([`export`]: OTLP over HTTP/protobuf or
//! gRPC). The proxy makes its spans from requests; the control plane from its API calls.

pub mod export;
#[cfg(test)]
mod otlp;
pub mod propagation;
pub mod record;
mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

pub use export::{Exporter, Protocol, Target};
pub use record::{method_value, SpanRecord, Value, KIND_CLIENT, KIND_SERVER};

/// Now, in nanoseconds since the Unix epoch (a span's clock).
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A random, non-zero id (a trace's 16 bytes, a span's 8).
pub fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = fastrand::u64(..).to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
