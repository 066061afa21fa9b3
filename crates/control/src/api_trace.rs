//! Tracing of the control plane's API (`weft control-plane --otlp-endpoint …`): a
//! server span per call, in the caller's trace when it sent one (W3C or B3), else in a
//! new one sampled at `--trace-sampling` percent; exported over OTLP like the proxies'
//! spans (the same exporter, counted in `weft_trace_spans_exported_total` /
//! `_dropped_total` of the control plane's `/metrics`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::{HeaderMap, Method};
use weft_telemetry::trace::{otlp, propagation, random_id, unix_ns, Exporter, Protocol, Target};

/// What the control plane's tracing is told at start.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub endpoint: String,
    pub protocol: Protocol,
    /// Percent (0–100) of new traces sampled.
    pub sampling: f64,
}

/// The API's tracer.
pub struct ApiTracer {
    exporter: Arc<Exporter>,
    sampling: f64,
    pub exported: &'static AtomicU64,
    pub dropped: &'static AtomicU64,
}

/// One sampled call's span, until its answer.
pub struct ApiSpan {
    exporter: Arc<Exporter>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    start_unix_ns: u64,
    attributes: Vec<otlp::KeyValue>,
}

impl ApiTracer {
    /// Starts the exporter (its thread); an endpoint that is not a collector's URL is an error.
    pub fn start(o: &TraceOptions) -> Result<ApiTracer, String> {
        let target = Target::parse(&o.endpoint, o.protocol)?;
        let exported: &'static AtomicU64 = Box::leak(Box::default());
        let dropped: &'static AtomicU64 = Box::leak(Box::default());
        let resource = vec![otlp::kv("service.name", "weft-control-plane"), otlp::kv("telemetry.sdk.name", "weft")];
        let exporter = Exporter::start(target, resource, exported, dropped)?;
        Ok(ApiTracer { exporter, sampling: o.sampling.clamp(0.0, 100.0), exported, dropped })
    }

    /// The span of a call, if its trace is sampled.
    pub fn start_span(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiSpan> {
        let incoming = propagation::extract(headers);
        let sampled = match incoming.and_then(|i| i.sampled) {
            Some(s) => s,
            None => fastrand::f64() * 100.0 < self.sampling,
        };
        if !sampled {
            return None;
        }
        // (The path only: a query may hold a token-like value; it is not recorded.)
        let path = shown(path);
        Some(ApiSpan {
            exporter: self.exporter.clone(),
            trace_id: incoming.map_or_else(random_id, |i| i.trace_id),
            span_id: random_id(),
            parent: incoming.map(|i| i.span_id),
            name: format!("{method} {path}"),
            start_unix_ns: unix_ns(),
            attributes: vec![otlp::kv("http.method", method.as_str()), otlp::kv("http.url", path), otlp::kv("component", "control-plane")],
        })
    }
}

impl ApiSpan {
    /// Ends the span with the answer's status and queues it.
    pub fn end(self, status: u16) {
        let mut attributes = self.attributes;
        attributes.push(otlp::kv_int("http.status_code", i64::from(status)));
        self.exporter.send(otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name,
            kind: otlp::KIND_SERVER,
            start_time_unix_nano: self.start_unix_ns,
            end_time_unix_nano: unix_ns().max(self.start_unix_ns),
            attributes,
            status: Some(otlp::Status { message: String::new(), code: if status >= 500 { 2 } else { 0 } }),
        });
    }
}

/// A request path as recorded: at most 256 bytes.
fn shown(path: &str) -> &str {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}
