//! Trace context in headers, pure: W3C `traceparent` (and `tracestate`, passed on as
//! is) and B3, multi-header (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`)
//! or single (`b3: traceid-spanid-sampled-parent`). Malformed values are ignored (a new
//! trace starts), never an error: a client's garbage must not break its request.

use http::{HeaderMap, HeaderValue};

/// The trace a request arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
    /// It came as B3 (answered in B3 too, beside W3C).
    pub b3: bool,
}

/// The trace-context headers of a request, found in one pass over its headers (a
/// request without them costs a length comparison per header, not six hash lookups).
#[derive(Default)]
struct Found<'a> {
    traceparent: Option<&'a HeaderValue>,
    b3: Option<&'a HeaderValue>,
    b3_trace: Option<&'a HeaderValue>,
    b3_span: Option<&'a HeaderValue>,
    b3_sampled: Option<&'a HeaderValue>,
    b3_flags: Option<&'a HeaderValue>,
}

impl<'a> Found<'a> {
    fn scan(h: &'a HeaderMap) -> Found<'a> {
        let mut f = Found::default();
        for (name, value) in h {
            let slot = match name.as_str() {
                "traceparent" => &mut f.traceparent,
                "b3" => &mut f.b3,
                "x-b3-traceid" => &mut f.b3_trace,
                "x-b3-spanid" => &mut f.b3_span,
                "x-b3-sampled" => &mut f.b3_sampled,
                "x-b3-flags" => &mut f.b3_flags,
                _ => continue,
            };
            // The first of repeated values, as `HeaderMap::get` would.
            slot.get_or_insert(value);
        }
        f
    }
}

/// The trace context of `h`: W3C first, then B3 single, then B3 multi-header.
pub fn extract(h: &HeaderMap) -> Option<Incoming> {
    extract_with_decision(h).0
}

/// The trace context of `h`, and the caller's sampling decision: the context's, else a
/// decision B3 sends alone (`b3: 0`, `1` or `d`; `x-b3-sampled` or `x-b3-flags: 1`
/// without ids) — to be followed in a new trace.
pub fn extract_with_decision(h: &HeaderMap) -> (Option<Incoming>, Option<bool>) {
    let f = Found::scan(h);
    match context(&f) {
        Some(i) => (Some(i), i.sampled),
        None => (None, decision_alone(&f)),
    }
}

fn decision_alone(f: &Found<'_>) -> Option<bool> {
    match f.b3.map(|v| v.as_bytes()) {
        Some(b"0") => return Some(false),
        Some(b"1" | b"d") => return Some(true),
        _ => {}
    }
    if f.b3_flags.is_some_and(|v| v.as_bytes() == b"1") {
        return Some(true);
    }
    match f.b3_sampled.map(|v| v.as_bytes()) {
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        _ => None,
    }
}

fn context(f: &Found<'_>) -> Option<Incoming> {
    if let Some(t) = f.traceparent.and_then(|v| v.to_str().ok()).and_then(traceparent) {
        return Some(t);
    }
    if let Some(t) = f.b3.and_then(|v| v.to_str().ok()).and_then(b3_single) {
        return Some(t);
    }
    let trace = f.b3_trace.and_then(|v| v.to_str().ok()).and_then(trace_id)?;
    let span = f.b3_span.and_then(|v| v.to_str().ok()).and_then(hex::<8>)?;
    let debug = f.b3_flags.is_some_and(|v| v.as_bytes() == b"1");
    let sampled = match f.b3_sampled.map(|v| v.as_bytes()) {
        _ if debug => Some(true),
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        _ => None,
    };
    Some(Incoming { trace_id: trace, span_id: span, sampled, b3: true })
}

/// The sampling key of a request id: its first 8 hex digits as a number (a UUID's first
/// 32 bits, random), else (an id of the caller's own making) a hash of its bytes. Every
/// proxy computes the same key from the same id, as Envoy does with
/// `useRequestIdForTraceSampling`.
pub fn sampling_key(request_id: &[u8]) -> u32 {
    if let Some(first) = request_id.get(..8) {
        if let Some(k) = std::str::from_utf8(first).ok().and_then(|s| u32::from_str_radix(s, 16).ok()) {
            return k;
        }
    }
    // FNV-1a.
    request_id.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Whether a trace whose request id has `key` is sampled at `percent` (0–100, in
/// hundredths of a percent): the same answer at every proxy with the same percentage,
/// so a trace is sampled whole or not at all without a context sent along.
pub fn sampled_by_key(key: u32, percent: f64) -> bool {
    f64::from(key % 10_000) < percent * 100.0
}

/// `00-<32 hex trace>-<16 hex span>-<2 hex flags>` (a later version's extra fields are
/// allowed after, as the spec says; version `ff` and all-zero ids are invalid).
fn traceparent(v: &str) -> Option<Incoming> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) || flags.len() != 2 {
        return None;
    }
    let trace_id = hex::<16>(trace).filter(|t| t != &[0; 16])?;
    let span_id = hex::<8>(span).filter(|s| s != &[0; 8])?;
    let flags = hex::<1>(flags)?[0];
    Some(Incoming { trace_id, span_id, sampled: Some(flags & 1 == 1), b3: false })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parent}]]`, or just `0`/`1`/`d` (a decision only:
/// no context).
fn b3_single(v: &str) -> Option<Incoming> {
    let mut parts = v.trim().split('-');
    let trace_id = trace_id(parts.next()?)?;
    let span_id = hex::<8>(parts.next()?)?;
    let sampled = match parts.next() {
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        None => None,
        Some(_) => return None,
    };
    Some(Incoming { trace_id, span_id, sampled, b3: true })
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, left-padded).
fn trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex::<16>(s),
        16 => hex::<8>(s).map(|low| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&low);
            t
        }),
        _ => None,
    }
    .filter(|t| t != &[0; 16])
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Lower-case hex of `b` into `out` (twice its length).
fn hex_into(out: &mut [u8], b: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for (i, x) in b.iter().enumerate() {
        out[2 * i] = D[(x >> 4) as usize];
        out[2 * i + 1] = D[(x & 15) as usize];
    }
}

/// Lower-case hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Sets the context the upstream sees: this proxy's span as the parent, in W3C (and in
/// B3 when the request came in B3).
pub fn inject(h: &mut HeaderMap, trace_id: &[u8; 16], span_id: &[u8; 8], parent: Option<&[u8; 8]>, sampled: bool, b3: bool) {
    // `00-<32 hex>-<16 hex>-<2 hex>`, formatted on the stack (one allocation, the value's).
    let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut tp[3..35], trace_id);
    hex_into(&mut tp[36..52], span_id);
    if sampled {
        tp[54] = b'1';
    }
    if let Ok(v) = HeaderValue::from_bytes(&tp) {
        h.insert(TRACEPARENT.clone(), v);
    }
    if b3 {
        let (t, s) = (to_hex(trace_id), to_hex(span_id));
        h.remove("b3");
        let pairs = [("x-b3-traceid", t), ("x-b3-spanid", s), ("x-b3-sampled", if sampled { "1" } else { "0" }.to_owned())];
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        match parent {
            Some(p) => {
                if let Ok(v) = HeaderValue::from_str(&to_hex(p)) {
                    h.insert("x-b3-parentspanid", v);
                }
            }
            None => {
                h.remove("x-b3-parentspanid");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn w3c_traceparent() {
        let t = extract(&headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])).unwrap();
        assert_eq!(to_hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&t.span_id), "00f067aa0ba902b7");
        assert_eq!(t.sampled, Some(true));
        let t = extract(&headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")])).unwrap();
        assert_eq!(t.sampled, Some(false));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
            "garbage",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), None, "{bad:?}");
        }
        // A later version may add fields.
        assert!(extract(&headers(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")])).is_some());
    }

    #[test]
    fn b3_single_and_multi() {
        let t = extract(&headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")])).unwrap();
        assert_eq!((to_hex(&t.span_id).as_str(), t.sampled, t.b3), ("e457b5a2e4d86bd1", Some(true), true));
        let t = extract(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")])).unwrap();
        assert_eq!(&to_hex(&t.trace_id)[..16], "0000000000000000", "64-bit ids are left-padded");
        assert_eq!(t.sampled, None);
        let t = extract(&headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]))
        .unwrap();
        assert_eq!(t.sampled, Some(false));
        let t = extract(&headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-flags", "1"),
        ]))
        .unwrap();
        assert_eq!(t.sampled, Some(true), "debug means sampled");
        assert_eq!(extract(&headers(&[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")])), None, "no span id");
        assert_eq!(extract(&headers(&[("b3", "1")])), None, "a decision alone is no context");
        // ... but a decision to follow.
        assert_eq!(extract_with_decision(&headers(&[("b3", "0")])), (None, Some(false)));
        assert_eq!(extract_with_decision(&headers(&[("b3", "d")])), (None, Some(true)));
        assert_eq!(extract_with_decision(&headers(&[("x-b3-sampled", "1")])), (None, Some(true)));
        assert_eq!(extract_with_decision(&headers(&[("x-b3-flags", "1")])), (None, Some(true)));
        assert_eq!(extract_with_decision(&headers(&[("b3", "junk")])), (None, None));
        assert_eq!(extract_with_decision(&headers(&[])), (None, None));
    }

    #[test]
    fn injected_context_parses_back() {
        let mut h = HeaderMap::new();
        let (t, s, p) = ([7u8; 16], [9u8; 8], [3u8; 8]);
        inject(&mut h, &t, &s, Some(&p), true, true);
        let back = extract(&h).unwrap();
        assert_eq!((back.trace_id, back.span_id, back.sampled), (t, s, Some(true)));
        assert_eq!(h["x-b3-parentspanid"], "0303030303030303");
        assert_eq!(h["x-b3-spanid"], "0909090909090909");
    }

    #[test]
    fn request_ids_decide_sampling_alike_everywhere() {
        assert_eq!(sampling_key(b"0000270f-aaaa-4bbb-8ccc-dddddddddddd"), 9999);
        assert_eq!(sampling_key(b"00000000-0000"), 0);
        // Not hex, or short: a hash, the same each time.
        assert_eq!(sampling_key(b"mine"), sampling_key(b"mine"));
        assert_ne!(sampling_key(b"mine"), sampling_key(b"yours"));
        assert_eq!(sampling_key(b""), 0x811c_9dc5);
        assert!(sampled_by_key(99, 1.0) && !sampled_by_key(100, 1.0));
        assert!(!sampled_by_key(0, 0.0) && sampled_by_key(9_999, 100.0));
        assert!(sampled_by_key(4, 0.05) && !sampled_by_key(5, 0.05), "hundredths of a percent");
        // About 1 % of random keys.
        let n = (0..100_000u32).filter(|i| sampled_by_key(i.wrapping_mul(2_654_435_761), 1.0)).count();
        assert!((800..=1_200).contains(&n), "{n}");
    }
}
