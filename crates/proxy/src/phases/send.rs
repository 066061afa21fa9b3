//! The one send path: a request's tries under its route's retry policy (none: one
//! try), each bounded by `perTryTimeout` and what is left of the route timeout (or,
//! with neither, by the stream idle timeout), a jittered exponential back-off between
//! tries, each retry on another endpoint of the cluster the request holds, hedged
//! tries raced when the host hedges. A request body is sent again from its replay
//! buffer ([`crate::replay`]) when it fit there.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::request::now as clock;

use http::request::Parts;
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;
use weft_config::RetryPolicy;
use weft_resilience::{backoff, Outcome};
use weft_telemetry::ResponseFlags;

use crate::body::ReqBody;
use crate::cluster::{Cluster, Endpoint};
use crate::error::UpstreamError;
use crate::live::Hedge;
use crate::replay::Replaying;
use crate::request::{InFlight, RequestCtx};
use crate::trace::{TryOutcome, TryParent, TrySpan};
use crate::{h1client, pool};

/// Envoy's back-off: base 25 ms, at most 10 × base.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long a failed try's connection may keep the request body before the retry
/// gives up on it (a body still being written to an endpoint that already answered).
const BODY_BACK_WAIT: Duration = Duration::from_millis(100);

/// An upstream response, from hyper's client or weft's own.
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

/// The request body as the tries see it.
pub(crate) enum TryBody {
    None,
    /// Kept (up to the replay limit) so that a retry can send it again.
    Replay(Replaying),
    /// Sent once (a mirrored body): no retry after a try that took it.
    Once(ReqBody),
}

/// How a request is sent: its route's policy and what the request holds.
pub(crate) struct Plan<'a> {
    /// `None`: one try.
    pub policy: Option<&'a RetryPolicy>,
    /// The host's hedging, for an idempotent request without a body.
    pub hedge: Option<Arc<Hedge>>,
    /// The cluster the request holds for its whole life.
    pub cluster: &'a Arc<Cluster>,
    pub hash: Option<u64>,
    /// PASSTHROUGH clusters have one endpoint: the address asked for.
    pub passthrough: bool,
    /// The route timeout's end, which bounds every try.
    pub deadline: Option<Instant>,
    /// A gRPC request: its answers' grpc-status counts.
    pub grpc: bool,
    /// A sampled request that may be tried more than once: each try gets a span.
    /// (Boxed: the request's future carries the plan, and most requests are not traced.)
    pub trace: Option<Box<TryParent>>,
}

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

pub(crate) async fn send(
    cx: &mut RequestCtx,
    mut ep: Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan<'_>,
    mut body: TryBody,
) -> Result<Upstream, UpstreamError> {
    let shared = cx.conn.shared;
    let counters = &shared.metrics.counters;
    let attempts = plan.policy.map_or(0, |p| p.attempts);
    let mut tries = 0u32;
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    loop {
        let (try_body, returned) = match std::mem::replace(&mut body, TryBody::None) {
            TryBody::Replay(b) => {
                let (b, rx) = b.arm();
                (TryBody::Replay(b), Some(rx))
            }
            other => (other, None),
        };
        tries += 1;
        let now = clock();
        let left = plan.deadline.map(|d| d.saturating_duration_since(now));
        let limit = match (plan.policy.and_then(|p| p.per_try_timeout), left) {
            (Some(p), Some(l)) => Some(p.min(l)),
            (p, l) => p.or(l),
        };
        // A hedge race makes its tries' spans itself; the first try's span is made if a
        // second one starts (see `crate::trace::tries`).
        let racing = matches!(try_body, TryBody::None) && plan.hedge.is_some();
        // (Boxed: these live across the try's await, in every request's future.)
        let traced: Option<Box<(TrySpan, Parts)>> = plan.trace.as_deref().filter(|_| !racing && tries > 1).map(|t| {
            let span = t.child(&plan.cluster.spec.name, &ep.id, tries, false);
            let own = span.parts(parts);
            Box::new((span, own))
        });
        let parts_now = traced.as_ref().map_or(parts, |t| &t.1);
        // Boxed: the timeout wrappers below would each move the try's future (and this
        // future would carry it), a memcpy of its size per wrapper; one allocation is cheaper.
        let attempt = Box::pin(hedged(cx, &mut ep, parts_now, plan, try_body, tries));
        let result = match (limit, shared.stream_idle) {
            (Some(t), _) => tokio::time::timeout(t, attempt).await.unwrap_or(Err(UpstreamError::Timeout)),
            (None, Some(idle)) => crate::idle::bounded(idle, attempt).await.unwrap_or(Err(UpstreamError::Idle)),
            (None, None) => attempt.await,
        };
        end_try(traced.map(|t| t.0), &result);
        // A try that failed because the client's body did is the client's fault: not
        // reported to outlier detection, not retried.
        if result.is_err() {
            if let Some(fault) = cx.fin.request_body.as_ref().and_then(|b| b.client_fault()) {
                return Err(fault);
            }
        }
        crate::outlier::report(
            shared,
            plan.cluster,
            &ep,
            crate::outlier::observed(&result),
            clock().saturating_duration_since(now).as_nanos() as u64,
        );
        let Some(policy) = plan.policy else { return result };
        let outcome = match &result {
            Ok(up) => {
                let (status, headers) = up.head();
                Outcome::Response { status, grpc: if plan.grpc { grpc_status(headers) } else { None } }
            }
            Err(UpstreamError::Connect(_)) => Outcome::ConnectFailure,
            Err(UpstreamError::Reset(_)) => Outcome::Reset,
            Err(UpstreamError::Timeout) => Outcome::Timeout,
            // The stream idled out: the request is over, not retried.
            Err(UpstreamError::Idle | UpstreamError::Client { .. }) => return result,
        };
        if !policy.retry_on.retries(outcome) {
            return result;
        }
        let wait = backoff(tries, BACKOFF_BASE, BACKOFF_MAX, fastrand::f64());
        let out_of_time = plan.deadline.is_some_and(|d| clock() + wait >= d);
        if tries > attempts || out_of_time {
            if tries > 1 {
                cx.fin.flags.insert(ResponseFlags::URX);
                counters.retry_limit_reached.fetch_add(1, Ordering::Relaxed);
            }
            return result;
        }
        // maxRetries / retryBudget: a retry over the cluster's limit is not made (Envoy's retry overflow).
        let _retry_ticket = if plan.cluster.breaker.limits_retries() {
            match plan.cluster.breaker.retry() {
                Some(t) => Some(t),
                None => {
                    counters.retry_overflow.fetch_add(1, Ordering::Relaxed);
                    return result;
                }
            }
        } else {
            None
        };
        // A body is sent again only if the try gave it back whole; a body sent once is gone.
        if let Some(rx) = returned {
            match tokio::time::timeout(BODY_BACK_WAIT, rx).await {
                Ok(Ok(b)) => body = TryBody::Replay(b),
                _ => {
                    counters.retry_body_unreplayable.fetch_add(1, Ordering::Relaxed);
                    return result;
                }
            }
        } else if cx.fin.request_body.is_some() {
            counters.retry_body_unreplayable.fetch_add(1, Ordering::Relaxed);
            return result;
        }
        if let Some(t) = plan.trace.as_deref().filter(|_| tries == 1 && !racing) {
            // (When it started, from how long ago: no clock reading kept for it in every request.)
            let start = weft_telemetry::trace::unix_ns().saturating_sub(clock().saturating_duration_since(now).as_nanos() as u64);
            end_try(Some(t.child_from(&plan.cluster.spec.name, &ep.id, 1, false, start)), &result);
        }
        drop(result);
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        if !plan.passthrough {
            tried.push(ep.clone());
            if let Some(next) = pick_other(plan, &tried) {
                cx.fin.endpoint = Some(InFlight::start(next.clone()));
                ep = next;
            }
        }
    }
}

type Try<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Upstream, UpstreamError>> + Send + 'a>>;

/// One try; with a hedge policy, more tries on other endpoints each `delay` without an
/// answer, the first answer winning (the others are dropped, which cancels them). `ep`
/// becomes the endpoint that answered, and the request's record follows it.
async fn hedged(
    cx: &mut RequestCtx,
    ep: &mut Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan<'_>,
    body: TryBody,
    attempt: u32,
) -> Result<Upstream, UpstreamError> {
    let worker = cx.conn.worker;
    match body {
        // Boxed, as hyper's futures are large (see `once`).
        TryBody::Replay(b) => Box::pin(with_body(ep, worker, parts, ReqBody::Replay(b))).await,
        TryBody::Once(b) => Box::pin(with_body(ep, worker, parts, b)).await,
        TryBody::None => match &plan.hedge {
            None => once(ep, worker, parts).await,
            // Boxed: the race's state would otherwise make every try's future larger.
            Some(h) => Box::pin(race(cx, ep, parts, plan, h, attempt)).await,
        },
    }
}

/// The hedge race: see [`hedged`].
async fn race(
    cx: &mut RequestCtx,
    ep: &mut Arc<Endpoint>,
    parts: &Parts,
    plan: &Plan<'_>,
    h: &Hedge,
    attempt: u32,
) -> Result<Upstream, UpstreamError> {
    let worker = cx.conn.worker;
    // With tracing, each try carries its own span (and sends its own copy of the head).
    let start = |e: &Arc<Endpoint>, hedge: bool| -> (Option<TrySpan>, Try<'_>) {
        match plan.trace.as_deref().map(|t| t.child(&plan.cluster.spec.name, &e.id, attempt, hedge)) {
            Some(span) => {
                let own = span.parts(parts);
                (Some(span), Box::pin(once_with(e.clone(), worker, own)))
            }
            None => (None, Box::pin(once_owned(e.clone(), worker, parts))),
        }
    };
    // The first try's share of the load is the request's own (held by its record).
    let mut launched: Vec<(Arc<Endpoint>, Instant, Option<InFlight>)> = vec![(ep.clone(), clock(), None)];
    // A first try (attempt 1) goes out without a span of its own: one is made for it
    // if a hedge starts (from when it started: `first_open`).
    let (span, first) = match attempt {
        1 => (None, Box::pin(once_owned(ep.clone(), worker, parts)) as Try<'_>),
        _ => start(ep, false),
    };
    let mut first_open = plan.trace.as_ref().filter(|_| attempt == 1).map(|_| weft_telemetry::trace::unix_ns());
    let first_span = |start_ns: u64| plan.trace.as_deref().map(|t| t.child_from(&plan.cluster.spec.name, &ep.id, attempt, false, start_ns));
    let mut spans = vec![span];
    let mut racing: Vec<(usize, Try<'_>)> = vec![(0, first)];
    let delay = h.current_delay();
    let mut timer = Box::pin(tokio::time::sleep(delay));
    let (winner, result) = loop {
        let can_hedge = launched.len() < h.policy.max_attempts as usize;
        let event = std::future::poll_fn(|ctx| {
            for (k, (_, f)) in racing.iter_mut().enumerate() {
                if let std::task::Poll::Ready(r) = f.as_mut().poll(ctx) {
                    return std::task::Poll::Ready(Some((k, r)));
                }
            }
            if can_hedge && timer.as_mut().poll(ctx).is_ready() {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Pending
        })
        .await;
        match event {
            // An answer, or the last try failing: done.
            Some((k, r)) if r.is_ok() || racing.len() == 1 => break (racing[k].0, r),
            // A failure while others are still out: wait for them.
            Some((k, r)) => {
                let (i, _) = racing.swap_remove(k);
                end_try(spans[i].take(), &r);
                if let Some(start_ns) = first_open.take_if(|_| i == 0) {
                    end_try(first_span(start_ns), &r);
                }
            }
            None => {
                let tried: Vec<Arc<Endpoint>> = launched.iter().map(|(e, _, _)| e.clone()).collect();
                if let Some(next) = pick_other(plan, &tried) {
                    cx.conn.shared.metrics.counters.hedges.fetch_add(1, Ordering::Relaxed);
                    let (span, fut) = start(&next, true);
                    spans.push(span);
                    racing.push((launched.len(), fut));
                    launched.push((next.clone(), clock(), Some(InFlight::start(next))));
                }
                timer.as_mut().reset(tokio::time::Instant::now() + delay);
            }
        }
    };
    drop(racing);
    end_try(spans[winner].take(), &result);
    for span in spans.into_iter().flatten() {
        span.end(TryOutcome::Cancelled);
    }
    if let Some(start_ns) = first_open.filter(|_| launched.len() > 1) {
        match winner {
            0 => end_try(first_span(start_ns), &result),
            _ => first_span(start_ns).map_or((), |s| s.end(TryOutcome::Cancelled)),
        }
    }
    // The answer's latency feeds delayPercentile.
    if let (Some(window), Ok(_)) = (&h.window, &result) {
        window.record(clock().saturating_duration_since(launched[winner].1), crate::cluster::now_ns());
    }
    // A cancelled try took at least this long: the latency-aware balancer learns so, or
    // it would keep trusting the slow endpoint whose tries are always cancelled.
    let now = crate::cluster::now_ns();
    for (i, (e, started, _)) in launched.iter().enumerate() {
        if i != winner {
            e.load.observe(clock().saturating_duration_since(*started).as_nanos() as u64, now);
        }
    }
    // The winner's share of the load moves to the request's record; the others' go
    // back as `launched` drops.
    let (won, _, share) = launched.swap_remove(winner);
    if let Some(share) = share {
        cx.fin.endpoint = Some(share);
    }
    *ep = won;
    result
}

async fn once_owned(ep: Arc<Endpoint>, worker: usize, parts: &Parts) -> Result<Upstream, UpstreamError> {
    once(&ep, worker, parts).await
}

/// A try that sends its own head (a traced hedge: its span is the upstream's parent).
async fn once_with(ep: Arc<Endpoint>, worker: usize, parts: Parts) -> Result<Upstream, UpstreamError> {
    once(&ep, worker, &parts).await
}

/// Ends a try's span (if it has one) with what the try came to.
fn end_try(span: Option<TrySpan>, result: &Result<Upstream, UpstreamError>) {
    let Some(span) = span else { return };
    match result {
        Ok(up) => span.end(TryOutcome::Response(up.head().0)),
        Err(e) => span.end(TryOutcome::Failed(&e.to_string())),
    }
}

/// One try on one endpoint.
async fn once(ep: &Arc<Endpoint>, worker: usize, parts: &Parts) -> Result<Upstream, UpstreamError> {
    if parts.version == Version::HTTP_2 {
        // Boxed: hyper's h2 future is ~2 KB, and every try's future would carry (and
        // every wrapper copy) that much for the HTTP/1.1 path too.
        Box::pin(pool::send_h2(ep, worker, request(parts, ReqBody::Empty))).await.map(|r| Upstream::Hyper(r, None))
    } else {
        h1client::send(ep, worker, parts).await.map(Upstream::Raw)
    }
}

/// One try of a request with a body, over hyper's client.
async fn with_body(ep: &Arc<Endpoint>, worker: usize, parts: &Parts, body: ReqBody) -> Result<Upstream, UpstreamError> {
    let req = request(parts, body);
    if parts.version == Version::HTTP_2 {
        pool::send_h2(ep, worker, req).await.map(|r| Upstream::Hyper(r, None))
    } else {
        pool::send_h1(ep, worker, req).await.map(|(r, ret)| Upstream::Hyper(r, Some(ret)))
    }
}

fn request(parts: &Parts, body: ReqBody) -> Request<ReqBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Another endpoint of the request's cluster than those already `tried` (Istio's
/// `previous_hosts` predicate, five picks; with `retryRemoteLocalities`, Envoy's
/// `previous_priorities` as well), if the cluster has one; when every endpoint was
/// tried, one other than the last.
fn pick_other(plan: &Plan<'_>, tried: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
    let cluster = plan.cluster;
    let eps = &cluster.endpoints;
    let seen = |e: &Arc<Endpoint>| tried.iter().any(|t| Arc::ptr_eq(t, e));
    // retryRemoteLocalities: the priority levels already tried are passed over.
    let avoid: Vec<u8> = match (&cluster.levels, plan.policy.is_some_and(|p| p.remote_localities)) {
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
