//! Responses the proxy makes itself: 404 no route, 503 no endpoint, errors,
//! direct responses and redirects.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode, Version};
use weft_telemetry::ResponseFlags;

use crate::body::RespBody;
use crate::finish::Finish;

static TEXT: HeaderValue = HeaderValue::from_static("text/plain");
static GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// A trailers-only gRPC answer: HTTP 200 with `grpc-status` (and a message) in the head.
pub fn grpc_reply(mut fin: Finish, code: u8, flags: ResponseFlags, message: &'static str, version: Version) -> Response<RespBody> {
    fin.code = 200;
    fin.grpc_status = i16::from(code);
    fin.flags.insert(flags);
    let mut r = Response::new(RespBody::full(Bytes::new(), None));
    *r.version_mut() = version;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, GRPC.clone());
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert("grpc-message", HeaderValue::from_static(message));
    fin.complete();
    r
}

pub fn reply(mut fin: Finish, status: StatusCode, flags: ResponseFlags, body: Bytes, version: Version) -> Response<RespBody> {
    fin.code = status.as_u16();
    fin.flags.insert(flags);
    fin.response_bytes = body.len() as u64;
    let has_body = !body.is_empty();
    let mut r = Response::new(RespBody::full(body, None));
    *r.status_mut() = status;
    *r.version_mut() = version;
    if has_body {
        r.headers_mut().insert(CONTENT_TYPE, TEXT.clone());
    }
    // A local reply has nothing left to stream: record it now.
    fin.complete();
    r
}
