//! Property-based fuzzing of `weft bench`'s response framing: `parse_head` and
//! `Chunked::feed`. A short run is part of `cargo test`; `scripts/fuzz.sh` runs the
//! same properties with `PROPTEST_CASES` in the millions.

use proptest::prelude::*;

use super::*;

/// The case count: `PROPTEST_CASES` when set (the long run), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

#[derive(Clone, Debug)]
struct GenHead {
    status: u16,
    http10: bool,
    headers: Vec<(String, String)>,
    length: Option<u64>,
    chunked: bool,
    connection: Option<&'static str>,
    head_request: bool,
}

fn gen_head() -> impl Strategy<Value = GenHead> {
    (
        prop_oneof![100u16..=999, Just(200u16), Just(204), Just(304)],
        any::<bool>(),
        prop::collection::vec(("x-[a-z0-9-]{1,12}", "[!-~]([ !-~]{0,30}[!-~])?"), 0..20),
        prop::option::of(any::<u64>()),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some("close")), Just(Some("keep-alive")), Just(Some("x-a, Close")), Just(Some("upgrade"))],
        any::<bool>(),
    )
        .prop_map(|(status, http10, headers, length, chunked, connection, head_request)| GenHead {
            status,
            http10,
            headers,
            length,
            chunked,
            connection,
            head_request,
        })
}

fn serialize(h: &GenHead) -> Vec<u8> {
    let mut w = format!("HTTP/1.{} {} Some Reason\r\n", if h.http10 { 0 } else { 1 }, h.status).into_bytes();
    let mut line = |k: &str, v: &str| w.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    for (k, v) in &h.headers {
        line(k, v);
    }
    if let Some(n) = h.length {
        line("Content-Length", &n.to_string());
    }
    if h.chunked {
        line("Transfer-Encoding", "gzip, chunked");
    }
    if let Some(c) = h.connection {
        line("Connection", c);
    }
    w.extend_from_slice(b"\r\n");
    w
}

/// Random bytes, or valid bytes with a few changed, inserted or removed.
fn hostile_bytes(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (valid, prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)).prop_map(|(mut v, edits)| {
        for (at, byte, op) in edits {
            let i = at.index(v.len() + 1);
            match op {
                0 if i < v.len() => v[i] = byte,
                1 => v.insert(i, byte),
                _ if i < v.len() => {
                    v.remove(i);
                }
                _ => {}
            }
        }
        v
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..600), mutated]
}

fn gen_chunked() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((1usize..300, 0usize..3, any::<bool>(), prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"), any::<u8>()), 0..12),
        1usize..4,
        prop::collection::vec(("x-[a-z]{1,8}", "[!-~]{1,16}"), 0..3),
        any::<bool>(),
    )
        .prop_map(|(chunks, last_zeros, trailers, bare_lf)| {
            let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
            let mut w = Vec::new();
            for (len, zeros, upper, ext, fill) in chunks {
                let hex = if upper { format!("{len:X}") } else { format!("{len:x}") };
                w.extend_from_slice("0".repeat(zeros).as_bytes());
                w.extend_from_slice(hex.as_bytes());
                if let Some(e) = ext {
                    w.push(b';');
                    w.extend_from_slice(e.as_bytes());
                }
                w.extend_from_slice(eol);
                w.extend(std::iter::repeat_n(fill, len));
                w.extend_from_slice(eol);
            }
            w.extend_from_slice("0".repeat(last_zeros).as_bytes());
            w.extend_from_slice(eol);
            for (k, v) in trailers {
                w.extend_from_slice(format!("{k}: {v}").as_bytes());
                w.extend_from_slice(eol);
            }
            w.extend_from_slice(eol);
            w
        })
}

fn split<'a>(wire: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    at.push(0);
    at.push(wire.len());
    at.sort_unstable();
    at.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
}

proptest! {
    #![proptest_config(config(4000))]

    /// A head serialized from random valid parts parses back to its status, framing,
    /// close and length, whatever follows; a proper prefix asks for more bytes.
    #[test]
    fn fuzz_bench_head_round_trip(h in gen_head(), rest in prop::collection::vec(any::<u8>(), 0..32), cut in any::<prop::sample::Index>()) {
        let wire = serialize(&h);
        prop_assert_eq!(parse_head(&wire[..cut.index(wire.len())], h.head_request), Ok(None));
        let mut buf = wire.clone();
        buf.extend_from_slice(&rest);
        let got = parse_head(&buf, h.head_request).unwrap().unwrap();
        let framing = if h.head_request || (100..200).contains(&h.status) || h.status == 204 || h.status == 304 {
            Framing::Empty
        } else if h.chunked {
            Framing::Chunked
        } else if let Some(n) = h.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let said_close = h.connection.is_some_and(|c| c.to_ascii_lowercase().contains("close"));
        let close = said_close || (h.http10 && h.connection != Some("keep-alive")) || framing == Framing::UntilClose;
        prop_assert_eq!(got, Head { status: h.status, framing, close, len: wire.len() });
    }

    /// Random or mutated bytes: an answer or an error, never a panic; a head is never
    /// longer than the buffer.
    #[test]
    fn fuzz_bench_head_hostile(bytes in hostile_bytes(gen_head().prop_map(|h| serialize(&h))), head_request in any::<bool>()) {
        if let Ok(Some(h)) = parse_head(&bytes, head_request) {
            prop_assert!(h.len <= bytes.len() && h.len > 0);
        }
    }

    /// A chunked body (CRLF or bare LF lines) fed in any split ends exactly at its end
    /// and consumes nothing of what follows.
    #[test]
    fn fuzz_bench_chunked_round_trip(wire in gen_chunked(), next in prop::collection::vec(any::<u8>(), 0..16), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let end = wire.len();
        let mut all = wire.clone();
        all.extend_from_slice(&next);
        let mut c = Chunked::default();
        let mut used = 0;
        let mut done = false;
        for piece in split(&all, &cuts) {
            let (n, d) = c.feed(piece).unwrap();
            used += n;
            if d {
                done = true;
                break;
            }
            prop_assert_eq!(n, piece.len());
        }
        prop_assert!(done);
        prop_assert_eq!(used, end);
    }

    /// Random or mutated chunked bodies in any split: progress or an error, never a
    /// panic; never more consumed than given.
    #[test]
    fn fuzz_bench_chunked_hostile(bytes in hostile_bytes(gen_chunked()), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut c = Chunked::default();
        for piece in split(&bytes, &cuts) {
            match c.feed(piece) {
                Ok((n, done)) => {
                    prop_assert!(n <= piece.len());
                    if done {
                        break;
                    }
                    prop_assert_eq!(n, piece.len());
                }
                Err(_) => break,
            }
        }
    }
}
