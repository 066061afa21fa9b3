//! Property-based fuzzing of the upstream HTTP/1.1 client's parsing: `parse_head`,
//! `step_chunked` and `RawBody`'s framing (fed from an in-memory stream, split at
//! random read boundaries). A short run is part of `cargo test`; `scripts/fuzz.sh`
//! runs the same properties with `PROPTEST_CASES` in the millions.

use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use tokio::io::AsyncWrite;

use super::*;

/// The case count: `PROPTEST_CASES` when set (the long run), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Framing headers of a generated response, as sent.
#[derive(Clone, Debug)]
enum Frame_ {
    None,
    Length(u64),
    Chunked,
    /// Both: chunked wins, and the Content-Length is dropped.
    Both(u64),
}

#[derive(Clone, Debug)]
struct GenHead {
    status: u16,
    reason: String,
    http10: bool,
    headers: Vec<(String, String)>,
    framing: Frame_,
    connection: Option<&'static str>,
    head_request: bool,
}

fn gen_head() -> impl Strategy<Value = GenHead> {
    (
        prop_oneof![100u16..=999, Just(200u16), Just(204), Just(304), Just(101)],
        "[A-Za-z]([A-Za-z ]{0,20}[A-Za-z])?",
        any::<bool>(),
        prop::collection::vec(("x-[a-z0-9-]{1,12}", "[!-~]([ !-~]{0,30}[!-~])?"), 0..20),
        prop_oneof![Just(Frame_::None), any::<u64>().prop_map(Frame_::Length), Just(Frame_::Chunked), any::<u64>().prop_map(Frame_::Both)],
        prop_oneof![Just(None), Just(Some("close")), Just(Some("keep-alive")), Just(Some("Close")), Just(Some("x-other"))],
        any::<bool>(),
    )
        .prop_map(|(status, reason, http10, headers, framing, connection, head_request)| GenHead {
            status,
            reason,
            http10,
            headers,
            framing,
            connection,
            head_request,
        })
}

fn serialize(h: &GenHead) -> Vec<u8> {
    let mut w = format!("HTTP/1.{} {} {}\r\n", if h.http10 { 0 } else { 1 }, h.status, h.reason).into_bytes();
    let mut line = |k: &str, v: &str| w.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    for (k, v) in &h.headers {
        line(k, v);
    }
    match h.framing {
        Frame_::None => {}
        Frame_::Length(n) => line("Content-Length", &n.to_string()),
        Frame_::Chunked => line("Transfer-Encoding", "gzip, chunked"),
        Frame_::Both(n) => {
            line("content-length", &n.to_string());
            line("transfer-encoding", "chunked");
        }
    }
    if let Some(c) = h.connection {
        line("Connection", c);
    }
    w.extend_from_slice(b"\r\n");
    w
}

/// Random bytes, or a valid head with a few bytes changed, inserted or removed.
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

/// A chunked body: chunks with random size spellings and extensions, then trailers.
#[derive(Clone, Debug)]
struct GenChunked {
    chunks: Vec<(Vec<u8>, u8, bool, Option<String>)>,
    last_zeros: u8,
    trailers: Vec<(String, String)>,
}

fn gen_chunked() -> impl Strategy<Value = GenChunked> {
    (
        prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 1..200), 0u8..3, any::<bool>(), prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?")),
            0..12,
        ),
        1u8..4,
        prop::collection::vec(("x-[a-z]{1,8}", "[!-~]{1,16}"), 0..3),
    )
        .prop_map(|(chunks, last_zeros, trailers)| GenChunked { chunks, last_zeros, trailers })
}

impl GenChunked {
    fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        for (data, zeros, upper, ext) in &self.chunks {
            let hex = if *upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
            w.extend_from_slice("0".repeat(*zeros as usize).as_bytes());
            w.extend_from_slice(hex.as_bytes());
            if let Some(e) = ext {
                w.push(b';');
                w.extend_from_slice(e.as_bytes());
            }
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(data);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice("0".repeat(self.last_zeros as usize).as_bytes());
        w.extend_from_slice(b"\r\n");
        for (k, v) in &self.trailers {
            w.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        w.extend_from_slice(b"\r\n");
        w
    }

    fn data(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.0.iter().copied()).collect()
    }
}

/// Cuts `wire` into pieces at the given (unsorted, possibly repeated) points.
fn split(wire: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    at.push(0);
    at.push(wire.len());
    at.sort_unstable();
    at.windows(2).map(|w| wire[w[0]..w[1]].to_vec()).collect()
}

/// Feeds the pieces to `step_chunked` the way `RawBody::poll_frame` does; returns the
/// data, whether the body ended, and the bytes left after it.
fn decode_chunked(pieces: &[Vec<u8>]) -> io::Result<(Vec<u8>, bool, BytesMut)> {
    let mut st = Chunk::Size;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let total: usize = pieces.iter().map(Vec::len).sum();
    for p in pieces {
        buf.extend_from_slice(p);
        // Bounded: every step that returns data consumes at least one byte.
        for _ in 0..=total + 1 {
            match step_chunked(&mut st, &mut buf)? {
                Some(d) => {
                    assert!(!d.is_empty(), "empty data frame");
                    out.extend_from_slice(&d);
                }
                None => break,
            }
        }
        if let Chunk::Trailers = st {
            if let Some(end) = find_end_of_trailers(&buf) {
                buf.advance(end);
                return Ok((out, true, buf));
            }
        }
    }
    assert!(out.len() <= total, "more data out than bytes in");
    Ok((out, false, buf))
}

/// Drives a `RawBody` over an in-memory connection, writing one piece per step; with
/// `eof`, the upstream closes after the last piece. Returns the data and how it ended.
fn drive_body(framing: Framing, pieces: &[Vec<u8>], eof: bool) -> (Vec<u8>, Option<io::Error>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let mut conn = RawConn::new(Conn::Memory(client));
    if let Some(first) = pieces.first() {
        conn.buf.extend_from_slice(first);
    }
    let mut body = RawBody { conn: Some(conn), framing, keep_alive: true, home: None, done: false };
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let total: usize = pieces.iter().map(Vec::len).sum();
    let mut next = 1;
    let mut server = Some(server);
    // Bounded: each poll yields data, ends, or consumes a piece.
    for _ in 0..4 * (total + pieces.len()) + 16 {
        match body.poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => out.extend_from_slice(&f.into_data().expect("data frame")),
            Poll::Ready(Some(Err(e))) => return (out, Some(e)),
            Poll::Ready(None) => return (out, None),
            Poll::Pending if next < pieces.len() => {
                let s = server.as_mut().expect("open");
                match Pin::new(s).poll_write(&mut cx, &pieces[next]) {
                    Poll::Ready(Ok(n)) => assert_eq!(n, pieces[next].len()),
                    other => panic!("in-memory write: {other:?}"),
                }
                next += 1;
            }
            // Dropping the other half of the duplex is the upstream's close.
            Poll::Pending if eof && server.is_some() => server = None,
            Poll::Pending if eof => panic!("pending after the upstream closed"),
            Poll::Pending => return (out, Some(io::Error::new(io::ErrorKind::WouldBlock, "waiting for more"))),
        }
    }
    panic!("RawBody::poll_frame did not settle");
}

proptest! {
    #![proptest_config(config(4000))]

    /// A head serialized from random valid parts parses back to them, whatever follows
    /// it, and any proper prefix of it asks for more bytes.
    #[test]
    fn fuzz_h1client_head_round_trip(h in gen_head(), rest in prop::collection::vec(any::<u8>(), 0..32), cut in any::<prop::sample::Index>()) {
        let wire = serialize(&h);
        let prefix = cut.index(wire.len());
        let mut part = BytesMut::from(&wire[..prefix]);
        prop_assert!(parse_head(&mut part, h.head_request).unwrap().is_none());
        prop_assert_eq!(part.len(), prefix);

        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(&rest);
        let (parts, framing, keep_alive) = parse_head(&mut buf, h.head_request).unwrap().unwrap();
        prop_assert_eq!(&buf[..], &rest[..]);
        prop_assert_eq!(parts.status.as_u16(), h.status);
        let no_body = h.head_request || (100..200).contains(&h.status) || h.status == 204 || h.status == 304;
        let (length, chunked) = match h.framing {
            Frame_::None => (None, false),
            Frame_::Length(n) => (Some(n), false),
            Frame_::Chunked => (None, true),
            Frame_::Both(n) => (Some(n), true),
        };
        // Ordinary headers in order; Content-Length kept unless chunked framing replaced it.
        let mut want: Vec<(String, String)> = h.headers.clone();
        if let Some(n) = length {
            if no_body || !chunked {
                want.push(("content-length".into(), n.to_string()));
            }
        }
        if let Some(c) = h.connection {
            if !c.eq_ignore_ascii_case("close") && !c.eq_ignore_ascii_case("keep-alive") {
                want.push(("connection".into(), c.into()));
            }
        }
        let mut got: Vec<(String, String)> = parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
        let want_framing = if no_body {
            "Length(0)".to_owned()
        } else if chunked {
            "Chunked(Size)".to_owned()
        } else if let Some(n) = length {
            format!("Length({n})")
        } else {
            "UntilClose".to_owned()
        };
        prop_assert_eq!(format!("{framing:?}"), want_framing);
        let close = h.connection.is_some_and(|c| c.eq_ignore_ascii_case("close")) || (h.http10 && h.connection != Some("keep-alive"));
        prop_assert_eq!(keep_alive, !close && !matches!(framing, Framing::UntilClose));
    }

    /// Random or mutated bytes: an answer or an error, never a panic; a complete head
    /// consumes at most the buffer, an incomplete one nothing.
    #[test]
    fn fuzz_h1client_head_hostile(bytes in hostile_bytes(gen_head().prop_map(|h| serialize(&h))), head_request in any::<bool>()) {
        let mut buf = BytesMut::from(&bytes[..]);
        match parse_head(&mut buf, head_request) {
            Ok(Some((parts, _, _))) => {
                prop_assert!(buf.len() < bytes.len());
                prop_assert!(parts.headers.len() <= MAX_HEADERS);
            }
            Ok(None) => prop_assert_eq!(buf.len(), bytes.len()),
            Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
        }
    }

    /// A chunked body encoded from random chunks decodes to the same bytes however it
    /// is split across reads, ends exactly where it ends, and leaves what follows.
    #[test]
    fn fuzz_h1client_chunked_round_trip(c in gen_chunked(), next in prop::collection::vec(any::<u8>(), 0..16), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut wire = c.encode();
        let end = wire.len();
        wire.extend_from_slice(&next);
        let (data, done, left) = decode_chunked(&split(&wire, &cuts)).unwrap();
        prop_assert_eq!(data, c.data());
        prop_assert!(done);
        // What followed the body is left for the next response when it arrived in the
        // same read as the body's end (later reads are not fed once the body ended).
        prop_assert!(next.starts_with(&left), "left {:?} of {:?} (end {})", left, next, end);
    }

    /// Random or mutated chunked bodies: data or an error, never a panic or a loop,
    /// never more data than bytes in.
    #[test]
    fn fuzz_h1client_chunked_hostile(bytes in hostile_bytes(gen_chunked().prop_map(|c| c.encode())), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        if let Ok((data, _, _)) = decode_chunked(&split(&bytes, &cuts)) {
            prop_assert!(data.len() <= bytes.len());
        }
    }

    /// `RawBody` over a stream: Content-Length yields exactly that many bytes, chunked
    /// the decoded data, until-close everything until EOF; a body cut short by the
    /// upstream closing is an error, never a silent end.
    #[test]
    fn fuzz_h1client_raw_body(
        kind in 0u8..3,
        body in prop::collection::vec(any::<u8>(), 0..600),
        c in gen_chunked(),
        extra in prop::collection::vec(any::<u8>(), 0..16),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        truncate_at in any::<prop::sample::Index>(),
        truncated in any::<bool>(),
    ) {
        let (framing, mut wire, want) = match kind {
            0 => (Framing::Length(body.len() as u64), body.clone(), body.clone()),
            1 => (Framing::Chunked(Chunk::Size), c.encode(), c.data()),
            _ => (Framing::UntilClose, body.clone(), body.clone()),
        };
        let full = wire.len();
        if truncated && full > 0 {
            wire.truncate(truncate_at.index(full));
        } else if kind != 2 {
            wire.extend_from_slice(&extra);
        }
        let (out, err) = drive_body(framing, &split(&wire, &cuts), true);
        if truncated && full > 0 && kind != 2 {
            // Cut short: an error (the data so far is a prefix of the body).
            prop_assert!(err.is_some(), "truncated body ended cleanly: {} of {} bytes", wire.len(), full);
            prop_assert!(want.starts_with(&out));
        } else if kind == 2 {
            prop_assert!(err.is_none());
            prop_assert_eq!(&out[..], &wire[..]);
        } else {
            prop_assert!(err.is_none(), "{:?}", err);
            prop_assert_eq!(out, want);
        }
    }
}

proptest! {
    #![proptest_config(config(4000))]

    /// Content-Length is 1*DIGIT and a chunk size 1*HEXDIG (with optional whitespace
    /// around): anything else (a sign, `0x`, an empty value) is an error, not a guess.
    #[test]
    fn fuzz_h1client_numbers_strict(v in "[ \t+\\-0-9a-fA-FxX]{0,10}|[0-9]{15,25}") {
        let t = v.trim_matches([' ', '\t']);
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\nContent-Length: {v}\r\n\r\n").as_bytes());
        let want = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<u64>().ok()).flatten();
        match parse_head(&mut buf, false) {
            Ok(Some((_, Framing::Length(n), _))) => prop_assert_eq!(Some(n), want),
            Ok(other) => prop_assert!(false, "{:?}", other.map(|h| h.1)),
            Err(_) => prop_assert_eq!(None, want),
        }
        let mut buf = BytesMut::from(format!("{v}\r\n").as_bytes());
        let want = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u64::from_str_radix(t, 16).ok()).flatten();
        let mut st = Chunk::Size;
        match step_chunked(&mut st, &mut buf) {
            Ok(_) => match st {
                Chunk::Trailers => prop_assert_eq!(want, Some(0)),
                Chunk::Data(n) => prop_assert_eq!(want, Some(n)),
                other => prop_assert!(false, "{:?}", other),
            },
            Err(_) => prop_assert_eq!(want, None),
        }
    }
}
