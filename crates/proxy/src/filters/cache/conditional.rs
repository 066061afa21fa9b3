//! Conditional requests against stored responses: answering a client's validators
//! with 304 (RFC 9110 §13.1.1–2, RFC 9111 §4.3.2), and revalidating a stale entry
//! upstream (§4.3.1, §4.3.3–4).

use std::time::SystemTime;

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::HeaderMap;

use super::policy::date;
use super::store::Entry;

/// Whether the client's validators match the stored response, so that a 304 answers
/// it. `If-None-Match` (weak comparison, `*`, lists, several lines) decides when
/// present; otherwise `If-Modified-Since` against `Last-Modified` (or `Date`). Linear
/// in the header's length: a list of 10,000 tags is one pass.
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if req.contains_key(IF_NONE_MATCH) {
        let Some(tag) = stored.get(ETAG).and_then(|v| opaque(v.as_bytes())) else {
            return req.get_all(IF_NONE_MATCH).iter().any(|v| v.as_bytes().trim_ascii() == b"*");
        };
        return req.get_all(IF_NONE_MATCH).iter().any(|v| v.as_bytes().trim_ascii() == b"*" || list_contains(v.as_bytes(), tag));
    }
    let Some(since) = req.get(IF_MODIFIED_SINCE).and_then(date) else { return false };
    let Some(modified) = stored.get(LAST_MODIFIED).or_else(|| stored.get(DATE)).and_then(date) else { return false };
    modified <= since
}

/// The opaque part of one entity-tag (`W/"x"` and `"x"` both give `x`).
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let t = tag.trim_ascii();
    let t = t.strip_prefix(b"W/").unwrap_or(t);
    t.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// Whether a comma-separated list of entity-tags holds `want` (weak comparison). A tag
/// may itself hold commas, so the list is walked quote to quote; garbage ends the walk.
fn list_contains(mut list: &[u8], want: &[u8]) -> bool {
    loop {
        list = list.trim_ascii_start();
        while let Some(rest) = list.strip_prefix(b",") {
            list = rest.trim_ascii_start();
        }
        if list.is_empty() {
            return false;
        }
        list = list.strip_prefix(b"W/").unwrap_or(list);
        let Some(rest) = list.strip_prefix(b"\"") else { return false };
        let Some(end) = rest.iter().position(|&b| b == b'"') else { return false };
        if &rest[..end] == want {
            return true;
        }
        list = &rest[end + 1..];
    }
}

/// Puts the entry's validators on the upstream request for revalidation, replacing
/// the client's own (the upstream's 304 must be about the stored response; the client
/// is then answered by [`not_modified`] against it). `false` when the entry has none:
/// fetch it whole instead.
pub fn add_validators(upstream_req: &mut HeaderMap, entry: &Entry) -> bool {
    upstream_req.remove(IF_NONE_MATCH);
    upstream_req.remove(IF_MODIFIED_SINCE);
    let mut any = false;
    if let Some(tag) = entry.headers.get(ETAG) {
        upstream_req.insert(IF_NONE_MATCH, tag.clone());
        any = true;
    }
    if let Some(lm) = entry.headers.get(LAST_MODIFIED) {
        upstream_req.insert(IF_MODIFIED_SINCE, lm.clone());
        any = true;
    }
    any
}

/// The entry brought up to date by an upstream 304 (§4.3.4): the 304's fields replace
/// the stored ones (not `Content-Length`, which describes the 304's empty body, nor
/// hop-by-hop fields), and the clock restarts. `None` when the 304 names a different
/// `ETag`: it is about another representation, so fetch anew.
pub fn freshen(entry: &Entry, not_modified_head: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Option<Entry> {
    if let Some(new_tag) = not_modified_head.get(ETAG) {
        let old = entry.headers.get(ETAG).and_then(|v| opaque(v.as_bytes()));
        if old != opaque(new_tag.as_bytes()) {
            return None;
        }
    }
    let mut e = entry.clone();
    // (A 304's Set-Cookie is for the client that asked, never for the shared entry.)
    let skip = |n: &http::HeaderName| {
        n == CONTENT_LENGTH
            || n == CONNECTION
            || n == http::header::SET_COOKIE
            || matches!(n.as_str(), "keep-alive" | "transfer-encoding" | "te" | "upgrade" | "set-cookie2")
    };
    for name in not_modified_head.keys() {
        if skip(name) {
            continue;
        }
        e.headers.remove(name);
        for v in not_modified_head.get_all(name) {
            e.headers.append(name.clone(), v.clone());
        }
    }
    e.request_time = request_time;
    e.response_time = response_time;
    Some(e)
}

#[cfg(test)]
#[path = "conditional_tests.rs"]
mod tests;
