//! What happens when a request ends: metrics, endpoint counters, the access log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use weft_telemetry::{DestId, Metrics, PeerId, Protocol, ResponseFlags, SeriesKey};

use crate::body::BodyState;
use crate::request::InFlight;

/// Carried by a request from routing to its response's last byte; `complete`
/// records it exactly once.
pub struct Finish {
    pub metrics: &'static Metrics,
    pub dest: DestId,
    pub code: u16,
    pub flags: ResponseFlags,
    pub protocol: Protocol,
    pub grpc_status: i16,
    /// The mTLS peer's interned principals (0: plaintext).
    pub peer: PeerId,
    pub start: Instant,
    /// The client's request body as it streamed (bytes, whether it broke off).
    pub request_body: Option<Arc<BodyState>>,
    pub response_bytes: u64,
    /// The endpoint that answered (or was last tried), and its share of the load.
    pub endpoint: Option<InFlight>,
    /// The cluster's circuit-breaker slot, released when the request ends.
    pub breaker: Option<crate::breaker::Ticket>,
    pub log: Option<Box<crate::access_log::Entry>>,
    /// This proxy's span of the request, when its trace is sampled ([`crate::trace`]).
    pub span: Option<Box<crate::trace::SpanState>>,
    done: bool,
    mid_body_reset: bool,
}

impl Finish {
    pub fn new(metrics: &'static Metrics, protocol: Protocol, start: Instant) -> Self {
        Finish {
            metrics,
            dest: DestId(0),
            code: 0,
            flags: ResponseFlags::NONE,
            protocol,
            grpc_status: -1,
            peer: PeerId(0),
            start,
            request_body: None,
            response_bytes: 0,
            endpoint: None,
            breaker: None,
            log: None,
            span: None,
            done: false,
            mid_body_reset: false,
        }
    }

    /// Moves the record out, leaving a spent one that records nothing.
    pub fn take(&mut self) -> Finish {
        let mut spent = Finish::new(self.metrics, self.protocol, self.start);
        spent.done = true;
        std::mem::replace(self, spent)
    }

    /// Reads `grpc-status` from response headers (trailers-only) or trailers.
    pub fn grpc_status_from(&mut self, h: &HeaderMap) {
        if let Some(v) = h.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<i16>().ok()) {
            self.grpc_status = v;
        }
    }

    pub fn downstream_reset(&mut self) {
        self.flags.insert(ResponseFlags::DC);
        self.metrics.counters.downstream_reset.fetch_add(1, Ordering::Relaxed);
    }

    /// The upstream broke off mid-body. Counted when the request is recorded, once
    /// it is known whether the client's own abort caused it (then it is DC instead).
    /// The response stopped mid-body for want of upstream data (flag SI).
    pub fn stream_idle(&mut self) {
        self.flags.insert(ResponseFlags::SI);
        self.metrics.counters.stream_idle_timeouts.fetch_add(1, Ordering::Relaxed);
        self.mid_body_reset = true;
    }

    pub fn upstream_reset(&mut self) {
        self.flags.insert(ResponseFlags::UC);
        self.mid_body_reset = true;
    }

    /// Records the request; called once when its response has gone out.
    pub fn complete(mut self) {
        self.record();
    }

    fn record(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let ms = crate::request::now().saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        self.breaker = None;
        let mut req_bytes = 0;
        if let Some(b) = &self.request_body {
            req_bytes = b.bytes.load(Ordering::Relaxed);
            // The upstream broke because the client's body did: the client is at fault.
            let counted = self.flags.contains(ResponseFlags::DC) || self.flags.contains(ResponseFlags::DPE);
            if b.aborted.load(Ordering::Relaxed) && !counted {
                self.flags.0 &= !ResponseFlags::UC.0;
                self.mid_body_reset = false;
                self.downstream_reset();
            }
        }
        if self.mid_body_reset {
            self.metrics.counters.upstream_reset.fetch_add(1, Ordering::Relaxed);
        }
        // Outbound over the mesh's mTLS: the endpoint's principals, once it answered.
        let peer = match &self.endpoint {
            Some(ep) if self.peer == PeerId(0) && !self.flags.contains(ResponseFlags::UF) => ep.endpoint().peer,
            _ => self.peer,
        };
        let key =
            SeriesKey { dest: self.dest, code: self.code, flags: self.flags, protocol: self.protocol, grpc_status: self.grpc_status, peer };
        self.metrics.record(key, ms, req_bytes, self.response_bytes);
        if let Some(ep) = self.endpoint.take() {
            let ep = ep.endpoint();
            ep.requests.fetch_add(1, Ordering::Relaxed);
            if self.code >= 500 || !self.flags.is_empty() {
                ep.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(log) = &self.log {
            log.write(self, ms, req_bytes);
        }
        if let Some(span) = self.span.take() {
            span.end(self.code, self.flags);
        }
    }
}

impl Drop for Finish {
    /// Dropped unrecorded: the request was cut short before its response completed
    /// (the client went away and hyper dropped the request's future or body).
    fn drop(&mut self) {
        if !self.done {
            self.downstream_reset();
            self.record();
        }
    }
}
