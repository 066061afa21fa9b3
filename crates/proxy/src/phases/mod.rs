//! The request path, as phases driven by [`handle`]:
//!
//! ```text
//! accept ─► route ─► request filters ─► [waits] ─► forward ─► response filters ─► record
//! ```
//! - accept: the request's context ([`RequestCtx`]) and record ([`Finish`]);
//! - route ([`route`]): authority → virtual host → route → destination, then the
//!   route's filter chain's request hooks ([`crate::filters`]), synchronously, with the
//!   config snapshot held; afterwards the request holds only `Arc`s;
//! - waits: what the filters asked for (leaky-bucket queues, injected delays);
//! - forward ([`forward`], [`send`]): endpoint, upstream request, circuit breaker, the
//!   tries under the retry policy with hedges and timeouts;
//! - response filters, in reverse order ([`respond`]);
//! - record: the [`Finish`] rides on the response body and records the request when
//!   its last byte has gone (or the client went away).

pub(crate) mod forward;
pub(crate) mod respond;
pub(crate) mod route;
pub(crate) mod send;

use std::convert::Infallible;

use http::{header, Request, Response};
use hyper::body::Incoming;
use weft_telemetry::Protocol;

pub(crate) use send::Upstream;

use crate::body::RespBody;
use crate::finish::Finish;
pub use crate::request::{ConnCtx, RequestCtx};

/// One request, from the listener to the upstream and back.
pub async fn handle(conn: ConnCtx, req: Request<Incoming>) -> Result<Response<RespBody>, Infallible> {
    let mut cx = accept(conn, &req);
    if let Some(host) = unheld_host(&cx, &req) {
        // (Boxed: rare, and it would grow every request's future.)
        if let Err(answered) = Box::pin(discover(&mut cx, host)).await {
            return Ok(answered);
        }
    }
    let routed = match route::route(&mut cx, req) {
        Ok(r) => r,
        Err(answered) => return Ok(answered),
    };
    if !cx.filters.delay.is_zero() {
        tokio::time::sleep(cx.filters.delay).await;
        cx.filters.queued.clear();
    }
    let route::Routed { chain, mut ran, before_wait, mut next } = routed;
    if let Some(call) = cx.filters.auth.as_mut().and_then(|a| a.ext_authz.take()) {
        // A CUSTOM policy matched: its external authorizer decides before anything else.
        // (Boxed: rare, and it would grow every request's future.)
        if let Err(denied) = Box::pin(external(&mut cx, call, &mut next)).await {
            return Ok(denied);
        }
    }
    if let Some(waiting) = cx.filters.cache_wait.take() {
        // Another request is fetching this response for the cache: wait for it (boxed:
        // rare, and it would grow every request's future), at most until the route's timeout.
        let deadline = match &next {
            route::Next::Forward(f) => f.route.timeout.map(|t| cx.start + t),
            route::Next::Answer(_) => None,
        };
        if let Some(hit) = Box::pin(waiting.wait(&mut cx, deadline)).await {
            next = route::Next::Answer(Box::new(hit));
            ran = before_wait;
        }
    }
    let mut resp = match next {
        route::Next::Answer(resp) => *resp,
        route::Next::Forward(fwd) => match forward::forward(&mut cx, fwd).await {
            forward::Forwarded::Upstream(resp) => resp,
            forward::Forwarded::Done(resp) => return Ok(resp),
        },
    };
    respond::finish(&mut cx, &chain, ran, &mut resp);
    if let Some(auth) = cx.filters.auth.as_mut() {
        for (n, v) in auth.to_downstream.drain(..) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}

/// The external authorizer's check: when it allows, the headers it adds go onto the
/// request (and, kept in the request's auth state, onto the response); else its denial.
async fn external(cx: &mut RequestCtx, call: crate::ext_authz::Call, next: &mut route::Next) -> Result<(), Response<RespBody>> {
    let a = crate::ext_authz::check(cx, call).await?;
    if let route::Next::Forward(f) = next {
        for (n, v) in a.to_upstream {
            f.head.headers.insert(n, v);
        }
    }
    cx.filters.auth.get_or_insert_with(Default::default).to_downstream = a.to_downstream;
    Ok(())
}

/// On demand, an outbound request's host the installed config does not serve (nothing
/// else: a proxy holding the whole mesh never looks).
fn unheld_host(cx: &RequestCtx, req: &Request<Incoming>) -> Option<crate::headers::HostBuf> {
    cx.conn.shared.discovery.as_ref()?;
    if !matches!(cx.conn.side, crate::request::Side::Outbound) {
        return None;
    }
    let host = crate::headers::authority(req).and_then(|(_, h, _)| crate::headers::HostBuf::new(h))?;
    cx.conn.shared.current.load().snap.vhost_index(host.as_str()).is_none().then_some(host)
}

/// On demand: a host the installed config does not serve but the mesh has is asked for,
/// and the request waits for it (bounded); then routing decides as ever.
async fn discover(cx: &mut RequestCtx, host: crate::headers::HostBuf) -> Result<(), Response<RespBody>> {
    let Some(d) = &cx.conn.shared.discovery else { return Ok(()) };
    let msg = match d.discover(host.as_str()).await {
        crate::discovery::Discovered::TimedOut => {
            format!("no answer from the control plane for {:?} within {:?} (on-demand discovery)\n", host.as_str(), d.timeout)
        }
        crate::discovery::Discovered::Full => {
            format!(
                "{:?} not asked for: as many services as one proxy may ask for on demand are in use (on-demand discovery)\n",
                host.as_str()
            )
        }
        _ => return Ok(()),
    };
    cx.conn.shared.metrics.counters.discovery_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let local = crate::filters::Local::new(http::StatusCode::SERVICE_UNAVAILABLE, weft_telemetry::ResponseFlags::NC, msg);
    Err(crate::local::reject(cx, local))
}

/// The accept phase: the request's context and its record, started now.
fn accept(conn: ConnCtx, req: &Request<Incoming>) -> RequestCtx {
    let grpc = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut fin = Finish::new(conn.shared.metrics, if grpc { Protocol::Grpc } else { Protocol::Http }, crate::request::now());
    if let Some(p) = &conn.peer {
        fin.peer = p.metrics;
    }
    RequestCtx::new(conn, fin, req.version(), grpc)
}
