//! A lean HTTP/1.1 client for the hot path: requests without a body (GET, HEAD, …).
//!
//! hyper's client runs each connection as its own task and hands requests, responses
//! and body chunks across channels; per request that is several task wake-ups and
//! allocations. Here the request's own future writes the head and reads the response
//! on the socket directly, and the response body is decoded as the client reads it;
//! at its end the connection goes back to the worker's pool. Requests with bodies and
//! upgrades keep using hyper (their reads and writes must overlap).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Frame;
use tokio::io::AsyncWriteExt;

use crate::cluster::Endpoint;
use crate::error::UpstreamError;
use crate::transport::Conn;

/// Largest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 8 * 1024;

/// An idle or busy upstream HTTP/1.1 connection owned by weft's own client.
pub struct RawConn {
    io: Conn,
    buf: BytesMut,
    wbuf: Vec<u8>,
    pub(crate) uses: u32,
    pub(crate) born: Instant,
    pub(crate) since: Instant,
}

impl RawConn {
    /// Boxed once per connection, so requests move a pointer, not the connection.
    fn new(io: Conn) -> Box<Self> {
        let now = Instant::now();
        Box::new(RawConn { io, buf: BytesMut::with_capacity(READ_CHUNK), wbuf: Vec::with_capacity(512), uses: 0, born: now, since: now })
    }

    /// An idle connection that became readable has been closed by the upstream (or
    /// sent something unasked for): either way it must not be reused.
    pub(crate) fn looks_closed(&mut self) -> bool {
        self.io.closed_while_idle()
    }
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Clone, Copy, Debug)]
enum Chunk {
    /// Expecting a size line.
    Size,
    /// Inside a chunk, this many bytes left, then CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Sends a request with no body and reads the response head.
pub async fn send(ep: &Arc<Endpoint>, worker: usize, parts: &http::request::Parts) -> Result<Response<RawBody>, UpstreamError> {
    let pool = &ep.pools[worker % ep.pools.len()];
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE);
    while let Some(mut conn) = pool.raw.pop() {
        if crate::pool::expired_at(conn.since, conn.born, &ep.pool_settings) || conn.looks_closed() {
            continue;
        }
        match exchange(conn, parts).await {
            Ok((head, body)) => return Ok(finish(head, body, ep, worker)),
            // Closed under us before any byte of a response: safe to try a new connection.
            Err((e, true)) if idempotent => {
                tracing::debug!("pooled connection to {} was stale: {e}", ep.id);
            }
            Err((e, _)) => return Err(UpstreamError::Reset(e.to_string())),
        }
    }
    let io = crate::pool::connect(ep).await?;
    ep.metrics.tcp_connection(ep.dest, ep.peer, true);
    let conn = RawConn::new(io);
    match exchange(conn, parts).await {
        Ok((head, body)) => Ok(finish(head, body, ep, worker)),
        Err((e, _)) => Err(UpstreamError::Reset(e.to_string())),
    }
}

fn finish(head: http::response::Parts, mut body: RawBody, ep: &Arc<Endpoint>, worker: usize) -> Response<RawBody> {
    body.home = Some((ep.clone(), worker));
    body.maybe_done();
    Response::from_parts(head, body)
}

/// Writes the head and reads the response head. On error, says whether nothing of a
/// response had arrived (so the request may be retried on another connection).
async fn exchange(mut conn: Box<RawConn>, parts: &http::request::Parts) -> Result<(http::response::Parts, RawBody), (io::Error, bool)> {
    conn.wbuf.clear();
    encode_head(&mut conn.wbuf, parts);
    if let Err(e) = conn.io.write_all(&conn.wbuf).await {
        return Err((e, true));
    }
    conn.buf.clear();
    loop {
        let parsed = if conn.buf.is_empty() { Ok(None) } else { parse_head(&mut conn.buf, parts.method == Method::HEAD) };
        let head = match parsed {
            Ok(Some(h)) => h,
            Ok(None) => {
                if conn.buf.len() >= MAX_HEAD {
                    return Err((io::Error::new(io::ErrorKind::InvalidData, "upstream response head too large"), false));
                }
                let before = conn.buf.len();
                conn.buf.reserve(READ_CHUNK);
                match read_some(&mut conn).await {
                    Ok(0) => {
                        return Err((
                            io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed the connection before responding"),
                            before == 0,
                        ))
                    }
                    Ok(_) => continue,
                    Err(e) => return Err((e, before == 0)),
                }
            }
            Err(e) => return Err((e, false)),
        };
        let (parts, framing, keep_alive) = head;
        // 1xx informational responses (100 Continue, 103 Early Hints) are skipped.
        if parts.status.is_informational() {
            continue;
        }
        conn.uses += 1;
        let body = RawBody { conn: Some(conn), framing, keep_alive, home: None, done: false };
        return Ok((parts, body));
    }
}

/// Reads what is there. Through `AsyncRead` (not `try_read`), so that a short read
/// clears the socket's readiness and an idle pooled connection reads as not ready.
async fn read_some(conn: &mut RawConn) -> io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)).await
}

fn encode_head(w: &mut Vec<u8>, p: &http::request::Parts) {
    w.extend_from_slice(p.method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(p.uri.path_and_query().map(|x| x.as_str()).unwrap_or("/").as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in &p.headers {
        w.extend_from_slice(k.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(v.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"\r\n");
}

type Head = (http::response::Parts, Framing, bool);

/// Parses a complete response head off the front of `buf`, or `None` if incomplete.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> io::Result<Option<Head>> {
    // Left uninitialized: the parser writes the headers it finds (64 empty ones were
    // written first, 2 KiB of stores a response).
    let mut hs = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut r, buf, &mut hs) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("invalid upstream response: {e}"))),
    };
    let code = r.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "invalid upstream status"))?;
    let http10 = r.version == Some(0);
    // Offsets of names and values inside the head, to slice them out of one `Bytes`.
    let base = buf.as_ptr() as usize;
    // (name start, name len, value start, value len), as u32 to keep this small.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = r.headers.len();
    for (span, h) in spans.iter_mut().zip(r.headers.iter()) {
        let (ns, vs) = (h.name.as_ptr() as usize - base, h.value.as_ptr() as usize - base);
        *span = (ns as u32, h.name.len() as u32, vs as u32, h.value.len() as u32);
    }
    let head = buf.split_to(n).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for &(ns, nl, vs, vl) in &spans[..count] {
        let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
        let name =
            header_name(&head[ns..ns + nl]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "invalid upstream header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "invalid upstream header value"))?;
        if name == http::header::CONTENT_LENGTH {
            // 1*DIGIT (RFC 9110 §8.6): not `parse`'s `+5`.
            let l = Some(value.as_bytes().trim_ascii())
                .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "invalid upstream content-length"))?;
            if length.is_some_and(|x| x != l) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "conflicting upstream content-length"));
            }
            length = Some(l);
        } else if name == http::header::TRANSFER_ENCODING {
            chunked = value.as_bytes().rsplit(|b| *b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            // Framing is re-done for the client; this header is hop-by-hop.
            continue;
        } else if name == http::header::CONNECTION {
            let v = value.as_bytes();
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
                continue;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                close = close && !http10;
                continue;
            }
            // Other tokens name headers to drop; `strip_hop_by_hop` handles those.
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        headers.append(name, value);
    }
    let no_body = head_request || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        headers.remove(http::header::CONTENT_LENGTH);
        Framing::Chunked(Chunk::Size)
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !close && !matches!(framing, Framing::UntilClose);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = headers;
    Ok(Some((resp.into_parts().0, framing, keep_alive)))
}

/// A response header's name: the names upstreams send most, as they send them (lower
/// case: hyper, nginx, Envoy), are matched as they are (`HeaderName::from_bytes`
/// lower-cases and looks up every name, ~180 instructions); others parsed.
fn header_name(raw: &[u8]) -> Option<HeaderName> {
    use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, SERVER, TRANSFER_ENCODING};
    let known = match raw {
        b"date" => DATE,
        b"server" => SERVER,
        b"content-type" => CONTENT_TYPE,
        b"content-length" => CONTENT_LENGTH,
        b"cache-control" => CACHE_CONTROL,
        b"connection" => CONNECTION,
        b"transfer-encoding" => TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(raw).ok(),
    };
    Some(known)
}

/// A response body read straight off the upstream socket.
pub struct RawBody {
    conn: Option<Box<RawConn>>,
    framing: Framing,
    keep_alive: bool,
    home: Option<(Arc<Endpoint>, usize)>,
    done: bool,
}

impl RawBody {
    pub fn is_end(&self) -> bool {
        self.done
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        match self.framing {
            Framing::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }

    /// At the end of the body: the connection goes home to its pool, or is closed.
    fn maybe_done(&mut self) {
        if !matches!(self.framing, Framing::Length(0)) {
            return;
        }
        self.done = true;
        let (Some(mut conn), Some((ep, worker))) = (self.conn.take(), self.home.take()) else { return };
        let s = &ep.pool_settings;
        let spent = s.max_requests_per_connection > 0 && conn.uses >= s.max_requests_per_connection;
        if self.keep_alive && conn.buf.is_empty() && !spent {
            conn.since = Instant::now();
            // The buffer is kept: the body just handed out shares its memory, but has
            // gone by the next request, whose read then reuses it in place (one 8 KiB
            // allocation and free less per request, as hyper's client keeps its own).
            // One that grew past a read chunk (a large head) is released.
            if conn.buf.capacity() > READ_CHUNK {
                conn.buf = BytesMut::new();
            }
            if let Err(conn) = ep.pools[worker % ep.pools.len()].raw.push(conn) {
                drop(conn);
                ep.metrics.tcp_connection(ep.dest, ep.peer, false);
            }
        } else {
            ep.metrics.tcp_connection(ep.dest, ep.peer, false);
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match &mut self.framing {
                Framing::Length(rem) => {
                    if !conn.buf.is_empty() {
                        let n = (*rem).min(conn.buf.len() as u64) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        *rem -= n as u64;
                        self.maybe_done();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => match step_chunked(state, &mut conn.buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
            if let Framing::Chunked(Chunk::Trailers) = self.framing {
                if let Some(end) = find_end_of_trailers(&conn.buf) {
                    conn.buf.advance(end);
                    self.framing = Framing::Length(0);
                    self.maybe_done();
                    continue;
                }
            }
            if matches!(self.framing, Framing::Length(0)) {
                self.maybe_done();
                continue;
            }
            // Need more bytes.
            let conn = self.conn.as_mut().expect("checked above");
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(self.framing, Framing::UntilClose) {
                        self.conn = None;
                        self.done = true;
                        if let Some((ep, _)) = self.home.take() {
                            ep.metrics.tcp_connection(ep.dest, ep.peer, false);
                        }
                        return Poll::Ready(None);
                    }
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed the connection mid-body"))));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection is mid-response and cannot be reused.
        if self.conn.is_some() {
            if let Some((ep, _)) = &self.home {
                ep.metrics.tcp_connection(ep.dest, ep.peer, false);
            }
        }
    }
}

/// Advances the chunked decoder over `buf`; returns data when there is some. Sets
/// the state to `Trailers` after the last chunk.
fn step_chunked(state: &mut Chunk, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > 4096 {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid chunk size line"));
                    }
                    return Ok(None);
                };
                let line = &buf[..line_end];
                let hex = line.split(|b| *b == b';').next().unwrap_or(&[]).trim_ascii();
                // 1*HEXDIG (RFC 9112 §7.1): not `from_str_radix`'s `+5`.
                let size = Some(hex)
                    .filter(|h| !h.is_empty() && h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "invalid chunk size"))?;
                buf.advance(line_end + 2);
                *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                if size == 0 {
                    return Ok(None);
                }
            }
            Chunk::Data(rem) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = rem.min(buf.len() as u64) as usize;
                let data = buf.split_to(n).freeze();
                *state = if rem == n as u64 { Chunk::DataEnd } else { Chunk::Data(rem - n as u64) };
                return Ok(Some(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "missing CRLF after chunk"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => return Ok(None),
        }
    }
}

/// Trailers end with an empty line; with none, the body ends right after "0\r\n" + "\r\n".
fn find_end_of_trailers(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_framing() {
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"[..]);
        let (p, f, ka) = parse_head(&mut b, false).unwrap().unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-a"], "1");
        assert!(matches!(f, Framing::Length(5)) && ka);
        // Names matched as sent and names parsed are the same names.
        for raw in ["date", "Date", "content-length", "CONTENT-TYPE", "server", "x-backend", "Transfer-Encoding"] {
            assert_eq!(header_name(raw.as_bytes()), HeaderName::from_bytes(raw.as_bytes()).ok(), "{raw}");
        }
        assert_eq!(header_name(b"bad name"), None);
        assert_eq!(&b[..], b"hello");
        let mut b = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let (_, f, ka) = parse_head(&mut b, false).unwrap().unwrap();
        assert!(matches!(f, Framing::UntilClose) && !ka);
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut b, false).unwrap().is_none());
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..]);
        assert!(parse_head(&mut b, false).is_err());
        // Signs are not digits: Rust's integer parsing takes `+5`, HTTP does not.
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"[..]);
        assert!(parse_head(&mut b, false).is_err());
        for bad in [&b"+5\r\nhello\r\n"[..], b"-0\r\n", b"\r\n", b" \r\n"] {
            assert!(step_chunked(&mut Chunk::Size, &mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut st = Chunk::Size;
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(d) = step_chunked(&mut st, &mut buf).unwrap() {
                    out.extend_from_slice(&d);
                }
            }
            assert_eq!(out, b"hello world", "split at {split}");
            assert!(matches!(st, Chunk::Trailers));
            assert_eq!(find_end_of_trailers(&buf), Some(buf.len()));
        }
    }
}
