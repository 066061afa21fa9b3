//! The upstream transport: how a connection to an endpoint is opened, and the
//! connection it yields. Both upstream clients (weft's own bodyless HTTP/1.1 client,
//! [`crate::h1client`], and hyper's, [`crate::pool`]) and the tunnels
//! ([`crate::tunnel`]) read and write an [`Conn`], so a new way to reach an upstream
//! is one variant here and nothing else changes. TLS origination (DestinationRule
//! `tls`) is such a variant: a cluster whose [`PoolSettings::tls`] is set opens TCP and
//! then runs a rustls client handshake with the `ClientConfig` its config compiled
//! once ([`weft_config::tls`]); the stream is [`Conn::Tls`]. A failed handshake is a
//! connect failure (503, flag UF, retried and counted by outlier detection as one).
//!
//! Both types are enums, not trait objects: a read or write is one `match` (which the
//! compiler removes while plain TCP is the only variant in a build), and opening a
//! connection allocates nothing more than the socket. The in-memory variant exists
//! only for tests (`cfg(test)` or the `test-util` feature), so production builds do
//! not carry it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use weft_config::PoolSettings;

use crate::cluster::Target;
use crate::error::UpstreamError;

/// How upstream connections are opened. Fixed for the proxy's life and held by every
/// endpoint (cheap to clone); a cluster's `tls` settings (in its [`PoolSettings`]) add
/// a TLS handshake over what `Tcp` opens.
#[derive(Clone, Default)]
pub enum Transport {
    /// Plain TCP: `TCP_NODELAY`, and keep-alive probes as the cluster's `tcpKeepalive` says.
    #[default]
    Tcp,
    /// Plain TCP, but the connections to the app opened in its network namespace
    /// (`weft run --intercept`: the app's loopback is not the sidecar's).
    AppNetns(std::sync::Arc<AppNetns>),
    /// Endpoints served in this process over in-memory streams ([`crate::testing`]).
    #[cfg(any(test, feature = "test-util"))]
    Memory(crate::testing::Network),
}

/// An open upstream connection.
pub enum Conn {
    Tcp(TcpStream),
    /// TLS originated to the upstream. Boxed: a rustls session is over a kilobyte and
    /// would otherwise grow every `Conn`, plain TCP included.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    #[cfg(any(test, feature = "test-util"))]
    Memory(tokio::io::DuplexStream),
}

/// The app's address and the namespace it listens in.
pub struct AppNetns {
    pub app: std::net::SocketAddr,
    pub ns: crate::netns::NetNs,
}

impl Transport {
    /// Opens a connection to `target`, giving up after the cluster's `connectTimeout`.
    pub async fn connect(&self, target: &Target, s: &PoolSettings) -> Result<Conn, UpstreamError> {
        if let Some(tls) = &s.tls {
            return crate::tls_origin::connect(self, target, s, tls).await;
        }
        let conn = match self {
            Transport::Tcp => tokio::time::timeout(s.connect_timeout, tcp(target, s)).await,
            Transport::AppNetns(a) if matches!(target, Target::Addr(t) if *t == a.app) => {
                let connect = async {
                    let stream = a.ns.connect(a.app).await?;
                    tcp_options(&stream, s);
                    Ok(Conn::Tcp(stream))
                };
                tokio::time::timeout(s.connect_timeout, connect).await
            }
            Transport::AppNetns(_) => tokio::time::timeout(s.connect_timeout, tcp(target, s)).await,
            #[cfg(any(test, feature = "test-util"))]
            Transport::Memory(net) => tokio::time::timeout(s.connect_timeout, net.connect(target)).await.map(|r| r.map(Conn::Memory)),
        };
        match conn {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(UpstreamError::Connect(e.to_string())),
            Err(_) => Err(UpstreamError::Connect(format!("connect timeout after {:?}", s.connect_timeout))),
        }
    }
}

/// Plain TCP, whatever the transport (TLS origination runs over TCP only).
pub(crate) async fn tcp_only(target: &Target, s: &PoolSettings) -> io::Result<TcpStream> {
    match tcp(target, s).await? {
        Conn::Tcp(t) => Ok(t),
        _ => Err(io::Error::other("not a TCP connection")),
    }
}

async fn tcp(target: &Target, s: &PoolSettings) -> io::Result<Conn> {
    let stream = match target {
        Target::Addr(a) => TcpStream::connect(a).await?,
        Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await?,
    };
    tcp_options(&stream, s);
    Ok(Conn::Tcp(stream))
}

fn tcp_options(stream: &TcpStream, s: &PoolSettings) {
    let _ = stream.set_nodelay(true);
    if let Some(k) = &s.keepalive {
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(t) = k.time {
            ka = ka.with_time(t);
        }
        if let Some(i) = k.interval {
            ka = ka.with_interval(i);
        }
        if let Some(p) = k.probes {
            ka = ka.with_retries(p);
        }
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
    }
}

impl Conn {
    /// Whether a connection that sat idle in a pool has been closed by the upstream (or
    /// sent something unasked for): either way it must not be reused. For TCP, the
    /// socket turned readable; no byte is read and nothing is allocated.
    pub fn closed_while_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            Conn::Tcp(s) => s.poll_read_ready(&mut cx).is_ready(),
            // A read, not the socket's readiness: a session ticket that arrived while
            // idle is consumed by rustls (no plaintext: pending); an alert or EOF is ready.
            Conn::Tls(s) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                Pin::new(s.as_mut()).poll_read(&mut cx, &mut buf).is_ready()
            }
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                Pin::new(s).poll_read(&mut cx, &mut buf).is_ready()
            }
        }
    }
}

impl AsyncRead for Conn {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    /// hyper writes a head and a body chunk in one `writev` when the stream says it can.
    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(any(test, feature = "test-util"))]
            Conn::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
