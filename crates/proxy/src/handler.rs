//! One request, from the listener to the upstream and back: route by host and
//! VirtualService, pick a destination and an endpoint, forward over a pooled
//! connection, and stream the response back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use weft_config::matcher::RequestView;
use weft_config::{AbortWith, Action, LbPolicy, Limiter, Route, UpstreamProtocol, WeightedTarget};
use weft_telemetry::{Protocol, ResponseFlags};

use crate::body::{BodyState, ReqBody, RespBody};
use crate::cluster::{Cluster, Endpoint};
use crate::error::UpstreamError;
use crate::finish::Finish;
use crate::headers::{self, HostBuf};
use crate::state::Shared;
use crate::{h1client, local, mirror, pool, retry, tunnel};

/// What a connection's requests share.
#[derive(Clone, Copy)]
pub struct ConnCtx {
    pub shared: &'static Shared,
    pub remote: SocketAddr,
    pub worker: usize,
}

static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
static HTTP: HeaderValue = HeaderValue::from_static("http");

pub async fn handle(ctx: ConnCtx, req: Request<Incoming>) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let metrics = ctx.shared.metrics;
    let grpc = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut fin = Finish::new(metrics, if grpc { Protocol::Grpc } else { Protocol::Http }, start);
    let version = req.version();

    let Some((_, raw_host, port)) = headers::authority(&req) else {
        metrics.counters.bad_request.fetch_add(1, Ordering::Relaxed);
        return Ok(local::reply(fin, StatusCode::BAD_REQUEST, ResponseFlags::DPE, "request has no Host or :authority\n".into(), version));
    };
    let Some(host) = HostBuf::new(raw_host) else {
        metrics.counters.bad_request.fetch_add(1, Ordering::Relaxed);
        return Ok(local::reply(fin, StatusCode::BAD_REQUEST, ResponseFlags::DPE, "host name too long\n".into(), version));
    };
    let host = host.as_str();
    let Some(authority) = headers::authority_value(&req) else {
        metrics.counters.bad_request.fetch_add(1, Ordering::Relaxed);
        return Ok(local::reply(fin, StatusCode::BAD_REQUEST, ResponseFlags::DPE, "invalid authority\n".into(), version));
    };

    if ctx.shared.access_log {
        fin.log = Some(Box::new(crate::access_log::Entry {
            method: req.method().clone(),
            path: req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            authority: authority.to_str().unwrap_or_default().to_owned(),
            upstream: String::new(),
            route: String::new(),
        }));
    }
    let rt = ctx.shared.current.load();
    let Some(vh) = rt.snap.vhost(host) else {
        metrics.counters.no_route.fetch_add(1, Ordering::Relaxed);
        return Ok(local::reply(
            fin,
            StatusCode::NOT_FOUND,
            ResponseFlags::NR,
            format!("no route: weft knows no service for host \"{host}\"\n").into(),
            version,
        ));
    };

    let path = req.uri().path();
    let query = req.uri().query();
    let view = RequestView {
        method: req.method().as_str(),
        path,
        query,
        authority: host,
        scheme: "http",
        port: port.unwrap_or(80),
        headers: req.headers(),
    };
    // Rate limits; a leaky bucket's wait happens once the snapshot is let go.
    // (Several matching leaky buckets each hold a place; the longest wait applies.)
    let mut queued: (Vec<weft_resilience::bucket::Queued>, std::time::Duration) = (Vec::new(), std::time::Duration::ZERO);
    // Adaptive concurrency: held until the response head is back (or the request fails).
    let mut admitted: Vec<Admitted> = Vec::new();
    for limit in &vh.rate_limits {
        if !limit.applies(&view) {
            continue;
        }
        let now = crate::cluster::now_ns();
        let verdict = match &limit.limiter {
            Limiter::Token(b) => b.try_take(now),
            Limiter::Leaky(b) => b.admit(now).map(|wait| {
                if !wait.is_zero() {
                    queued.0.push(b.enqueue());
                    queued.1 = queued.1.max(wait);
                }
            }),
            Limiter::Adaptive(a) => {
                if let Some(t) = a.try_acquire(now) {
                    admitted.push(Admitted(a.clone(), Some(t)));
                    continue;
                }
                metrics.counters.shed.fetch_add(1, Ordering::Relaxed);
                let msg = format!("overloaded: adaptive concurrency limit {} reached ({})\n", a.limit(), limit.name);
                return Ok(local::reply(fin, StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UO, msg.into(), version));
            }
        };
        if let Err(wait) = verdict {
            metrics.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let msg = format!("local rate limit exceeded ({})\n", limit.name);
            let mut resp = local::reply(fin, StatusCode::TOO_MANY_REQUESTS, ResponseFlags::RL, msg.into(), version);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return Ok(resp);
        }
    }
    let Some(route) = vh.route(&view) else {
        metrics.counters.no_route.fetch_add(1, Ordering::Relaxed);
        return Ok(local::reply(
            fin,
            StatusCode::NOT_FOUND,
            ResponseFlags::NR,
            format!("no route: no route of {} matches {} {path}\n", vh.name, req.method()).into(),
            version,
        ));
    };
    if let Some(log) = fin.log.as_mut() {
        log.route = route.name.clone();
    }
    let wc = match &route.action {
        Action::Direct { status, body } => {
            let mut resp = local::reply(fin, *status, ResponseFlags::NONE, body.clone(), version);
            route.response_headers.apply(resp.headers_mut());
            return Ok(resp);
        }
        Action::Redirect(r) => {
            let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let loc = headers::redirect_location(r, host, port, pq);
            let mut resp = local::reply(fin, r.status, ResponseFlags::NONE, bytes::Bytes::new(), version);
            if let Some(l) = loc {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            route.response_headers.apply(resp.headers_mut());
            return Ok(resp);
        }
        Action::Forward(wc) => wc,
    };
    let target = wc.pick(fastrand::u32(..));
    let cluster_idx = target.cluster.resolve(port.unwrap_or(0));
    let cluster = &rt.clusters[cluster_idx];
    fin.dest = cluster.dest;

    // Fault injection: an abort answers here; a delay waits once the snapshot is let go.
    let mut fault_delay = None;
    if let Some(fault) = &route.fault {
        if let Some((abort, fraction)) = fault.abort {
            if weft_resilience::sampled(fraction, fastrand::f64()) {
                metrics.counters.faults_aborted.fetch_add(1, Ordering::Relaxed);
                return Ok(match abort {
                    AbortWith::Http(status) => local::reply(fin, status, ResponseFlags::FI, "fault filter abort\n".into(), version),
                    AbortWith::Grpc(code) => local::grpc_reply(fin, code, ResponseFlags::FI, "fault filter abort", version),
                });
            }
        }
        fault_delay = fault.delay.filter(|(_, fraction)| weft_resilience::sampled(*fraction, fastrand::f64())).map(|(d, _)| d);
    }

    let (hash, set_cookie) = match &cluster.spec.lb {
        LbPolicy::Hash { key, .. } => crate::hashkey::hash_key(key, req.headers(), query, ctx.remote),
        _ => (None, None),
    };
    let ep = if cluster.spec.lb == LbPolicy::Passthrough {
        passthrough(cluster, host, port.unwrap_or(80), ctx)
    } else {
        cluster.pick(hash).map(|i| cluster.endpoints[i].clone())
    };
    let Some(ep) = ep else {
        metrics.counters.no_endpoint.fetch_add(1, Ordering::Relaxed);
        let msg = format!("no healthy upstream: {} has no endpoints\n", cluster.spec.name);
        return Ok(local::reply(fin, StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UH, msg.into(), version));
    };
    ep.load.start();
    fin.endpoint = Some(ep.clone());
    if let Some(log) = fin.log.as_mut() {
        log.upstream = ep.id.clone();
    }

    if req.method() == Method::CONNECT {
        // Rare paths are boxed: their futures would otherwise grow every request's (see `send` below).
        return Ok(Box::pin(tunnel::connect(req, ep, fin, ctx)).await);
    }
    let upgrade = version == Version::HTTP_11 && headers::is_upgrade(req.headers());
    let new_pq = if route.rewrite.is_some() {
        let matched = route.matches.iter().find(|m| m.is_match(&view)).and_then(|m| m.uri.as_ref());
        headers::rewrite_path(route, matched, path, query)
    } else {
        None
    };
    let up_proto = match cluster.spec.pool.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 if !upgrade => Version::HTTP_2,
        UpstreamProtocol::Http2 => Version::HTTP_11,
        UpstreamProtocol::Client => version,
    };
    let mirror_to = route
        .mirror
        .as_ref()
        .filter(|(_, pct)| *pct >= 1.0 || fastrand::f64() < *pct)
        .map(|(c, _)| &rt.clusters[c.resolve(port.unwrap_or(0))]);
    let timeout = route.timeout;
    let observe = cluster.spec.lb == LbPolicy::PeakEwma;
    let up_req = match build_upstream(req, route, target, &authority, new_pq, up_proto, &mut fin, upgrade) {
        Ok(r) => r,
        Err(msg) => return Ok(local::reply(fin, StatusCode::BAD_REQUEST, ResponseFlags::DPE, msg.into(), version)),
    };
    let (up_req, down_upgrade) = up_req;
    // What the response needs from the config, so the snapshot is not held across I/O
    // (empty operations clone without allocating).
    let resp_ops = (route.response_headers.clone(), target.response_headers.clone());
    let mirrored = mirror_to.is_some();
    let up_req = match mirror_to {
        Some(mc) => mirror::send(up_req, mc, ctx, authority.to_str().unwrap_or_default()),
        None => up_req,
    };
    let home = crate::outlier::Home { cluster: cluster_idx, revision: rt.revision };
    let breaker = cluster.breaker.armed().then(|| (cluster.breaker.clone(), cluster.spec.pool.connect_timeout));
    // Requests follow the route's retry policy; a body is kept for replay while it
    // fits the buffer (a mirrored body streams to the mirror instead). Only bodyless
    // idempotent requests are hedged.
    let bodyless = !upgrade && up_req.body().is_end_stream();
    let idempotent =
        matches!(*up_req.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE);
    let hedge = vh.hedging.clone().filter(|_| idempotent && bodyless);
    let policy = route.retry.clone().or_else(|| hedge.as_ref().map(|_| weft_config::RetryPolicy::none()));
    let retry_plan = policy.filter(|_| !upgrade && (bodyless || !mirrored)).map(|policy| retry::Plan {
        policy,
        hedge,
        home,
        hash,
        passthrough: cluster.spec.lb == LbPolicy::Passthrough,
        breaker: breaker.as_ref().map(|(b, _)| b.clone()),
        deadline: timeout.map(|t| start + t),
        grpc,
    });
    drop(rt);

    if !queued.0.is_empty() {
        tokio::time::sleep(queued.1).await;
        drop(queued);
    }
    if let Some(d) = fault_delay {
        fin.flags.insert(ResponseFlags::DI);
        metrics.counters.faults_delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(d).await;
    }
    if let Some((b, wait)) = &breaker {
        match b.admit(up_proto == Version::HTTP_11 && !upgrade, *wait).await {
            Ok(ticket) => fin.breaker = Some(ticket),
            Err(why) => {
                metrics.counters.overflow.fetch_add(1, Ordering::Relaxed);
                if let Some(ep) = fin.endpoint.take() {
                    ep.load.finish();
                }
                let msg = format!("upstream overflow: circuit breaker open ({why:?})\n");
                return Ok(local::reply(fin, StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UO, msg.into(), version));
            }
        }
    }

    if upgrade {
        return Ok(Box::pin(tunnel::upgrade(up_req, down_upgrade, ep, fin, ctx, version)).await);
    }

    let result = if let Some(plan) = &retry_plan {
        let (parts, body) = up_req.into_parts();
        let body = match body {
            ReqBody::Stream { body, state, tee: None } => Some(crate::replay::Replaying::new(body, state)),
            _ => None,
        };
        retry::send(ctx, &mut fin, ep, &parts, plan, body).await
    } else {
        // Boxed: hyper's client futures are kilobytes, and this future is moved whole
        // into hyper's dispatcher for every request (a memcpy of its size). Routes take
        // this path only without retries (`attempts: 0`) or with a mirrored body.
        let send = Box::pin(async {
            if up_proto == Version::HTTP_2 {
                pool::send_h2(&ep, ctx.worker, up_req).await.map(|r| Upstream::Hyper(r, None))
            } else if up_req.body().is_end_stream() {
                let (parts, _) = up_req.into_parts();
                h1client::send(&ep, ctx.worker, &parts).await.map(Upstream::Raw)
            } else {
                pool::send_h1(&ep, ctx.worker, up_req).await.map(|(r, ret)| Upstream::Hyper(r, Some(ret)))
            }
        });
        let result = match (timeout, ctx.shared.stream_idle) {
            (Some(t), _) => tokio::time::timeout(t, send).await.unwrap_or(Err(UpstreamError::Timeout)),
            (None, Some(idle)) => crate::idle::bounded(idle, send).await.unwrap_or(Err(UpstreamError::Idle)),
            (None, None) => send.await,
        };
        crate::outlier::report(ctx, home, &ep, crate::outlier::observed(&result), start.elapsed().as_nanos() as u64);
        result
    };
    drop(admitted);
    let resp = match result {
        Ok(x) => x,
        Err(e) => {
            let (status, flag) = e.status_and_flag();
            let c = &metrics.counters;
            match flag {
                ResponseFlags::UF => c.upstream_connect_failure.fetch_add(1, Ordering::Relaxed),
                ResponseFlags::UT => c.upstream_timeout.fetch_add(1, Ordering::Relaxed),
                ResponseFlags::SI => c.stream_idle_timeouts.fetch_add(1, Ordering::Relaxed),
                _ => c.upstream_reset.fetch_add(1, Ordering::Relaxed),
            };
            return Ok(local::reply(fin, status, flag, format!("{e}\n").into(), version));
        }
    };
    // (Latency outlier detection already fed the same estimate.)
    if let Some(ep) = fin.endpoint.as_ref().filter(|e| observe && e.outlier.is_none_or(|o| o.latency_mad_factor.is_none())) {
        ep.load.observe(start.elapsed().as_nanos() as u64, crate::cluster::now_ns());
    }
    let (mut parts, body) = match resp {
        Upstream::Hyper(r, ret) => {
            let (p, b) = r.into_parts();
            (p, UpBody::Hyper(b, ret))
        }
        Upstream::Raw(r) => {
            let (p, b) = r.into_parts();
            (p, UpBody::Raw(b))
        }
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    resp_ops.0.apply(&mut parts.headers);
    resp_ops.1.apply(&mut parts.headers);
    if let Some(c) = set_cookie {
        parts.headers.append(header::SET_COOKIE, c);
    }
    parts.version = version;
    fin.code = parts.status.as_u16();
    if grpc {
        fin.grpc_status_from(&parts.headers);
    }
    let body = match body {
        UpBody::Hyper(b, ret) => RespBody::upstream(b, Some(fin), ret),
        UpBody::Raw(b) => RespBody::raw(b, Some(fin)),
    }
    .idle_after(ctx.shared.stream_idle);
    Ok(Response::from_parts(parts, body))
}

/// A request admitted by an adaptive concurrency limit; reports its latency when dropped.
struct Admitted(Arc<weft_resilience::adaptive::Adaptive>, Option<weft_resilience::adaptive::Ticket>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(t) = self.1.take() {
            self.0.release(t, crate::cluster::now_ns());
        }
    }
}

pub(crate) enum Upstream {
    Hyper(Response<Incoming>, Option<pool::Returner>),
    Raw(Response<h1client::RawBody>),
}

impl Upstream {
    pub(crate) fn head(&self) -> (u16, &http::HeaderMap) {
        match self {
            Upstream::Hyper(r, _) => (r.status().as_u16(), r.headers()),
            Upstream::Raw(r) => (r.status().as_u16(), r.headers()),
        }
    }
}

enum UpBody {
    Hyper(Incoming, Option<pool::Returner>),
    Raw(h1client::RawBody),
}

type UpstreamParts = (Request<ReqBody>, Option<hyper::upgrade::OnUpgrade>);

/// Turns the client's request into the upstream one: rewrites, header operations,
/// hop-by-hop headers, the URI form and version the upstream speaks.
#[allow(clippy::too_many_arguments)]
fn build_upstream(
    mut req: Request<Incoming>,
    route: &Route,
    target: &WeightedTarget,
    authority: &HeaderValue,
    new_pq: Option<String>,
    up_proto: Version,
    fin: &mut Finish,
    upgrade: bool,
) -> Result<UpstreamParts, &'static str> {
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_headers =
        if upgrade { (parts.headers.get(header::CONNECTION).cloned(), parts.headers.get(header::UPGRADE).cloned()) } else { (None, None) };
    headers::strip_hop_by_hop(&mut parts.headers);
    if let (Some(c), Some(u)) = upgrade_headers {
        parts.headers.insert(header::CONNECTION, c);
        parts.headers.insert(header::UPGRADE, u);
    }
    route.request_headers.apply(&mut parts.headers);
    target.request_headers.apply(&mut parts.headers);
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts.headers.insert(X_FORWARDED_PROTO.clone(), HTTP.clone());
    }
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
        fin.request_body = Some(state.clone());
        ReqBody::Stream { body, state, tee: None }
    };
    Ok((Request::from_parts(parts, body), on_upgrade))
}

/// PASSTHROUGH: the endpoint is the address the client asked for.
fn passthrough(cluster: &Cluster, host: &str, port: u16, ctx: ConnCtx) -> Option<Arc<Endpoint>> {
    let spec = weft_config::EndpointSpec { address: host.to_owned(), port, weight: 1, labels: Default::default(), locality: None };
    let mut s = cluster.spec.clone();
    s.endpoints = vec![spec];
    let c = Cluster::build(&s, &Default::default(), None, 1, ctx.shared.metrics, &Default::default());
    c.endpoints.into_iter().next()
}
