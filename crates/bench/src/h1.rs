//! One HTTP/1.1 keep-alive connection of the load generator.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h1parse::{parse_head, Chunked, Framing};
use crate::record::ErrorKind;

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

pub struct H1Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A complete response.
pub struct Answer {
    pub status: u16,
    /// When the first byte of the response arrived.
    pub first_byte: Instant,
    /// The connection can carry another request.
    pub reusable: bool,
}

impl H1Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H1Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(H1Conn { stream, buf: Vec::with_capacity(16 * 1024) })
    }

    /// Sends one request (already encoded) and reads its response to the last byte.
    pub async fn exchange(&mut self, request: &[u8], is_head: bool) -> Result<Answer, ErrorKind> {
        self.stream.write_all(request).await.map_err(|e| ErrorKind::of_io(&e))?;
        self.buf.clear();
        let mut first_byte = None;
        loop {
            let (head, first) = self.read_head(&mut first_byte, is_head).await?;
            if (100..200).contains(&head.status) && head.status != 101 {
                self.buf.drain(..head.len);
                continue;
            }
            let after = self.buf.len() - head.len;
            let complete = match head.framing {
                Framing::Empty => true,
                Framing::Length(n) => self.skip_exact(n.saturating_sub(after as u64), n < after as u64).await?,
                Framing::Chunked => self.skip_chunked(head.len).await?,
                Framing::UntilClose => self.skip_to_eof().await?,
            };
            return Ok(Answer { status: head.status, first_byte: first, reusable: complete && !head.close && head.status != 101 });
        }
    }

    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await.map_err(|e| ErrorKind::of_io(&e))
    }

    async fn read_head(&mut self, first_byte: &mut Option<Instant>, is_head: bool) -> Result<(crate::h1parse::Head, Instant), ErrorKind> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&self.buf, is_head).map_err(|_| ErrorKind::Protocol)? {
                    return Ok((head, first_byte.unwrap_or_else(Instant::now)));
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(ErrorKind::Protocol);
                }
            }
            if self.fill().await? == 0 {
                return Err(ErrorKind::Reset);
            }
            first_byte.get_or_insert_with(Instant::now);
        }
    }

    /// Reads and drops `remaining` body bytes. `overrun`: the buffer already held more than the body.
    async fn skip_exact(&mut self, mut remaining: u64, overrun: bool) -> Result<bool, ErrorKind> {
        while remaining > 0 {
            self.buf.clear();
            let n = self.fill().await?;
            if n == 0 {
                return Err(ErrorKind::Reset);
            }
            remaining = remaining.saturating_sub(n as u64);
        }
        // Bytes beyond the body: the server sent what was not asked for; do not reuse the connection.
        Ok(!overrun)
    }

    async fn skip_chunked(&mut self, head_len: usize) -> Result<bool, ErrorKind> {
        let mut chunked = Chunked::default();
        let (used, mut done) = chunked.feed(&self.buf[head_len..]).map_err(|_| ErrorKind::Protocol)?;
        let mut overrun = head_len + used < self.buf.len();
        while !done {
            self.buf.clear();
            if self.fill().await? == 0 {
                return Err(ErrorKind::Reset);
            }
            let (used, end) = chunked.feed(&self.buf).map_err(|_| ErrorKind::Protocol)?;
            done = end;
            overrun = used < self.buf.len();
        }
        Ok(!overrun)
    }

    async fn skip_to_eof(&mut self) -> Result<bool, ErrorKind> {
        loop {
            self.buf.clear();
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
    }
}
