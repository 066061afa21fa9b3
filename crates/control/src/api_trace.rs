//! Tracing of the control plane's API (`weft control-plane --otlp-endpoint …`): a
//! server span per call, in the caller's trace when it sent one (W3C or B3), else in a
//! new one sampled at `--trace-sampling` percent; exported over OTLP like the proxies'
//! spans (the same exporter, counted in `weft_trace_spans_exported_total` /
//! `_dropped_total` of the control plane's `/metrics`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::{HeaderMap, Method};
use weft_telemetry::trace::Target;
use weft_telemetry::trace::{method_value, propagation, random_id, unix_ns, Exporter, Protocol, SpanRecord, Value, KIND_SERVER};

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
    record: SpanRecord,
}

impl ApiTracer {
    /// Starts the exporter (its thread); an endpoint that is not a collector's URL is an error.
    pub fn start(o: &TraceOptions) -> Result<ApiTracer, String> {
        let target = Target::parse(&o.endpoint, o.protocol)?;
        let exported: &'static AtomicU64 = Box::leak(Box::default());
        let dropped: &'static AtomicU64 = Box::leak(Box::default());
        let resource = vec![("service.name", Value::Static("weft-control-plane")), ("telemetry.sdk.name", Value::Static("weft"))];
        let exporter = Exporter::start(target, resource, exported, dropped)?;
        Ok(ApiTracer { exporter, sampling: o.sampling.clamp(0.0, 100.0), exported, dropped })
    }

    /// The span of a call, if its trace is sampled.
    pub fn start_span(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiSpan> {
        let (incoming, decision) = propagation::extract_with_decision(headers);
        let sampled = match decision {
            Some(s) => s,
            None => fastrand::f64() * 100.0 < self.sampling,
        };
        if !sampled {
            return None;
        }
        // (The path only: a query may hold a token-like value; it is not recorded.)
        let path = shown(path);
        // (An extension method is the caller's token: kept to 32 bytes, as its attribute.)
        let target = format!("{} {path}", weft_telemetry::trace::record::client_text(method.as_str().as_bytes(), 32));
        let mut record = SpanRecord {
            trace_id: incoming.map_or_else(random_id, |i| i.trace_id),
            span_id: random_id(),
            parent: incoming.map(|i| i.span_id),
            name_len: target.len(),
            target,
            kind: KIND_SERVER,
            start_unix_ns: unix_ns(),
            ..SpanRecord::default()
        };
        record.set("http.method", method_value(method));
        record.set("http.url", Value::Text(path.to_owned()));
        record.set("component", Value::Static("control-plane"));
        Some(ApiSpan { exporter: self.exporter.clone(), record })
    }
}

impl ApiSpan {
    /// Ends the span with the answer's status and queues it.
    pub fn end(self, status: u16) {
        let mut r = self.record;
        r.set("http.status_code", Value::Int(i64::from(status)));
        r.error = status >= 500;
        r.end_unix_ns = unix_ns();
        self.exporter.send(r);
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
