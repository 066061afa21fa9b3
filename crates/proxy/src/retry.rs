//! Bodyless requests sent under the route's retry policy: each try bounded by
//! `perTryTimeout` (and what is left of the route timeout), a jittered
//! exponential back-off between tries, and each retry on another endpoint than
//! the one that failed, picked again by the cluster's balancer. A request body is
//! sent again from its replay buffer ([`crate::replay`]) when it fit there.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderMap, Request, Version};
use weft_config::RetryPolicy;
use weft_resilience::{backoff, Outcome};
use weft_telemetry::ResponseFlags;

use crate::body::ReqBody;
use crate::cluster::Endpoint;
use crate::error::UpstreamError;
use crate::finish::Finish;
use crate::handler::{ConnCtx, Upstream};
use crate::replay::Replaying;
use crate::{h1client, pool};

/// Envoy's back-off: base 25 ms, at most 10 × base.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long a failed try's connection may keep the request body before the retry
/// gives up on it (a body still being written to an endpoint that already answered).
const BODY_BACK_WAIT: Duration = Duration::from_millis(100);

/// What a retry needs to find the cluster again after the config snapshot was let go.
pub struct Plan {
    pub policy: RetryPolicy,
    pub home: crate::outlier::Home,
    pub hash: Option<u64>,
    /// PASSTHROUGH clusters have one endpoint: the address asked for.
    pub passthrough: bool,
    /// The route timeout's end, which bounds every try.
    pub deadline: Option<Instant>,
    /// A gRPC request: its answers' grpc-status counts.
    pub grpc: bool,
    /// The cluster's circuit breaker, when it has limits (`maxRetries`).
    pub breaker: Option<Arc<crate::breaker::Breaker>>,
    /// The host's Hedging policy, for an idempotent request.
    pub hedge: Option<weft_config::HedgePolicy>,
}

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

pub(crate) async fn send(
    ctx: ConnCtx,
    fin: &mut Finish,
    mut ep: Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan,
    mut body: Option<Replaying>,
) -> Result<Upstream, UpstreamError> {
    let counters = &ctx.shared.metrics.counters;
    let mut tries = 0u32;
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    loop {
        let (try_body, returned) = match body.take() {
            Some(b) => {
                let (b, rx) = b.arm();
                (Some(b), Some(rx))
            }
            None => (None, None),
        };
        tries += 1;
        let now = Instant::now();
        let left = plan.deadline.map(|d| d.saturating_duration_since(now));
        let limit = match (plan.policy.per_try_timeout, left) {
            (Some(p), Some(l)) => Some(p.min(l)),
            (p, l) => p.or(l),
        };
        // Boxed: the timeout wrappers below would each move the try's future (and this
        // future would carry it), a memcpy of its size per wrapper; one allocation is cheaper.
        let attempt = Box::pin(hedged(ctx, fin, &mut ep, parts, plan, try_body));
        let result = match (limit, ctx.shared.stream_idle) {
            (Some(t), _) => tokio::time::timeout(t, attempt).await.unwrap_or(Err(UpstreamError::Timeout)),
            (None, Some(idle)) => crate::idle::bounded(idle, attempt).await.unwrap_or(Err(UpstreamError::Idle)),
            (None, None) => attempt.await,
        };
        crate::outlier::report(ctx, plan.home, &ep, crate::outlier::observed(&result), now.elapsed().as_nanos() as u64);
        let outcome = match &result {
            Ok(up) => {
                let (status, headers) = up.head();
                Outcome::Response { status, grpc: if plan.grpc { grpc_status(headers) } else { None } }
            }
            Err(UpstreamError::Connect(_)) => Outcome::ConnectFailure,
            Err(UpstreamError::Reset(_)) => Outcome::Reset,
            Err(UpstreamError::Timeout) => Outcome::Timeout,
            // The stream idled out: the request is over, not retried.
            Err(UpstreamError::Idle) => return result,
        };
        if !plan.policy.retry_on.retries(outcome) {
            return result;
        }
        let wait = backoff(tries, BACKOFF_BASE, BACKOFF_MAX, fastrand::f64());
        let out_of_time = plan.deadline.is_some_and(|d| Instant::now() + wait >= d);
        if tries > plan.policy.attempts || out_of_time {
            if tries > 1 {
                fin.flags.insert(ResponseFlags::URX);
                counters.retry_limit_reached.fetch_add(1, Ordering::Relaxed);
            }
            return result;
        }
        // maxRetries / retryBudget: a retry over the cluster's limit is not made (Envoy's retry overflow).
        let _retry_ticket = match &plan.breaker {
            Some(b) => match b.retry() {
                Some(t) => Some(t),
                None => {
                    counters.retry_overflow.fetch_add(1, Ordering::Relaxed);
                    return result;
                }
            },
            None => None,
        };
        // A body is sent again only if the try gave it back whole.
        if let Some(rx) = returned {
            match tokio::time::timeout(BODY_BACK_WAIT, rx).await {
                Ok(Ok(b)) => body = Some(b),
                _ => {
                    counters.retry_body_unreplayable.fetch_add(1, Ordering::Relaxed);
                    return result;
                }
            }
        }
        drop(result);
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        if !plan.passthrough {
            tried.push(ep.clone());
            let Some(next) = pick_other(ctx, plan, &tried) else {
                return Err(UpstreamError::Reset("config changed during retries".into()));
            };
            ep.load.finish();
            next.load.start();
            fin.endpoint = Some(next.clone());
            ep = next;
        }
    }
}

type Try<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Upstream, UpstreamError>> + Send + 'a>>;

/// One try; with a hedge policy, more tries on other endpoints each `delay` without an
/// answer, the first answer winning (the others are dropped, which cancels them). `ep`
/// becomes the endpoint that answered, and `fin` follows it.
async fn hedged(
    ctx: ConnCtx,
    fin: &mut Finish,
    ep: &mut Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan,
    body: Option<Replaying>,
) -> Result<Upstream, UpstreamError> {
    if let Some(b) = body {
        // Boxed, as hyper's futures are large (see `once`).
        return Box::pin(with_body(ep, ctx.worker, parts, b)).await;
    }
    match &plan.hedge {
        None => once(ep, ctx.worker, parts).await,
        // Boxed: the race's state would otherwise make every try's future larger.
        Some(h) => Box::pin(race(ctx, fin, ep, parts, plan, h)).await,
    }
}

/// The hedge race: see [`hedged`].
async fn race(
    ctx: ConnCtx,
    fin: &mut Finish,
    ep: &mut Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan,
    h: &weft_config::HedgePolicy,
) -> Result<Upstream, UpstreamError> {
    let worker = ctx.worker;
    let mut launched = vec![(ep.clone(), Instant::now())];
    let mut racing: Vec<(usize, Try<'_>)> = vec![(0, Box::pin(once_owned(ep.clone(), worker, parts)))];
    let delay = h.current_delay();
    let mut timer = Box::pin(tokio::time::sleep(delay));
    let (winner, result) = loop {
        let can_hedge = launched.len() < h.max_attempts as usize;
        let event = std::future::poll_fn(|cx| {
            for (k, (_, f)) in racing.iter_mut().enumerate() {
                if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready(Some((k, r)));
                }
            }
            if can_hedge && timer.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Pending
        })
        .await;
        match event {
            // An answer, or the last try failing: done.
            Some((k, r)) if r.is_ok() || racing.len() == 1 => break (racing[k].0, r),
            // A failure while others are still out: wait for them.
            Some((k, _)) => {
                drop(racing.swap_remove(k));
            }
            None => {
                let tried: Vec<Arc<Endpoint>> = launched.iter().map(|(e, _)| e.clone()).collect();
                if let Some(next) = pick_other(ctx, plan, &tried) {
                    next.load.start();
                    ctx.shared.metrics.counters.hedges.fetch_add(1, Ordering::Relaxed);
                    racing.push((launched.len(), Box::pin(once_owned(next.clone(), worker, parts))));
                    launched.push((next, Instant::now()));
                }
                timer.as_mut().reset(tokio::time::Instant::now() + delay);
            }
        }
    };
    drop(racing);
    // The answer's latency feeds delayPercentile.
    if let (Some((_, window)), Ok(_)) = (&h.percentile, &result) {
        window.record(launched[winner].1.elapsed(), crate::cluster::now_ns());
    }
    // Every endpoint tried but the one that answered is done with this request. A
    // cancelled try took at least this long: the latency-aware balancer learns so, or
    // it would keep trusting the slow endpoint whose tries are always cancelled.
    let now = crate::cluster::now_ns();
    for (i, (e, started)) in launched.iter().enumerate() {
        if i != winner {
            e.load.finish();
            e.load.observe(started.elapsed().as_nanos() as u64, now);
        }
    }
    *ep = launched[winner].0.clone();
    fin.endpoint = Some(ep.clone());
    result
}

async fn once_owned(ep: Arc<Endpoint>, worker: usize, parts: &Parts) -> Result<Upstream, UpstreamError> {
    once(&ep, worker, parts).await
}

/// One try on one endpoint.
async fn once(ep: &Arc<Endpoint>, worker: usize, parts: &Parts) -> Result<Upstream, UpstreamError> {
    if parts.version == Version::HTTP_2 {
        let mut req = Request::new(ReqBody::Empty);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        // Boxed: hyper's h2 future is ~2 KB, and every try's future would carry (and
        // every wrapper copy) that much for the HTTP/1.1 path too.
        Box::pin(pool::send_h2(ep, worker, req)).await.map(|r| Upstream::Hyper(r, None))
    } else {
        h1client::send(ep, worker, parts).await.map(Upstream::Raw)
    }
}

/// One try of a request with a body, over hyper's client.
async fn with_body(ep: &Arc<Endpoint>, worker: usize, parts: &Parts, body: Replaying) -> Result<Upstream, UpstreamError> {
    let mut req = Request::new(ReqBody::Replay(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    if parts.version == Version::HTTP_2 {
        pool::send_h2(ep, worker, req).await.map(|r| Upstream::Hyper(r, None))
    } else {
        pool::send_h1(ep, worker, req).await.map(|(r, ret)| Upstream::Hyper(r, Some(ret)))
    }
}

/// Another endpoint of the same cluster than those already `tried` (Istio's
/// `previous_hosts` predicate, five picks; with `retryRemoteLocalities`, Envoy's
/// `previous_priorities` as well), if the cluster has one; when every endpoint was
/// tried, one other than the last.
fn pick_other(ctx: ConnCtx, plan: &Plan, tried: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
    let rt = ctx.shared.current.load();
    if rt.revision != plan.home.revision {
        return None;
    }
    let cluster = rt.clusters.get(plan.home.cluster)?;
    let eps = &cluster.endpoints;
    let seen = |e: &Arc<Endpoint>| tried.iter().any(|t| Arc::ptr_eq(t, e));
    // retryRemoteLocalities: the priority levels already tried are passed over.
    let avoid: Vec<u8> = match (&cluster.levels, plan.policy.remote_localities) {
        (Some(lv), true) => tried.iter().filter_map(|t| eps.iter().position(|e| Arc::ptr_eq(e, t)).map(|i| lv.level_of[i])).collect(),
        _ => Vec::new(),
    };
    let mut i = cluster.pick_avoiding(plan.hash, &avoid)?;
    for _ in 0..5 {
        if eps.len() == 1 || !seen(&eps[i]) {
            return Some(eps[i].clone());
        }
        i = cluster.pick_avoiding(plan.hash, &avoid)?;
    }
    // A hash policy keeps answering the same endpoint: take the next one not tried
    // (or, all tried, the next one after the last).
    let n = eps.len();
    let next = (1..n).map(|k| (i + k) % n).find(|&j| !seen(&eps[j]));
    let last = tried.last();
    let j = next.unwrap_or_else(|| (1..=n).map(|k| (i + k) % n).find(|&j| last.is_none_or(|l| !Arc::ptr_eq(l, &eps[j]))).unwrap_or(i));
    Some(eps[j].clone())
}

fn grpc_status(h: &HeaderMap) -> Option<u8> {
    h.get(&GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok())
}
