//! The response phases: an upstream response made the client's (hop-by-hop headers,
//! the client's version, a streamed body), then
//! the response filters, then the record attached to the body, which records the
//! request when its last byte has gone.

use http::Response;

use super::send::Upstream;
use crate::body::RespBody;
use crate::filters::{self, Chain};
use crate::headers;
use crate::request::RequestCtx;

/// The client's response from the upstream's (its record not yet attached). The
/// route's and the destination's header operations are the `header_ops` filter's.
pub(crate) fn from_upstream(cx: &RequestCtx, up: Upstream) -> Response<RespBody> {
    let (mut parts, body) = match up {
        Upstream::Hyper(r, ret) => {
            let (p, b) = r.into_parts();
            (p, RespBody::upstream(b, None, ret))
        }
        Upstream::Raw(r) => {
            let (p, b) = r.into_parts();
            (p, RespBody::raw(b, None))
        }
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.version = cx.version;
    Response::from_parts(parts, body.idle_after(cx.conn.shared.stream_idle))
}

/// Runs the response filters of the first `ran` filters of `chain` and attaches the
/// request's record to the body.
pub(crate) fn finish(cx: &mut RequestCtx, chain: &Chain, ran: usize, resp: &mut Response<RespBody>) {
    if ran > 0 {
        filters::respond(chain, ran, cx, resp);
    }
    let mut fin = cx.fin.take();
    fin.code = resp.status().as_u16();
    if cx.grpc {
        fin.grpc_status_from(resp.headers());
    }
    resp.body_mut().attach(fin);
}
