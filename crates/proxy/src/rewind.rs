//! A stream whose first byte was read to see what the client speaks, and is given back
//! to the next read: protocol detection on any `AsyncRead` (a socket, or the harness's
//! in-memory streams, which cannot `peek`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// `inner` with `first` (if any) read before it.
pub struct Rewind<I> {
    first: Option<u8>,
    inner: I,
}

impl<I: AsyncRead + Unpin> Rewind<I> {
    /// Reads the client's first byte: `None` when it closed without sending one.
    pub async fn read_first(mut inner: I) -> io::Result<(Option<u8>, Rewind<I>)> {
        let mut b = [0u8; 1];
        let n = inner.read(&mut b).await?;
        let first = (n == 1).then_some(b[0]);
        Ok((first, Rewind { first, inner }))
    }
}

impl<I> Rewind<I> {
    /// `inner` untouched: nothing to replay.
    pub fn untouched(inner: I) -> Rewind<I> {
        Rewind { first: None, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(b) = self.first {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            buf.put_slice(&[b]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_first_byte_is_read_again() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(a);
        let (first, mut r) = Rewind::read_first(b).await.unwrap();
        assert_eq!(first, Some(b'G'));
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_has_no_first_byte() {
        let (a, b) = tokio::io::duplex(64);
        drop(a);
        assert_eq!(Rewind::read_first(b).await.unwrap().0, None);
    }
}
