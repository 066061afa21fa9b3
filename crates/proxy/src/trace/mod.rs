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

mod tries;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_config::telemetry::{Tag, Tracing};
use weft_telemetry::trace::{export, otlp, propagation, random_id, unix_ns};

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
    /// The request came with B3 headers (its tries' context goes out in B3 too).
    b3: bool,
}

pub use tries::{TryOutcome, TryParent, TrySpan};

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

/// A custom tag's value for a request with `headers`.
fn tag_value(tag: &Tag, headers: &HeaderMap) -> String {
    match tag {
        Tag::Literal(v) => v.clone(),
        Tag::Environment { name, default } => std::env::var(name).unwrap_or_else(|_| default.clone()),
        Tag::Header { name, default } => headers.get(name).and_then(|v| v.to_str().ok()).map_or_else(|| default.clone(), str::to_owned),
    }
}

/// What the proxy's spans come from: its service and namespace.
pub fn resource(service: &str, namespace: &str) -> Vec<otlp::KeyValue> {
    vec![
        otlp::kv("service.name", format!("{service}.{namespace}")),
        otlp::kv("k8s.namespace.name", namespace),
        otlp::kv("telemetry.sdk.name", "weft"),
    ]
}

/// A UUID v4 from 16 random bytes, as Envoy makes `x-request-id`s (formatted on the
/// stack: one allocation).
fn request_id_of(mut b: [u8; 16]) -> HeaderValue {
    const D: &[u8; 16] = b"0123456789abcdef";
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
///
/// `telemetry`: what the Telemetry resources that apply to this proxy's side say
/// (sampling, reporting, custom tags), when any does.
pub fn on_request(cx: &mut RequestCtx, headers: &mut HeaderMap, method: &str, authority: &str, path: &str, telemetry: Option<&Tracing>) {
    // The request id's sampling key, when there is one (see `propagation::sampled_by_key`).
    let key = match cx.conn.shared.request_id {
        false => None,
        true => Some(match headers.entry(&X_REQUEST_ID) {
            http::header::Entry::Vacant(v) => {
                let b: [u8; 16] = random_id();
                v.insert(request_id_of(b));
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            }
            http::header::Entry::Occupied(o) => propagation::sampling_key(o.get().as_bytes()),
        }),
    };
    let Some(tracer) = cx.conn.shared.tracer.as_ref() else { return };
    let incoming = propagation::extract(headers);
    let percent = telemetry.and_then(|t| t.sampling).unwrap_or(tracer.sampling);
    let sampled = match (incoming.and_then(|i| i.sampled), key) {
        (Some(s), _) => s,
        (None, Some(key)) => propagation::sampled_by_key(key, percent),
        (None, None) => fastrand::f64() * 100.0 < percent,
    };
    // Not sampled: nothing is added. The next proxy makes the same decision from the same
    // x-request-id (or follows the caller's context, passed on as it came).
    if !sampled {
        return;
    }
    let trace_id = incoming.map_or_else(random_id, |i| i.trace_id);
    let parent = incoming.map(|i| i.span_id);
    let span_id: [u8; 8] = random_id();
    let b3 = incoming.is_some_and(|i| i.b3);
    propagation::inject(headers, &trace_id, &span_id, parent.as_ref(), sampled, b3);
    if telemetry.is_some_and(|t| t.disable_reporting) {
        return;
    }
    let server = cx.conn.side == Side::Inbound;
    let request_id = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut attributes = vec![
        otlp::kv("guid:x-request-id", request_id),
        otlp::kv("http.method", method),
        otlp::kv("http.url", format!("http://{authority}{path}")),
        otlp::kv("node_id", tracer.node.as_str()),
        otlp::kv("component", "proxy"),
        otlp::kv("istio.namespace", cx.conn.shared.metrics.source_namespace()),
    ];
    for (name, tag) in telemetry.map_or(&[][..], |t| &t.tags[..]) {
        attributes.push(otlp::kv(name, tag_value(tag, headers)));
    }
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
        b3,
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        let a = super::request_id_of(super::random_id());
        let s = a.to_str().unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{s}");
        assert!(parts[2].starts_with('4') && matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(super::request_id_of(super::random_id()), a);
    }
}
