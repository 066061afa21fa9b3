//! The route phase, and the request filters after it: from the request's authority to
//! its virtual host and route, then to what it will do — answer locally (a direct
//! response, a redirect, a filter's answer) or go to a cluster. Synchronous: the
//! config snapshot is held only here, and what the request needs later is taken as
//! `Arc`s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use weft_config::matcher::RequestView;
use weft_config::{Action, LbPolicy, Route};
use weft_telemetry::ResponseFlags;

use crate::body::RespBody;
use crate::cluster::{Cluster, Endpoint};
use crate::filters::{Chain, Flow, Local};
use crate::headers::{self, HostBuf};
use crate::live::Hedge;
use crate::request::{RequestCtx, Side};

static HTTP2_SETTINGS: header::HeaderName = header::HeaderName::from_static("http2-settings");

/// Where routing sent a request.
pub(crate) struct Routed {
    pub chain: Arc<Chain>,
    /// How many of the chain's filters ran their request hook (the response passes
    /// back through those).
    pub ran: usize,
    /// How many ran before the one that made the request wait for a coalesced cache
    /// fill: an answer from the cache after the wait passes back through those only.
    pub before_wait: usize,
    pub next: Next,
}

pub(crate) enum Next {
    /// An answer made here (direct response, redirect, a filter's), without its record.
    Answer(Box<Response<RespBody>>),
    Forward(Box<Forward>),
}

/// A request on its way to a cluster. (Boxed in [`Next`]: it is the large case, and
/// the request's future carries the enum.)
pub(crate) struct Forward {
    pub head: Parts,
    pub body: Incoming,
    pub route: Arc<Route>,
    /// The weighted destination chosen, an index into the route's targets.
    pub target: usize,
    pub cluster: Arc<Cluster>,
    pub hash: Option<u64>,
    pub hedge: Option<Arc<Hedge>>,
    /// The path and query after `rewrite`, when the route rewrites.
    pub new_pq: Option<String>,
    /// The request's authority as sent upstream (before `rewrite.authority`).
    pub authority: HeaderValue,
    /// An HTTP/1.1 `Upgrade` (WebSocket): the client side's upgrade.
    pub upgrade: Option<OnUpgrade>,
    /// A `CONNECT` tunnel: the client side's upgrade.
    pub connect: Option<OnUpgrade>,
}

/// Routes `req` and runs its chain's request hooks. `Err` is an answer already
/// recorded (bad request, no route, a filter's refusal), moved once as the response.
#[allow(clippy::result_large_err)]
pub(crate) fn route(cx: &mut RequestCtx, mut req: Request<Incoming>) -> Result<Routed, Response<RespBody>> {
    let metrics = cx.conn.shared.metrics;
    let bad = |cx: &mut RequestCtx, msg: &'static str| {
        metrics.counters.bad_request.fetch_add(1, Ordering::Relaxed);
        crate::local::reject(cx, Local::new(StatusCode::BAD_REQUEST, ResponseFlags::DPE, msg))
    };
    let Some((_, raw_host, port)) = headers::authority(&req) else {
        return Err(bad(cx, "request has no Host or :authority\n"));
    };
    let Some(host) = HostBuf::new(raw_host) else {
        return Err(bad(cx, "host name too long\n"));
    };
    let host = host.as_str();
    let Some(authority) = headers::authority_value(&req) else {
        return Err(bad(cx, "invalid authority\n"));
    };
    if let Some(msg) = headers::conflicting_host(&req, cx.version) {
        return Err(bad(cx, msg));
    }
    // Routes match the normalized path, and it is the one forwarded. (A CONNECT names
    // an authority, not a path.)
    let mode = if req.method() == Method::CONNECT { crate::normalize::PathNormalization::None } else { cx.conn.shared.path_normalization };
    let normalized = match crate::normalize::normalize(req.uri().path(), mode) {
        Ok(std::borrow::Cow::Owned(p)) => Some(p),
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Err(e) => return Err(bad(cx, e.message())),
    };
    if let Some(p) = normalized {
        if headers::set_path(&mut req, &p).is_none() {
            return Err(bad(cx, "invalid path\n"));
        }
    }
    cx.port = port;
    if cx.conn.shared.access_log {
        cx.fin.log = Some(Box::new(crate::access_log::Entry {
            method: req.method().clone(),
            path: req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            authority: authority.to_str().unwrap_or_default().to_owned(),
            upstream: String::new(),
            route: String::new(),
        }));
    }
    let rt = cx.conn.shared.current.load();
    let vi = match cx.conn.side {
        Side::Outbound => rt.snap.vhost_index(host),
        Side::Inbound => rt.snap.inbound,
        Side::GatewayTls(key) => crate::gateway_tls::vhost_index(&rt.snap, key, host),
    };
    let Some(vi) = vi else {
        metrics.counters.no_route.fetch_add(1, Ordering::Relaxed);
        let msg = format!("no route: weft knows no service for host \"{host}\"\n");
        return Err(crate::local::reject(cx, Local::new(StatusCode::NOT_FOUND, ResponseFlags::NR, msg)));
    };
    let vh = &rt.snap.vhosts[vi];
    let path = req.uri().path();
    let query = req.uri().query();
    let view = RequestView {
        method: req.method().as_str(),
        path,
        query,
        authority: host,
        scheme: if matches!(cx.conn.side, Side::GatewayTls(_)) { "https" } else { "http" },
        port: port.unwrap_or(80),
        headers: req.headers(),
    };
    let Some(ri) = vh.route_index(&view) else {
        metrics.counters.no_route.fetch_add(1, Ordering::Relaxed);
        let msg = format!("no route: no route of {} matches {} {path}\n", vh.name, req.method());
        return Err(crate::local::reject(cx, Local::new(StatusCode::NOT_FOUND, ResponseFlags::NR, msg)));
    };
    let route = vh.routes[ri].clone();
    let chain = rt.chains[vi][ri].clone();
    if let Some(log) = cx.fin.log.as_mut() {
        log.route = route.name.clone();
    }
    // What the route makes of the request, decided while its match is at hand.
    let planned = match &route.action {
        Action::Direct { status, body } => Planned::Answer(Box::new(answer(*status, body.clone(), cx.version))),
        Action::Redirect(r) => {
            let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut resp = answer(r.status, bytes::Bytes::new(), cx.version);
            if let Some(l) = headers::redirect_location(r, host, port, pq) {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            Planned::Answer(Box::new(resp))
        }
        Action::Forward(wc) => {
            let target = wc.pick_index(fastrand::u32(..));
            cx.filters.target = target;
            let mut cluster = rt.clusters[wc.targets[target].cluster.resolve(port.unwrap_or(0))].clone();
            cx.fin.dest = cluster.dest;
            let hash = match &cluster.spec.lb {
                LbPolicy::Hash { key, .. } => {
                    let (hash, cookie) = crate::hashkey::hash_key(key, req.headers(), query, cx.conn.remote);
                    cx.filters.set_cookie = cookie;
                    hash
                }
                LbPolicy::Passthrough => {
                    cluster = Arc::new(passthrough(&cluster, host, port.unwrap_or(80), cx));
                    None
                }
                _ => None,
            };
            let new_pq = route.rewrite.as_ref().and_then(|_| {
                let matched = route.matches.iter().find(|m| m.is_match(&view)).and_then(|m| m.uri.as_ref());
                headers::rewrite_path(&route, matched, path, query)
            });
            Planned::Forward { target, cluster, hash, new_pq, hedge: chain.hedge.clone() }
        }
    };
    // (Looked at only with tracing on; None unless a Telemetry resource applies.)
    let telemetry = match cx.conn.shared.tracer.is_some() {
        false => None,
        true if cx.conn.side == Side::Inbound => rt.snap.tracing.inbound.clone(),
        true => rt.snap.tracing.outbound.clone(),
    };
    drop(rt);

    let connect = (req.method() == Method::CONNECT).then(|| hyper::upgrade::on(&mut req));
    // Only WebSocket is tunnelled; `h2c` (and HTTP2-Settings) is dropped and the request
    // goes on as HTTP/1.1, as Envoy does; any other protocol is refused (403, Envoy's
    // `upgrade_failed`).
    let upgrade = match cx.version == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE) {
        false => None,
        true => match headers::upgrade_kind(req.headers()) {
            headers::UpgradeKind::WebSocket => Some(hyper::upgrade::on(&mut req)),
            headers::UpgradeKind::Other => {
                let local = Local::new(StatusCode::FORBIDDEN, ResponseFlags::NONE, "upgrade refused: only websocket is proxied\n");
                return Err(crate::local::reject(cx, local));
            }
            headers::UpgradeKind::Stripped => {
                req.headers_mut().remove(&HTTP2_SETTINGS);
                None
            }
        },
    };
    let (mut head, body) = req.into_parts();
    // Hop-by-hop fields go before any filter sees the request: a client's `Connection:
    // x-user` must not remove a header a filter (or a route's header operation) sets.
    headers::strip_hop_by_hop(&mut head.headers);
    if cx.conn.side == Side::Inbound {
        crate::peer::set_forwarded_client_cert(&mut head.headers, cx.conn.peer.as_deref());
    } else if matches!(cx.conn.shared.role, weft_config::Role::Gateway(_)) {
        crate::gateway_tls::edge_headers(&mut head.headers, cx.conn.side);
    }
    // (Nothing is looked at when neither tracing nor request ids are on.)
    if cx.conn.shared.tracer.is_some() || cx.conn.shared.request_id {
        let pq = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = authority.to_str().unwrap_or(host);
        crate::trace::on_request(cx, &mut head.headers, &head.method, authority, pq, telemetry.as_deref());
        if let (Some(span), Planned::Forward { cluster, .. }) = (cx.fin.span.as_mut(), &planned) {
            span.cluster(&cluster.spec);
        }
    }
    if upgrade.is_some() {
        head.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        head.headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let mut ran = 0;
    let mut before_wait = None;
    for f in chain.filters.iter() {
        match f.on_request(cx, &mut head, host) {
            Flow::Next => {
                if before_wait.is_none() && cx.filters.cache_wait.is_some() {
                    before_wait = Some(ran);
                }
                ran += 1;
            }
            Flow::Reject(local) => return Err(crate::local::reject(cx, local)),
            Flow::Respond(resp) => return Ok(Routed { chain, ran, before_wait: ran, next: Next::Answer(resp) }),
        }
    }
    let before_wait = before_wait.unwrap_or(ran);
    let next = match planned {
        Planned::Answer(resp) => Next::Answer(resp),
        Planned::Forward { target, cluster, hash, new_pq, hedge } => {
            Next::Forward(Box::new(Forward { head, body, route, target, cluster, hash, hedge, new_pq, authority, upgrade, connect }))
        }
    };
    Ok(Routed { chain, ran, before_wait, next })
}

enum Planned {
    Answer(Box<Response<RespBody>>),
    Forward { target: usize, cluster: Arc<Cluster>, hash: Option<u64>, new_pq: Option<String>, hedge: Option<Arc<Hedge>> },
}

/// A response made by the proxy (its record is attached when it is sent).
fn answer(status: StatusCode, body: bytes::Bytes, version: Version) -> Response<RespBody> {
    let has_body = !body.is_empty();
    let mut r = Response::new(RespBody::full(body, None));
    *r.status_mut() = status;
    *r.version_mut() = version;
    if has_body {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// PASSTHROUGH: the endpoint is the address the client asked for.
fn passthrough(cluster: &Cluster, host: &str, port: u16, cx: &RequestCtx) -> Cluster {
    let spec = weft_config::EndpointSpec { address: host.to_owned(), port, weight: 1, labels: Default::default(), locality: None };
    let mut s = weft_config::ClusterSpec::clone(&cluster.spec);
    s.endpoints = vec![spec];
    let s = Arc::new(s);
    let none: std::collections::HashMap<(String, String), Arc<Endpoint>> = Default::default();
    Cluster::build(&s, &none, None, 1, cx.conn.shared.metrics, &Default::default(), &cx.conn.shared.transport, None)
}
