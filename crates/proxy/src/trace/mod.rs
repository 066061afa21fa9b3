//! Distributed tracing, as Envoy does it in a mesh: with tracing on (or `--request-id`)
//! every request gets an `x-request-id` when it has none (a header added to every
//! request costs ~7 % of the plain path's instructions, so not by default); with a
//! collector configured (`--otlp-endpoint`),
//! each request is a span of this proxy's — a client span on the outbound side, a server
//! span on a sidecar's inbound side — in the trace its caller started (W3C
//! `traceparent`, or B3) or in a new one, and the upstream is told this span is its
//! parent. A trace is sampled by the caller's decision when it made one, else at random
//! (`--trace-sampling`, percent; Istio's default 1 %). Sampled spans are exported over
//! OTLP ([`export`]); unsampled ones cost the headers only.

pub mod export;
pub mod otlp;
pub mod propagation;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::request::{RequestCtx, Side};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A proxy's tracing: where spans go and how many traces it starts sampled.
pub struct Tracer {
    /// Percent (0–100) of new traces sampled.
    pub sampling: f64,
    pub exporter: Arc<export::Exporter>,
    /// `node_id` of the spans: the proxy's ID.
    pub node: String,
}

/// A sampled request's span, until its response ends ([`crate::finish::Finish`]).
pub struct SpanState {
    tracer: &'static Tracer,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    trace_state: String,
    kind: i32,
    name: String,
    start_unix_ns: u64,
    attributes: Vec<otlp::KeyValue>,
}

impl SpanState {
    /// The upstream cluster the request went to (`upstream_cluster`).
    pub fn cluster(&mut self, name: &str) {
        self.attributes.push(otlp::kv("upstream_cluster", name));
    }

    /// Ends the span with the response's status and flags and queues it for export.
    pub fn end(self, code: u16, flags: &str) {
        let mut attributes = self.attributes;
        attributes.push(otlp::kv_int("http.status_code", i64::from(code)));
        attributes.push(otlp::kv("response_flags", if flags.is_empty() { "-" } else { flags }));
        let error = code >= 500 || code == 0;
        let span = otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.trace_state,
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name,
            kind: self.kind,
            start_time_unix_nano: self.start_unix_ns,
            end_time_unix_nano: unix_ns().max(self.start_unix_ns),
            attributes,
            status: Some(otlp::Status { message: String::new(), code: if error { 2 } else { 0 } }),
        };
        self.tracer.exporter.send(span);
    }
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A random, non-zero id.
fn random_id<const N: usize>() -> [u8; N] {
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

/// A UUID v4, as Envoy makes `x-request-id`s (formatted on the stack: one allocation).
fn request_id() -> HeaderValue {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = random_id();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = D[(x >> 4) as usize];
        out[j + 1] = D[(x & 15) as usize];
        j += 2;
    }
    // (Hex and dashes: always a valid header value.)
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The request phase's part: `x-request-id` when absent; with a tracer, this proxy's
/// span in the caller's trace (or a new one) and the context the upstream sees.
pub fn on_request(cx: &mut RequestCtx, headers: &mut HeaderMap, method: &str, authority: &str, path: &str) {
    if cx.conn.shared.request_id {
        if let http::header::Entry::Vacant(v) = headers.entry(&X_REQUEST_ID) {
            v.insert(request_id());
        }
    }
    let Some(tracer) = cx.conn.shared.tracer.as_ref() else { return };
    let incoming = propagation::extract(headers);
    let sampled = match incoming.and_then(|i| i.sampled) {
        Some(s) => s,
        None => fastrand::f64() * 100.0 < tracer.sampling,
    };
    let trace_id = incoming.map_or_else(random_id, |i| i.trace_id);
    let parent = incoming.map(|i| i.span_id);
    let span_id: [u8; 8] = random_id();
    propagation::inject(headers, &trace_id, &span_id, parent.as_ref(), sampled, incoming.is_some_and(|i| i.b3));
    if !sampled {
        return;
    }
    let server = cx.conn.side == Side::Inbound;
    let request_id = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let attributes = vec![
        otlp::kv("guid:x-request-id", request_id),
        otlp::kv("http.method", method),
        otlp::kv("http.url", format!("http://{authority}{path}")),
        otlp::kv("node_id", tracer.node.as_str()),
        otlp::kv("component", "proxy"),
        otlp::kv("istio.namespace", cx.conn.shared.metrics.source_namespace()),
    ];
    cx.fin.span = Some(Box::new(SpanState {
        tracer,
        trace_id,
        span_id,
        parent,
        trace_state: headers.get(&TRACESTATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        kind: if server { otlp::KIND_SERVER } else { otlp::KIND_CLIENT },
        // Envoy's span name: the authority and the path's first part.
        name: format!("{authority}{}", path.split('?').next().unwrap_or("")),
        start_unix_ns: unix_ns(),
        attributes,
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        let a = super::request_id();
        let s = a.to_str().unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{s}");
        assert!(parts[2].starts_with('4') && matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(super::request_id(), a);
    }
}
