//! A route's `headers` operations: `request` set/add/remove on the way upstream,
//! `response` on the way back, then the chosen destination's `response` operations, so
//! that the most specific wins (as Istio configures Envoy). (A destination's `request`
//! operations are applied when the upstream request is built, after these.)

use http::request::Parts;
use http::Response;

use super::Flow;
use crate::body::RespBody;

#[derive(Clone)]
pub struct HeaderOps {
    pub request: weft_config::HeaderOps,
    pub response: weft_config::HeaderOps,
    /// Each destination's `response` operations, by its index in the route's targets.
    pub destinations: Vec<weft_config::HeaderOps>,
}

impl HeaderOps {
    pub fn on_request(&self, head: &mut Parts) -> Flow {
        self.request.apply(&mut head.headers);
        Flow::Next
    }

    pub fn on_response(&self, target: usize, resp: &mut Response<RespBody>) {
        self.response.apply(resp.headers_mut());
        if let Some(ops) = self.destinations.get(target) {
            ops.apply(resp.headers_mut());
        }
    }
}
