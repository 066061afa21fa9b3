//! The forward phase: pick an endpoint, build the upstream request, pass the
//! circuit breaker, and send it — one send path for every request, whatever its
//! route's retry policy, hedging and timeouts ([`crate::phases::send`]). Upgrades and
//! `CONNECT` leave here for [`crate::tunnel`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use weft_config::{Action, LbPolicy, Route, UpstreamProtocol};
use weft_telemetry::ResponseFlags;

use super::route::Forward;
use super::send::{self, Plan, TryBody};
use crate::body::{BodyState, ReqBody, RespBody};
use crate::filters::Local;
use crate::headers;
use crate::local::reject;
use crate::request::{InFlight, RequestCtx};

static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
static HTTP: HeaderValue = HeaderValue::from_static("http");

/// What forwarding came to.
pub(crate) enum Forwarded {
    /// The upstream's response, on its way to the response filters.
    Upstream(Response<RespBody>),
    /// An answer already recorded: a failure, or a tunnel.
    Done(Response<RespBody>),
}

pub(crate) async fn forward(cx: &mut RequestCtx, mut fwd: Box<Forward>) -> Forwarded {
    // Fields are taken from the box one by one (moving it out whole is a 400-byte copy).
    let (cluster, hash, route) = (fwd.cluster.clone(), fwd.hash, fwd.route.clone());
    let (upgrade, connect) = (fwd.upgrade.take(), fwd.connect.take());
    let metrics = cx.conn.shared.metrics;
    let Some(i) = cluster.pick(hash) else {
        metrics.counters.no_endpoint.fetch_add(1, Ordering::Relaxed);
        let msg = format!("no healthy upstream: {} has no endpoints\n", cluster.spec.name);
        return Forwarded::Done(reject(cx, Local::new(StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UH, msg)));
    };
    let ep = cluster.endpoints[i].clone();
    cx.fin.endpoint = Some(InFlight::start(ep.clone()));
    if let Some(log) = cx.fin.log.as_mut() {
        log.upstream = ep.id.clone();
    }
    if let Some(down) = connect {
        // Rare paths are boxed: their futures would otherwise grow every request's.
        return Forwarded::Done(Box::pin(crate::tunnel::connect(down, ep, cx.fin.take(), cx.conn.clone(), cx.version)).await);
    }
    let up_proto = match cluster.spec.pool.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 if upgrade.is_none() => Version::HTTP_2,
        UpstreamProtocol::Http2 => Version::HTTP_11,
        UpstreamProtocol::Client => cx.version,
    };
    let Action::Forward(wc) = &route.action else {
        // Routing sends only forwarding routes here.
        let msg = "internal error: route does not forward\n";
        return Forwarded::Done(reject(cx, Local::new(StatusCode::INTERNAL_SERVER_ERROR, ResponseFlags::NONE, msg)));
    };
    let dest = &wc.targets[fwd.target];
    let (head, body, new_pq, authority, hedge) = (fwd.head, fwd.body, fwd.new_pq, fwd.authority, fwd.hedge);
    let up_req = match upstream_request(head, body, &route, &dest.request_headers, &authority, new_pq, up_proto, cx, upgrade.is_some()) {
        Ok(r) => r,
        Err(msg) => return Forwarded::Done(reject(cx, Local::new(StatusCode::BAD_REQUEST, ResponseFlags::DPE, msg))),
    };
    let mirrored = cx.filters.mirror.is_some();
    let up_req = match cx.filters.mirror.take() {
        Some(mc) => crate::mirror::send(up_req, &mc, cx.conn.clone(), authority.to_str().unwrap_or_default()),
        None => up_req,
    };
    match cluster.breaker.admit(up_proto == Version::HTTP_11 && upgrade.is_none(), cluster.spec.pool.connect_timeout).await {
        Ok(ticket) => cx.fin.breaker = Some(ticket),
        Err(why) => {
            metrics.counters.overflow.fetch_add(1, Ordering::Relaxed);
            cx.fin.endpoint = None;
            let msg = format!("upstream overflow: circuit breaker open ({why:?})\n");
            return Forwarded::Done(reject(cx, Local::new(StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UO, msg)));
        }
    }
    if let Some(down) = upgrade {
        let fin = cx.fin.take();
        return Forwarded::Done(Box::pin(crate::tunnel::upgrade(up_req, Some(down), ep, fin, cx.conn.clone(), cx.version)).await);
    }

    // A body is kept for replay while it fits the buffer (a mirrored body streams to
    // the mirror instead, and is sent once). Only bodyless idempotent requests hedge.
    let (parts, body) = up_req.into_parts();
    let bodyless = body.is_end_stream();
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE);
    let body = match body {
        ReqBody::Empty => TryBody::None,
        // Kept for replay only when a retry may need it.
        ReqBody::Stream { body, state, tee: None } if !mirrored && route.retry.is_some() => {
            TryBody::Replay(crate::replay::Replaying::new(body, state))
        }
        other => TryBody::Once(other),
    };
    let hedge = hedge.filter(|_| idempotent && bodyless);
    let trace = cx.fin.span.as_ref().filter(|_| route.retry.is_some() || hedge.is_some()).map(|s| Box::new(s.try_parent()));
    let plan = Plan {
        policy: route.retry.as_ref(),
        hedge,
        cluster: &cluster,
        hash,
        passthrough: cluster.spec.lb == LbPolicy::Passthrough,
        deadline: route.timeout.map(|t| cx.start + t),
        grpc: cx.grpc,
        trace,
    };
    let result = send::send(cx, ep, &parts, &plan, body).await;
    cx.filters.admitted.clear();
    let up = match result {
        Ok(up) => up,
        Err(e) => {
            let (status, flag) = e.status_and_flag();
            let c = &metrics.counters;
            match flag {
                ResponseFlags::UF => c.upstream_connect_failure.fetch_add(1, Ordering::Relaxed),
                ResponseFlags::UT => c.upstream_timeout.fetch_add(1, Ordering::Relaxed),
                ResponseFlags::SI => c.stream_idle_timeouts.fetch_add(1, Ordering::Relaxed),
                // The client's fault: the endpoint's counters are left alone.
                ResponseFlags::DPE | ResponseFlags::DC => {
                    cx.fin.endpoint = None;
                    if flag == ResponseFlags::DPE { &c.bad_request } else { &c.downstream_reset }.fetch_add(1, Ordering::Relaxed)
                }
                _ => c.upstream_reset.fetch_add(1, Ordering::Relaxed),
            };
            return Forwarded::Done(reject(cx, Local::new(status, flag, format!("{e}\n"))));
        }
    };
    // A 101 is an answer only to a WebSocket upgrade (a tunnel, above): anything else
    // would turn the client's connection into one past every route.
    if up.head().0 == 101 {
        let msg = "upstream switched protocols without an upgrade\n";
        return Forwarded::Done(reject(cx, Local::new(StatusCode::BAD_GATEWAY, ResponseFlags::NONE, msg)));
    }
    // (Latency outlier detection already fed the same estimate.)
    if cluster.spec.lb == LbPolicy::PeakEwma {
        if let Some(f) = cx.fin.endpoint.as_ref().filter(|f| f.endpoint().outlier.is_none_or(|o| o.latency_mad_factor.is_none())) {
            f.endpoint()
                .load
                .observe(crate::request::now().saturating_duration_since(cx.start).as_nanos() as u64, crate::cluster::now_ns());
        }
    }
    Forwarded::Upstream(super::respond::from_upstream(cx, up))
}

/// Turns the client's request into the upstream one: hop-by-hop headers, the
/// destination's header operations, the rewrite, the URI form and version the
/// upstream speaks.
#[allow(clippy::too_many_arguments)]
fn upstream_request(
    mut parts: Parts,
    body: Incoming,
    route: &Route,
    ops: &weft_config::HeaderOps,
    authority: &HeaderValue,
    new_pq: Option<String>,
    up_proto: Version,
    cx: &mut RequestCtx,
    upgrade: bool,
) -> Result<Request<ReqBody>, &'static str> {
    let _ = upgrade; // (hop-by-hop fields were removed when the request was routed)
    ops.apply(&mut parts.headers);
    // (One look-up: `contains_key` then `insert` hashed the name twice.)
    parts.headers.entry(&X_FORWARDED_PROTO).or_insert_with(|| HTTP.clone());
    let authority = route.rewrite.as_ref().and_then(|r| r.authority.as_ref()).unwrap_or(authority);
    let pq = match &new_pq {
        Some(p) => p.as_str(),
        None => parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
    };
    if up_proto == Version::HTTP_2 {
        let a = authority.to_str().map_err(|_| "invalid authority\n")?;
        parts.uri = headers::absolute_uri(a, pq).ok_or("invalid authority or path\n")?;
        parts.headers.remove(header::HOST);
    } else {
        if new_pq.is_some() || parts.uri.authority().is_some() {
            parts.uri = pq.parse().map_err(|_| "invalid path\n")?;
        }
        // Keep the client's Host unless it differs (absolute form, h2, a rewrite).
        if parts.headers.get(header::HOST) != Some(authority) {
            parts.headers.insert(header::HOST, authority.clone());
        }
    }
    parts.version = up_proto;
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else {
        let state = Arc::new(BodyState::default());
        cx.fin.request_body = Some(state.clone());
        ReqBody::Stream { body, state, tee: None }
    };
    Ok(Request::from_parts(parts, body))
}
