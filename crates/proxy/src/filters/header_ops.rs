//! A route's `headers` operations: `request` set/add/remove on the way upstream,
//! `response` on the way back (a destination's own operations are applied with it,
//! when the upstream request and response are built).

use http::request::Parts;
use http::Response;

use super::Flow;
use crate::body::RespBody;

#[derive(Clone)]
pub struct HeaderOps {
    pub request: weft_config::HeaderOps,
    pub response: weft_config::HeaderOps,
}

impl HeaderOps {
    pub fn on_request(&self, head: &mut Parts) -> Flow {
        self.request.apply(&mut head.headers);
        Flow::Next
    }

    pub fn on_response(&self, resp: &mut Response<RespBody>) {
        self.response.apply(resp.headers_mut());
    }
}
