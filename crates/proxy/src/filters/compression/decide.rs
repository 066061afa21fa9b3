//! Whether a response is compressed, and how its head changes when it is — Envoy's
//! compressor semantics, with the choices below written down.

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use weft_config::{CompressionPolicy, Encoding};

/// Whether the response may be compressed (the client's `Accept-Encoding` is
/// [`super::negotiate`]'s business). Not compressed:
/// - HEAD requests, upgrades (`Upgrade`, `Connection: upgrade`, CONNECT), 1xx, 101, 204,
///   304 and 206 (a range of the identity representation cannot be re-encoded);
/// - responses already encoded (any `Content-Encoding` but `identity`, or a
///   `Transfer-Encoding` other than `chunked`), or carrying `Cache-Control: no-transform`;
/// - media types not listed (parameters such as `; charset=utf-8` ignored, case-insensitive);
/// - a response **without** `Content-Type`: Envoy compresses those, weft does not — an
///   untyped body is as likely an already compressed archive or image as text;
/// - a `Content-Length` below `minContentLength` (or unreadable). Without one (chunked,
///   h2, streaming) the length is unknown and the response is compressed.
pub fn should_compress(policy: &CompressionPolicy, method: &Method, req_headers: &HeaderMap, status: StatusCode, resp: &HeaderMap) -> bool {
    if method == Method::HEAD || method == Method::CONNECT {
        return false;
    }
    if status.is_informational() || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT) {
        return false;
    }
    if req_headers.contains_key(UPGRADE) || has_token(req_headers, CONNECTION, "upgrade") {
        return false;
    }
    if resp.get_all(CONTENT_ENCODING).iter().any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity")) {
        return false;
    }
    if resp.get_all(TRANSFER_ENCODING).iter().any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")) {
        return false;
    }
    if resp.contains_key(CONTENT_RANGE) || has_token(resp, CACHE_CONTROL, "no-transform") {
        return false;
    }
    if !content_type_listed(resp, &policy.content_types) {
        return false;
    }
    match resp.get(CONTENT_LENGTH) {
        None => true,
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|n| n >= policy.min_content_length),
    }
}

fn content_type_listed(resp: &HeaderMap, listed: &[String]) -> bool {
    let Some(ct) = resp.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let bare = ct.split(';').next().unwrap_or("").trim();
    listed.iter().any(|t| t.eq_ignore_ascii_case(bare))
}

/// Whether a comma-separated header (all its lines) holds `token`, ignoring case and
/// any `=value` (so `no-transform` is found in `max-age=1, No-Transform`).
pub(crate) fn has_token(h: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
        let t = t.split('=').next().unwrap_or("").trim();
        t.eq_ignore_ascii_case(token)
    })
}

/// Turns the response head into the encoded representation's: `Content-Encoding` set,
/// `Content-Length` removed (the body goes chunked or as h2 DATA), `Vary` made to name
/// `Accept-Encoding` once (a `Vary: *` is left alone: it already covers it), and a
/// strong `ETag` weakened — the bytes differ from the identity ones, but the content is
/// the same, so a weak validator stays true (nginx's choice; Envoy drops strong ETags,
/// which costs clients their revalidation).
pub fn edit_response_head(resp: &mut HeaderMap, enc: Encoding) {
    resp.insert(CONTENT_ENCODING, HeaderValue::from_static(enc.token()));
    resp.remove(CONTENT_LENGTH);
    let varies: Vec<HeaderValue> = resp.get_all(VARY).iter().cloned().collect();
    let covered = varies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"));
    if !covered {
        let mut joined: Vec<u8> = Vec::new();
        for v in &varies {
            let v = v.as_bytes().trim_ascii();
            if !v.is_empty() {
                joined.extend_from_slice(v);
                joined.extend_from_slice(b", ");
            }
        }
        joined.extend_from_slice(b"Accept-Encoding");
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            resp.insert(VARY, v);
        }
    }
    if let Some(tag) = resp.get(ETAG) {
        let b = tag.as_bytes();
        if b.first() == Some(&b'"') {
            let mut weak = Vec::with_capacity(b.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(b);
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                resp.insert(ETAG, v);
            }
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
