//! RFC 9111 decisions for a shared cache, pure functions of headers and times:
//! what may be looked up, what may be stored, how long it stays fresh, how old it is.
//!
//! There is no heuristic freshness (§4.2.2): a response without `max-age`, `s-maxage`
//! or `Expires` is stored only when it has a validator, and then revalidated on every
//! use. Guessing lifetimes from `Last-Modified` serves content its origin never said
//! could be reused, and a mesh's origins can say so.

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, RANGE, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use super::directives::{CacheControl, DELTA_MAX};
use super::key::vary_names;

/// Whether a request may be answered from the cache (and its response stored):
/// GET or HEAD, no `Cache-Control: no-store`, no `Range` (weft stores whole bodies only).
pub fn request_cacheable(method: &Method, req: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD) && !req.contains_key(RANGE) && !CacheControl::parse(req).no_store
}

/// Whether the response may be stored (§3). Beyond the RFC's rules, weft does not store
/// a response that sets a cookie: one user's session handed to the next is the classic
/// shared-cache leak, and origins forget `private` more often than not.
pub fn storable(method: &Method, req: &HeaderMap, status: StatusCode, resp: &HeaderMap, now: SystemTime) -> bool {
    if method != Method::GET || !request_cacheable(method, req) {
        return false;
    }
    if status.is_informational() || matches!(status, StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED) {
        return false;
    }
    let cc = CacheControl::parse(resp);
    if cc.no_store || cc.private || resp.contains_key(SET_COOKIE) {
        return false;
    }
    // §3.5: a response to an authenticated request is shared only when it says so.
    if req.contains_key(AUTHORIZATION) && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return false;
    }
    if vary_names(resp).is_none() {
        return false; // `Vary: *`, or more names than weft keys on
    }
    let explicit = cc.s_maxage.is_some() || cc.max_age.is_some() || resp.contains_key(EXPIRES);
    if !(explicit || cc.public || heuristically_cacheable(status)) {
        return false;
    }
    freshness_lifetime(resp, now) > Duration::ZERO || has_validator(resp)
}

/// §4.2.2's list: statuses cacheable without explicit freshness.
fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

pub fn has_validator(resp: &HeaderMap) -> bool {
    resp.contains_key(ETAG) || resp.contains_key(LAST_MODIFIED)
}

/// §4.2.1 for a shared cache: `s-maxage`, else `max-age`, else `Expires − Date`
/// (`Date` missing: the time the response arrived). An unreadable `Expires` is 0.
pub fn freshness_lifetime(resp: &HeaderMap, response_time: SystemTime) -> Duration {
    let cc = CacheControl::parse(resp);
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(s);
    }
    let Some(expires) = resp.get(EXPIRES) else { return Duration::ZERO };
    let Some(expires) = date(expires) else { return Duration::ZERO };
    let date = resp.get(DATE).and_then(date).unwrap_or(response_time);
    expires.duration_since(date).unwrap_or(Duration::ZERO)
}

/// §4.2.3: the age the origin and caches before weft gave it (`Age`, or `Date` apart
/// from arrival), plus the request's round trip, plus the time it has been here.
/// An unreadable `Age` is ignored. `Date` has whole seconds, so it is compared with the
/// arrival time in whole seconds: a response dated 12 s that arrived at 12.95 s is 0 s
/// old, not 0.95 s (which would leave a `max-age=1` response fresh for 50 ms).
pub fn current_age(resp: &HeaderMap, request_time: SystemTime, response_time: SystemTime, now: SystemTime) -> Duration {
    let since = |later: SystemTime, earlier: SystemTime| later.duration_since(earlier).unwrap_or(Duration::ZERO);
    let whole_secs = |t: SystemTime| {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    let age_value = resp
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            let s = s.trim();
            s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX))
        })
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = resp.get(DATE).and_then(date).map_or(Duration::ZERO, |d| since(whole_secs(response_time), d));
    let corrected = age_value.saturating_add(since(response_time, request_time));
    apparent.max(corrected).saturating_add(since(now, response_time))
}

/// Whether a stored response may be served as it is, or must be revalidated first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Revalidate upstream (conditional request) before serving; never served stale —
    /// weft does not honour `max-stale`, so `must-revalidate` needs nothing more.
    Stale,
}

/// §4.2 and the request's directives (§5.2.1): stale when past its lifetime, when the
/// response said `no-cache`, or when the request asks for `no-cache`, a `max-age` the
/// entry is past (`max-age=0` forces revalidation), or a `min-fresh` it cannot give.
pub fn freshness(req: &HeaderMap, resp: &HeaderMap, age: Duration, lifetime: Duration) -> Freshness {
    let r = CacheControl::parse(req);
    let stale = CacheControl::parse(resp).no_cache
        || age >= lifetime
        || r.no_cache
        || r.max_age.is_some_and(|m| age >= Duration::from_secs(m))
        || r.min_fresh.is_some_and(|m| lifetime - age < Duration::from_secs(m));
    if stale {
        Freshness::Stale
    } else {
        Freshness::Fresh
    }
}

pub(crate) fn date(v: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
