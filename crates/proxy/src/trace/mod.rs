//! Distributed tracing, as Envoy does it in a mesh: with tracing on (or `--request-id`)
//! every request gets an `x-request-id` when it has none (a header added to every
//! request costs ~7 % of the plain path's instructions, so not by default); with a
//! collector configured (`--otlp-endpoint`), a sampled request is a span of this
//! proxy's — a client span on the outbound side, a server span on a sidecar's inbound
//! side — in the trace its caller started (W3C `traceparent`, or B3) or in a new one,
//! and the upstream is told this span is its parent. A trace is sampled by the caller's
//! decision when it made one, else by its `x-request-id` (the same answer at every
//! proxy: `--trace-sampling` percent, or a Telemetry resource's; Istio's default 1 %).
//! An unsampled request gains nothing but its request id. Spans are exported over OTLP
//! ([`export`]); a retried or hedged request has a child span per try ([`tries`]).

mod tries;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_config::telemetry::{Tag, Tracing};
use weft_telemetry::trace::record::client_text;
use weft_telemetry::trace::{export, method_value, propagation, random_id, unix_ns, SpanRecord, Value, KIND_CLIENT, KIND_SERVER};

use crate::request::{RequestCtx, Side};

pub use tries::{TryOutcome, TryParent, TrySpan};

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
    record: SpanRecord,
    /// The request came with B3 headers (its tries' context goes out in B3 too).
    b3: bool,
}

impl SpanState {
    /// The upstream cluster the request went to (`upstream_cluster`) and, on the
    /// outbound side, the service it is for (`peer.service`).
    pub fn cluster(&mut self, spec: &weft_config::ClusterSpec) {
        self.record.set("upstream_cluster", Value::Text(spec.name.clone()));
        if self.record.kind == KIND_CLIENT {
            self.record.set("peer.service", Value::Text(spec.service.clone()));
        }
    }

    /// Ends the span with the response's status and flags and queues it for export.
    pub fn end(self, code: u16, flags: weft_telemetry::ResponseFlags) {
        let mut r = self.record;
        r.set("http.status_code", Value::Int(i64::from(code)));
        r.set("response_flags", if flags.is_empty() { Value::Static("-") } else { Value::Text(flags.to_string()) });
        r.error = code >= 500 || code == 0;
        r.end_unix_ns = unix_ns();
        self.tracer.exporter.send(r);
    }
}

/// A custom tag's value for a request with `headers`.
fn tag_value(tag: &Tag, headers: &HeaderMap) -> Value {
    match tag {
        Tag::Literal(v) => Value::Shared(v.clone()),
        Tag::Environment { name, default } => match std::env::var_os(name) {
            Some(v) => Value::client(v.as_encoded_bytes()),
            None => Value::Text(default.clone()),
        },
        Tag::Header { name, default } => headers.get(name).map_or_else(|| Value::Text(default.clone()), |v| Value::client(v.as_bytes())),
    }
}

/// What the proxy's spans come from: its service and namespace.
pub fn resource(service: &str, namespace: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("service.name", Value::Text(format!("{service}.{namespace}"))),
        ("k8s.namespace.name", Value::Text(namespace.to_owned())),
        ("telemetry.sdk.name", Value::Static("weft")),
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

/// The request phase's part: `x-request-id` when absent; with a tracer and a sampled
/// trace, this proxy's span in the caller's trace (or a new one) and the context the
/// upstream sees.
///
/// `telemetry`: what the Telemetry resources that apply to this proxy's side say
/// (sampling, reporting, custom tags), when any does.
pub fn on_request(
    cx: &mut RequestCtx,
    headers: &mut HeaderMap,
    method: &http::Method,
    authority: &str,
    path: &str,
    telemetry: Option<&Tracing>,
) {
    // The request id's sampling key, when there is one (see `propagation::sampled_by_key`).
    // A gateway replaces an outside client's id (Envoy's edge default): a client must not
    // choose its trace's sampling, nor collide with another's ids.
    let edge = matches!(cx.conn.shared.role, weft_config::Role::Gateway(_));
    let mut made = None;
    let key = match cx.conn.shared.request_id {
        false => None,
        true => Some(match headers.entry(&X_REQUEST_ID) {
            http::header::Entry::Occupied(o) if !edge => propagation::sampling_key(o.get().as_bytes()),
            entry => {
                let b: [u8; 16] = random_id();
                let id = request_id_of(b);
                made = Some(id.clone());
                match entry {
                    http::header::Entry::Vacant(v) => _ = v.insert(id),
                    http::header::Entry::Occupied(mut o) => _ = o.insert(id),
                }
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            }
        }),
    };
    let Some(tracer) = cx.conn.shared.tracer.as_ref() else { return };
    let (incoming, decision) = propagation::extract_with_decision(headers);
    let percent = telemetry.and_then(|t| t.sampling).unwrap_or(tracer.sampling);
    let sampled = match (decision, key) {
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
    propagation::inject(headers, &trace_id, &span_id, parent.as_ref(), true, b3);
    if telemetry.is_some_and(|t| t.disable_reporting) {
        return;
    }
    // One string for the name (Envoy's: the authority and the path without its query)
    // and `http.url`.
    let mut target = String::with_capacity(authority.len() + path.len());
    target.push_str(authority);
    target.push_str(path);
    let name_len = authority.len() + path.find('?').unwrap_or(path.len());
    let mut record = SpanRecord {
        trace_id,
        span_id,
        parent,
        // (W3C: a tracestate of 512 characters is enough to pass on; the span keeps that much.)
        trace_state: headers.get(&TRACESTATE).map(|v| client_text(v.as_bytes(), 512)),
        target,
        name_len,
        url: true,
        kind: if cx.conn.side == Side::Inbound { KIND_SERVER } else { KIND_CLIENT },
        start_unix_ns: unix_ns(),
        attributes: Vec::with_capacity(10 + telemetry.map_or(0, |t| t.tags.len())),
        ..SpanRecord::default()
    };
    // Our own id is shared; a client's is copied (see `Value::Own`).
    match made {
        Some(id) => record.set("guid:x-request-id", Value::Own(id)),
        None => {
            if let Some(id) = headers.get(&X_REQUEST_ID) {
                record.set("guid:x-request-id", Value::client(id.as_bytes()));
            }
        }
    }
    record.set("http.method", method_value(method));
    // ('static: the tracer and the metrics live as long as the process.)
    record.set("node_id", Value::Static(tracer.node.as_str()));
    record.set("component", Value::Static("proxy"));
    record.set("istio.namespace", Value::Static(cx.conn.shared.metrics.source_namespace()));
    if cx.conn.side == Side::Inbound {
        // Who called: its address, and over mTLS its SPIFFE ID.
        record.set("peer.address", Value::Text(cx.conn.remote.ip().to_string()));
        if let Some(peer) = &cx.conn.peer {
            record.set("peer.principal", Value::Text(peer.principal.to_string()));
        }
    }
    for (name, tag) in telemetry.map_or(&[][..], |t| &t.tags[..]) {
        record.set_named(name.clone(), tag_value(tag, headers));
    }
    cx.fin.span = Some(Box::new(SpanState { tracer, record, b3 }));
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
