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
use weft_telemetry::trace::{propagation, random_id, unix_ns, SpanRecord, Value, KIND_CLIENT};

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
    record: SpanRecord,
}

impl SpanState {
    /// The parent of this request's try spans.
    pub fn try_parent(&self) -> TryParent {
        TryParent { tracer: self.tracer, trace_id: self.record.trace_id, span_id: self.record.span_id, b3: self.b3 }
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
        let target = format!("{cluster} try {attempt}");
        let mut record = SpanRecord {
            trace_id: self.trace_id,
            span_id: random_id(),
            parent: Some(self.span_id),
            name_len: target.len(),
            target,
            kind: KIND_CLIENT,
            start_unix_ns,
            attributes: Vec::with_capacity(5),
            ..SpanRecord::default()
        };
        record.set("upstream_cluster", Value::Text(cluster.to_owned()));
        record.set("upstream_address", Value::Text(endpoint.to_owned()));
        record.set("retry.attempt", Value::Int(i64::from(attempt)));
        record.set("hedge", Value::Static(if hedge { "true" } else { "false" }));
        TrySpan { parent: *self, record }
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
        propagation::inject(&mut p.headers, &t.trace_id, &self.record.span_id, Some(&t.span_id), true, t.b3);
        p
    }

    /// Ends the span with the try's outcome and queues it for export.
    pub fn end(self, outcome: TryOutcome<'_>) {
        let mut r = self.record;
        match outcome {
            TryOutcome::Response(code) => {
                r.set("http.status_code", Value::Int(i64::from(code)));
                r.error = code >= 500;
            }
            TryOutcome::Failed(e) => {
                r.error = true;
                r.message = e.to_owned();
            }
            TryOutcome::Cancelled => r.message = "cancelled: another try answered first".to_owned(),
        }
        r.end_unix_ns = unix_ns();
        self.parent.tracer.exporter.send(r);
    }
}
