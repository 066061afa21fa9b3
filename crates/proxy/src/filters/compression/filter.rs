//! The Compression filter: the request hook notes the coding the client prefers (when
//! the request matches the policy and accepts one it offers); the response hook
//! compresses the body as it streams when the response qualifies.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, Method, Response};

use super::{edit_response_head, negotiate, should_compress, CompressBody, CompressionPolicy};
use crate::body::RespBody;
use crate::filters::rate_limit::view;
use crate::filters::Flow;
use crate::request::RequestCtx;

#[derive(Clone)]
pub struct Compression {
    pub policy: Arc<CompressionPolicy>,
}

impl Compression {
    pub fn on_request(&self, cx: &mut RequestCtx, head: &Parts, host: &str) -> Flow {
        // The first policy that applies acts.
        if cx.filters.compress.is_some() || (!self.policy.matches.is_empty() && !self.policy.applies(&view(head, host, cx.port))) {
            return Flow::Next;
        }
        // A HEAD has no body to compress; an upgrade's bytes are not HTTP's.
        let skip = head.method == Method::HEAD || head.method == Method::CONNECT || crate::headers::is_upgrade(&head.headers);
        if !skip {
            cx.filters.compress = negotiate(&head.headers, &self.policy.encodings).map(|e| (e, self.policy.clone()));
        }
        Flow::Next
    }

    pub fn on_response(cx: &mut RequestCtx, resp: &mut Response<RespBody>) {
        // (Whichever Compression filter's hook runs first acts, with the policy that applied.)
        let Some((enc, policy)) = cx.filters.compress.take() else { return };
        // (The request side was checked when the coding was chosen.)
        if !should_compress(&policy, &Method::GET, &HeaderMap::new(), resp.status(), resp.headers()) {
            return;
        }
        edit_response_head(resp.headers_mut(), enc);
        let level = policy.levels.get(enc);
        let body = std::mem::replace(resp.body_mut(), RespBody::full(bytes::Bytes::new(), None));
        *resp.body_mut() = body.wrap(|b| CompressBody::new(b, enc, level));
    }
}
