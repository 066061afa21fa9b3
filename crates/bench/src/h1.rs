//! One HTTP/1.1 keep-alive connection of the load generator.

use std::net::SocketAddr;
use std::time::Instant;

use std::io::{Read, Write};

use tokio::io::unix::AsyncFd;

use crate::h1parse::{parse_head, Chunked, Framing};
use crate::record::ErrorKind;

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The socket is driven through `AsyncFd` rather than tokio's `TcpStream` so that a
/// short read can mark it drained: tokio's stream keeps it "readable" until a read
/// fails with EAGAIN, which would cost every request one useless `read` syscall.
pub struct H1Conn {
    fd: AsyncFd<std::net::TcpStream>,
    /// Zeroed once; `len` bytes of it hold data.
    buf: Vec<u8>,
    len: usize,
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
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = stream.into_std()?;
        // SAFETY: the TcpStream is moved into the AsyncFd, which owns the descriptor for its whole life.
        let fd = unsafe { AsyncFd::register(stream) }.map_err(|e| e.into_parts().1)?;
        Ok(H1Conn { fd, buf: vec![0; 16 * 1024], len: 0 })
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().write(bytes)) {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Sends one request (already encoded) and reads its response to the last byte.
    pub async fn exchange(&mut self, request: &[u8], is_head: bool) -> Result<Answer, ErrorKind> {
        self.write_all(request).await.map_err(|e| ErrorKind::of_io(&e))?;
        self.len = 0;
        let mut first_byte = None;
        loop {
            let (head, first) = self.read_head(&mut first_byte, is_head).await?;
            if (100..200).contains(&head.status) && head.status != 101 {
                self.buf.copy_within(head.len..self.len, 0);
                self.len -= head.len;
                continue;
            }
            let after = self.len - head.len;
            let complete = match head.framing {
                Framing::Empty => true,
                Framing::Length(n) => self.skip_exact(n.saturating_sub(after as u64), n < after as u64).await?,
                Framing::Chunked => self.skip_chunked(head.len).await?,
                Framing::UntilClose => self.skip_to_eof().await?,
            };
            return Ok(Answer { status: head.status, first_byte: first, reusable: complete && !head.close && head.status != 101 });
        }
    }

    /// Appends what the socket has to the buffer; 0 at end of stream.
    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        if self.buf.len() - self.len < 4096 {
            self.buf.resize(self.buf.len() + 16 * 1024, 0);
        }
        let start = self.len;
        let result = loop {
            let mut guard = match self.fd.readable().await {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            match guard.try_io(|s| s.get_ref().read(&mut self.buf[start..])) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket; the next byte to arrive wakes us again.
                    if n > 0 && start + n < self.buf.len() {
                        guard.clear_ready();
                    }
                    break Ok(n);
                }
                Ok(Err(e)) => break Err(e),
                Err(_would_block) => {}
            }
        };
        let n = result.map_err(|e| ErrorKind::of_io(&e))?;
        self.len += n;
        Ok(n)
    }

    async fn read_head(&mut self, first_byte: &mut Option<Instant>, is_head: bool) -> Result<(crate::h1parse::Head, Instant), ErrorKind> {
        loop {
            if self.len > 0 {
                if let Some(head) = parse_head(&self.buf[..self.len], is_head).map_err(|_| ErrorKind::Protocol)? {
                    return Ok((head, first_byte.unwrap_or_else(Instant::now)));
                }
                if self.len > MAX_HEAD {
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
            self.len = 0;
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
        let (used, mut done) = chunked.feed(&self.buf[head_len..self.len]).map_err(|_| ErrorKind::Protocol)?;
        let mut overrun = head_len + used < self.len;
        while !done {
            self.len = 0;
            if self.fill().await? == 0 {
                return Err(ErrorKind::Reset);
            }
            let (used, end) = chunked.feed(&self.buf[..self.len]).map_err(|_| ErrorKind::Protocol)?;
            done = end;
            overrun = used < self.len;
        }
        Ok(!overrun)
    }

    async fn skip_to_eof(&mut self) -> Result<bool, ErrorKind> {
        loop {
            self.len = 0;
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
    }
}
