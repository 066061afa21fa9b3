//! Consistent hashing by `httpCookie` with a `ttl`: when the client sent no cookie,
//! the proxy generated one to hash on (when routing); this filter sets it on the
//! response so that the client's next requests stick to the same endpoint.

use http::header::SET_COOKIE;
use http::Response;

use crate::body::RespBody;
use crate::request::RequestCtx;

/// In the chains of routes whose destinations hash on a generated cookie.
#[derive(Clone)]
pub struct HashCookie;

impl HashCookie {
    pub fn on_response(&self, cx: &mut RequestCtx, resp: &mut Response<RespBody>) {
        if let Some(c) = cx.filters.set_cookie.take() {
            resp.headers_mut().append(SET_COOKIE, c);
        }
    }
}
