//! Responses the proxy makes itself: 404 no route, 503 no endpoint, errors,
//! direct responses and redirects.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode, Version};
use weft_telemetry::ResponseFlags;

use crate::body::RespBody;
use crate::filters::Local;
use crate::finish::Finish;
use crate::request::RequestCtx;

/// A filter's or a phase's local answer for `cx`, recorded now.
pub fn reject(cx: &mut RequestCtx, local: Local) -> Response<RespBody> {
    let fin = cx.fin.take();
    let mut resp = match local.grpc {
        Some(code) => {
            let msg = std::str::from_utf8(&local.body).unwrap_or("").trim_end();
            let msg = HeaderValue::from_str(msg).unwrap_or(HeaderValue::from_static("weft local reply"));
            grpc_reply_with(fin, code, local.flags, msg, cx.version)
        }
        None => reply(fin, local.status, local.flags, local.body, cx.version),
    };
    if let Some(secs) = local.retry_after {
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(v) = local.www_authenticate {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

static TEXT: HeaderValue = HeaderValue::from_static("text/plain");
static GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// A trailers-only gRPC answer: HTTP 200 with `grpc-status` (and a message) in the head.
pub fn grpc_reply(fin: Finish, code: u8, flags: ResponseFlags, message: &'static str, version: Version) -> Response<RespBody> {
    grpc_reply_with(fin, code, flags, HeaderValue::from_static(message), version)
}

fn grpc_reply_with(mut fin: Finish, code: u8, flags: ResponseFlags, message: HeaderValue, version: Version) -> Response<RespBody> {
    fin.code = 200;
    fin.grpc_status = i16::from(code);
    fin.flags.insert(flags);
    let mut r = Response::new(RespBody::full(Bytes::new(), None));
    *r.version_mut() = version;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, GRPC.clone());
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert("grpc-message", message);
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
