//! Fault injection (`http[].fault`): an abort answers here with the configured HTTP or
//! gRPC status (flag FI); a delay holds the request before it is forwarded (flag DI).

use std::sync::atomic::Ordering;

use weft_config::AbortWith;
use weft_telemetry::ResponseFlags;

use super::{Flow, Local};
use crate::request::RequestCtx;

#[derive(Clone)]
pub struct Fault(pub weft_config::Fault);

impl Fault {
    pub fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        let counters = &cx.conn.shared.metrics.counters;
        if let Some((abort, fraction)) = self.0.abort {
            if weft_resilience::sampled(fraction, fastrand::f64()) {
                counters.faults_aborted.fetch_add(1, Ordering::Relaxed);
                let mut local = Local::new(http::StatusCode::OK, ResponseFlags::FI, "fault filter abort\n");
                match abort {
                    AbortWith::Http(status) => local.status = status,
                    AbortWith::Grpc(code) => local.grpc = Some(code),
                }
                return Flow::Reject(local);
            }
        }
        if let Some((d, fraction)) = self.0.delay {
            if weft_resilience::sampled(fraction, fastrand::f64()) {
                cx.fin.flags.insert(ResponseFlags::DI);
                counters.faults_delayed.fetch_add(1, Ordering::Relaxed);
                cx.filters.delay = cx.filters.delay.max(d);
            }
        }
        Flow::Next
    }
}
