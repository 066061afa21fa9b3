//! The ResponseCache filter. Request hook: a fresh entry answers at once (`304` when
//! the client's validators match); a stale one sends the request upstream with the
//! entry's validators; a miss goes upstream as the one request for its key while
//! concurrent misses wait for it ([`Waiting`], in the request's wait phase). Response
//! hook: a `304` to a revalidation freshens the entry and serves it; a storable
//! response streams to the client through [`FillBody`], stored only if it ends whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use weft_config::CachePolicy;

use super::{add_validators, freshen, not_modified, request_cacheable, storable, Coalescer, Entry, FillBody, Freshness};
use super::{CacheStore, LeaderGuard, Pending, PrimaryKey, Role};
use crate::body::RespBody;
use crate::filters::rate_limit::view;
use crate::filters::Flow;
use crate::request::RequestCtx;

/// The longest a miss waits for another request fetching the same response before
/// it goes upstream itself.
const COALESCE_WAIT: Duration = Duration::from_secs(10);

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static HIT: HeaderValue = HeaderValue::from_static("HIT");
static STALE: HeaderValue = HeaderValue::from_static("STALE");
static MISS: HeaderValue = HeaderValue::from_static("MISS");

/// Fields a `304` carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [&str; 7] = ["cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"];

#[derive(Clone)]
pub struct ResponseCache {
    pub policy: Arc<CachePolicy>,
    pub store: Arc<CacheStore>,
    pub coalescer: Arc<Coalescer>,
    /// The route this copy of the filter serves (`vhost#index`): part of the key, so
    /// that routes chosen by header, query or method (tenants, canaries) never share
    /// entries. (Envoy's cache key has the cluster for the same reason.)
    pub route: Arc<str>,
}

/// A request that went upstream for the cache: a miss, or a stale entry revalidating.
pub struct Outstanding {
    store: Arc<CacheStore>,
    key: PrimaryKey,
    request_time: SystemTime,
    /// The client's request head's fields (the `Vary` values, `Authorization`).
    req_headers: HeaderMap,
    method: Method,
    /// The stale entry being revalidated, and the client's own validators.
    stale: Option<(Arc<Entry>, HeaderMap)>,
    /// This request is the one fetching the key; the waiters wake when it drops.
    leader: Option<LeaderGuard>,
}

/// A miss waiting for the request that fetches the same response.
pub struct Waiting {
    flight: super::Flight,
    outstanding: Outstanding,
}

impl ResponseCache {
    pub fn on_request(&self, cx: &mut RequestCtx, head: &mut Parts, host: &str) -> Flow {
        // The first policy that applies acts.
        let taken = cx.filters.cache.is_some() || cx.filters.cache_wait.is_some();
        if taken || (!self.policy.matches.is_empty() && !self.policy.applies(&view(head, host, cx.port))) {
            return Flow::Next;
        }
        // Upgrades are not HTTP exchanges to keep, and a GET with a body is keyed by more
        // than its URL.
        let has_body = head.headers.contains_key(http::header::TRANSFER_ENCODING)
            || head.headers.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
        if !request_cacheable(&head.method, &head.headers) || crate::headers::is_upgrade(&head.headers) || has_body {
            return Flow::Next;
        }
        // The route and destination first, then the authority the client named.
        let authority = match cx.port {
            Some(p) => format!("{}|{}|{host}:{p}", self.route, cx.fin.dest.0),
            None => format!("{}|{}|{host}", self.route, cx.fin.dest.0),
        };
        let key = PrimaryKey::new(&authority, &head.uri);
        let now = SystemTime::now();
        let counters = &cx.conn.shared.metrics.counters;
        let mut out = Outstanding {
            store: self.store.clone(),
            key,
            request_time: now,
            req_headers: HeaderMap::new(),
            method: head.method.clone(),
            stale: None,
            leader: None,
        };
        match self.store.lookup(&out.key, &head.headers) {
            Some(e) if e.freshness(&head.headers, now) == Freshness::Fresh => {
                counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                forget_admissions(cx);
                return Flow::Respond(Box::new(serve(&e, &head.headers, &head.method, now, cx.version, &HIT)));
            }
            Some(e) => {
                let mut client = HeaderMap::new();
                for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE] {
                    for v in head.headers.get_all(&name) {
                        client.append(name.clone(), v.clone());
                    }
                }
                add_validators(&mut head.headers, &e);
                out.stale = Some((e, client));
            }
            None => match self.coalescer.join(&out.key) {
                Role::Leader(g) => {
                    counters.cache_misses.fetch_add(1, Ordering::Relaxed);
                    out.leader = Some(g);
                }
                Role::Waiter(flight) => {
                    out.req_headers = head.headers.clone();
                    cx.filters.cache_wait = Some(Box::new(Waiting { flight, outstanding: out }));
                    return Flow::Next;
                }
            },
        }
        out.req_headers = head.headers.clone();
        cx.filters.cache = Some(Box::new(out));
        Flow::Next
    }

    pub fn on_response(cx: &mut RequestCtx, resp: &mut Response<RespBody>) {
        let Some(out) = cx.filters.cache.take() else { return };
        let Outstanding { store, key, request_time, req_headers, method, stale, leader } = *out;
        let counters = &cx.conn.shared.metrics.counters;
        let now = SystemTime::now();
        if let Some((entry, client)) = &stale {
            if resp.status() == StatusCode::NOT_MODIFIED {
                let Some(fresh) = freshen(entry, resp.headers(), request_time, now) else {
                    // A 304 for another representation (its ETag differs): the entry is
                    // dropped, and this client, who did not ask for a 304 of that one,
                    // gets the stored body once more, marked stale (RFC 9111 §4.3.4 would
                    // fetch again unconditionally; this request has had its try).
                    store.invalidate(&key);
                    *resp = serve(entry, client, &method, now, cx.version, &STALE);
                    return;
                };
                counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                *resp = serve(&fresh, client, &method, now, cx.version, &HIT);
                // The 304 may have made the response one not to share (private, no-store).
                if storable(&method, &req_headers, fresh.status, &fresh.headers, now) {
                    store.update(key, fresh);
                } else {
                    store.invalidate(&key);
                }
                return;
            }
            counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let (status, headers) = (resp.status(), resp.headers());
        if storable(&method, &req_headers, status, headers, now) {
            if let Some(head) = Entry::new(status, headers.clone(), Bytes::new(), None, request_time, now, &req_headers) {
                if http_body::Body::is_end_stream(resp.body()) {
                    // Nothing to stream (a 204, an empty redirect): stored now, as the
                    // body will not be polled.
                    store.insert(key, head);
                    drop(leader);
                } else {
                    let pending = Pending { store, key, head, leader };
                    let body = std::mem::replace(resp.body_mut(), RespBody::full(Bytes::new(), None));
                    *resp.body_mut() = body.wrap(|b| FillBody::new(b, pending));
                }
            }
        }
        resp.headers_mut().insert(X_CACHE.clone(), MISS.clone());
    }
}

impl Waiting {
    /// Waits for the request fetching the same response; then answers from the cache,
    /// or (it failed, or its answer could not be stored) sends this one upstream too.
    /// The wait is bounded by `deadline` (the route timeout's end) as well.
    pub async fn wait(self: Box<Self>, cx: &mut RequestCtx, deadline: Option<std::time::Instant>) -> Option<Response<RespBody>> {
        let Waiting { flight, outstanding } = *self;
        let bound = deadline.map_or(COALESCE_WAIT, |d| d.saturating_duration_since(crate::request::now()).min(COALESCE_WAIT));
        flight.wait(bound).await;
        let now = SystemTime::now();
        let counters = &cx.conn.shared.metrics.counters;
        let req = &outstanding.req_headers;
        if let Some(e) = outstanding.store.lookup(&outstanding.key, req).filter(|e| e.freshness(req, now) == Freshness::Fresh) {
            counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            forget_admissions(cx);
            return Some(serve(&e, req, &outstanding.method, now, cx.version, &HIT));
        }
        counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        cx.filters.cache = Some(Box::new(Outstanding { request_time: now, ..outstanding }));
        None
    }
}

/// Adaptive concurrency learns the upstream's latency: an answer from the cache gives
/// its place back without a sample.
fn forget_admissions(cx: &mut RequestCtx) {
    for a in cx.filters.admitted.drain(..) {
        a.forget();
    }
}

/// An answer from `entry` to a request with `req` headers: `304` when the client's
/// validators match, else the stored response (its head only for HEAD).
fn serve(entry: &Entry, req: &HeaderMap, method: &Method, now: SystemTime, version: Version, x_cache: &HeaderValue) -> Response<RespBody> {
    let (mut parts, body) = entry.response(now, *method == Method::HEAD).into_parts();
    let mut body = RespBody::full(body, None);
    if not_modified(req, &entry.headers) {
        let mut kept = HeaderMap::new();
        for name in NOT_MODIFIED_FIELDS {
            for v in parts.headers.get_all(name) {
                kept.append(HeaderName::from_static(name), v.clone());
            }
        }
        kept.insert(http::header::AGE, parts.headers.get(http::header::AGE).cloned().unwrap_or(HeaderValue::from_static("0")));
        parts.headers = kept;
        parts.status = StatusCode::NOT_MODIFIED;
        body = RespBody::full(Bytes::new(), None);
    }
    parts.version = version;
    parts.headers.insert(X_CACHE.clone(), x_cache.clone());
    Response::from_parts(parts, body)
}
