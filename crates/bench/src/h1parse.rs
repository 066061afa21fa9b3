//! HTTP/1.1 response framing for the load generator (pure: bytes in, decisions out).
//!
//! Only what a client needs to find where a response ends on a keep-alive
//! connection: the status, Content-Length or chunked framing, and whether the
//! server will close. Body bytes are counted and dropped, never stored.

/// How the body after a response head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// No length given: the body runs until the server closes.
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The connection cannot carry another request after this response.
    pub close: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// A response the client cannot make sense of.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

const MAX_HEADERS: usize = 64;

/// Parses a response head from the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8], request_was_head: bool) -> Result<Option<Head>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed("more than 64 response headers")),
        Err(_) => return Err(Malformed("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    let mut close = resp.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT (RFC 9110 §8.6): not `parse`'s `+5`.
            let v = h.value.trim_ascii();
            let digits = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(v).ok().filter(|_| digits).and_then(|v| v.parse::<u64>().ok());
            match (n, length) {
                (None, _) => return Err(Malformed("invalid content-length")),
                (Some(a), Some(b)) if a != b => return Err(Malformed("conflicting content-length headers")),
                (n, _) => length = n,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.rsplit(|&b| b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let framing = if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Some(Head { status, framing, close, len }))
}

/// Walks a chunked body without keeping it.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl Chunked {
    /// Consumes bytes of the body; returns how many were used and whether the body ended.
    /// Bytes after the end belong to the next response and are not consumed.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), Malformed> {
        let mut i = 0;
        while i < buf.len() {
            if self.state == State::Data {
                let take = self.size.min((buf.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 15 {
                        return Err(Malformed("chunk size too large"));
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, b'\n') | (State::SizeLf, b'\n') | (State::Extension, b'\n') if self.digits > 0 => {
                    self.digits = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::Extension, _) => State::Extension,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataCr, b'\n') | (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart, b'\n') | (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok((i, true));
                }
                (State::TrailerLine, b'\n') => State::TrailerStart,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                _ => return Err(Malformed("malformed chunked body")),
            };
        }
        Ok((i, self.state == State::Done))
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes(), false).unwrap().unwrap()
    }

    #[test]
    fn heads() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!((h.status, h.framing, h.close, h.len), (200, Framing::Length(5), false, 38));
        assert_eq!(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        assert!(head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").close);
        assert!(head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").close);
        assert!(!head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n").close);
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Empty);
        assert_eq!(head("HTTP/1.1 100 Continue\r\n\r\n").status, 100);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).unwrap().unwrap().framing, Framing::Empty);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false), Ok(None));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", false).is_err());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..=end {
            let mut c = Chunked::default();
            let (a, done) = c.feed(&body[..split]).unwrap();
            assert_eq!(a, split);
            if done {
                assert_eq!(split, end);
                continue;
            }
            let (b, done) = c.feed(&body[split..]).unwrap();
            assert!(done, "split {split}");
            assert_eq!(a + b, end);
        }
    }

    #[test]
    fn chunked_errors() {
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"\r\n").is_err());
        assert!(Chunked::default().feed(b"1\r\nabc").is_err());
        assert!(Chunked::default().feed(b"fffffffffffffffff\r\n").is_err());
        assert_eq!(Chunked::default().feed(b"0\r\n\r\n").unwrap(), (5, true));
        assert_eq!(Chunked::default().feed(b"0\n\n").unwrap(), (3, true));
    }
}
