//! A child span per try when a sampled request is tried more than once (a route's
//! retry policy, a host's hedging): each try's span names the endpoint, the attempt and
//! whether it was a hedge, and ends with what that try came to — so a trace shows which
//! endpoint failed, how long each try took, and which hedge won. A retry's or a hedge's
//! upstream sees that try's span as its parent; the first try went out before anyone
//! knew there would be another, so its upstream saw the request's span, and its own span
//! is made when the second try starts. A request tried once has no child span (its own
//! span says it all: Istio's default retries cost a trace nothing until they retry), and
//! nothing here runs for unsampled requests.

use http::request::Parts;
use http::Request;
use weft_telemetry::trace::{otlp, propagation, random_id, unix_ns};

use super::{SpanState, Tracer};

/// What a try's span needs of its request's span (copied out of it, so the tries can
/// run while the request's record is borrowed elsewhere).
#[derive(Clone, Copy)]
pub struct TryParent {
    tracer: &'static Tracer,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    b3: bool,
}

/// One try's span, from its start to its outcome.
pub struct TrySpan {
    parent: TryParent,
    span_id: [u8; 8],
    name: String,
    start_unix_ns: u64,
    attributes: Vec<otlp::KeyValue>,
}

impl SpanState {
    /// The parent of this request's try spans.
    pub fn try_parent(&self) -> TryParent {
        TryParent { tracer: self.tracer, trace_id: self.trace_id, span_id: self.span_id, b3: self.b3 }
    }
}

impl TryParent {
    /// A try's span, starting now: the `attempt`-th (1 = the first), to `endpoint` of `cluster`.
    pub fn child(&self, cluster: &str, endpoint: &str, attempt: u32, hedge: bool) -> TrySpan {
        self.child_from(cluster, endpoint, attempt, hedge, unix_ns())
    }

    /// A try's span that started at `start_unix_ns` (the first try, known to be one of
    /// several only once the next starts).
    pub fn child_from(&self, cluster: &str, endpoint: &str, attempt: u32, hedge: bool, start_unix_ns: u64) -> TrySpan {
        TrySpan {
            parent: *self,
            span_id: random_id(),
            name: format!("{cluster} try {attempt}"),
            start_unix_ns,
            attributes: vec![
                otlp::kv("upstream_cluster", cluster),
                otlp::kv("upstream_address", endpoint),
                otlp::kv_int("retry.attempt", i64::from(attempt)),
                otlp::kv("hedge", if hedge { "true" } else { "false" }),
            ],
        }
    }
}

/// What a try came to.
pub enum TryOutcome<'a> {
    /// A response head, with its status.
    Response(u16),
    /// No response: the error.
    Failed(&'a str),
    /// Dropped: another try answered first.
    Cancelled,
}

impl TrySpan {
    /// The request as this try sends it: the same, with this try's span as the
    /// upstream's parent.
    pub fn parts(&self, parts: &Parts) -> Parts {
        let (mut p, ()) = Request::new(()).into_parts();
        p.method = parts.method.clone();
        p.uri = parts.uri.clone();
        p.version = parts.version;
        p.headers = parts.headers.clone();
        let t = &self.parent;
        propagation::inject(&mut p.headers, &t.trace_id, &self.span_id, Some(&t.span_id), true, t.b3);
        p
    }

    /// Ends the span with the try's outcome and queues it for export.
    pub fn end(self, outcome: TryOutcome<'_>) {
        let mut attributes = self.attributes;
        let (error, message) = match outcome {
            TryOutcome::Response(code) => {
                attributes.push(otlp::kv_int("http.status_code", i64::from(code)));
                (code >= 500, String::new())
            }
            TryOutcome::Failed(e) => (true, e.to_owned()),
            TryOutcome::Cancelled => (false, "cancelled: another try answered first".to_owned()),
        };
        let p = self.parent;
        let span = otlp::Span {
            trace_id: p.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: p.span_id.to_vec(),
            name: self.name,
            kind: otlp::KIND_CLIENT,
            start_time_unix_nano: self.start_unix_ns,
            end_time_unix_nano: unix_ns().max(self.start_unix_ns),
            attributes,
            status: Some(otlp::Status { message, code: if error { 2 } else { 0 } }),
        };
        p.tracer.exporter.send(span);
    }
}
