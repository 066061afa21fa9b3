//! The proxy served in-process: [`Harness`] builds the state from YAML text and
//! serves each client connection on an in-memory stream, on the test's own runtime.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::Network;
use crate::graceful::GracefulShutdown;
use crate::request::Side;
use crate::state::{ConfigSource, Shared};
use crate::transport::Transport;
use crate::ProxyOptions;

/// Bytes either half of a client connection buffers.
const PIPE: usize = 64 * 1024;

/// A proxy whose upstreams are `net`'s endpoints and whose clients are the test's.
pub struct Harness {
    pub shared: &'static Shared,
    pub net: Network,
    builder: &'static crate::server::Builder,
    graceful: GracefulShutdown,
}

/// A response as the client saw it: the body read to its end, or to the error that
/// cut it off.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Why the body ended early (the stream idle timeout, an upstream reset).
    pub cut: Option<String>,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<not UTF-8>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An upstream's answer: `status` with `body` as text.
pub fn answer(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

impl Harness {
    /// The proxy with `weft proxy`'s defaults and `yaml` as its config (panics, with
    /// the validation errors, if it does not compile).
    pub fn new(net: &Network, yaml: &str) -> Harness {
        Harness::with_options(net, yaml, ProxyOptions::default())
    }

    pub fn with_options(net: &Network, yaml: &str, opts: ProxyOptions) -> Harness {
        let view = weft_config::View::proxy(&opts.namespace).with_labels(opts.node.labels.clone());
        let (resources, snap, diags) = weft_config::build_str_in("harness.yaml", yaml, &view);
        assert!(diags.is_ok(), "config rejected: {diags}");
        let source = ConfigSource::Files(Vec::new());
        let shared = crate::run::build_shared(resources, snap, source, &opts, Transport::Memory(net.clone()));
        let builder = Box::leak(Box::new(crate::server::builder(shared)));
        Harness { shared, net: net.clone(), builder, graceful: GracefulShutdown::new() }
    }

    /// Swaps in a new config, as a file reload or a control plane's push does.
    pub fn install(&self, yaml: &str) {
        let (resources, snap, diags) = weft_config::build_str_in("harness.yaml", yaml, &self.shared.view);
        if let Err(d) = self.shared.install_built(resources, snap, diags) {
            panic!("config rejected: {d}");
        }
    }

    /// A new client connection (HTTP/1.1), served by [`crate::server::connection`] as a
    /// worker serves an accepted socket.
    pub async fn connect(&self) -> Client {
        self.connect_to(Side::Outbound).await
    }

    /// A new client connection to the inbound listener (the proxy needs `inbound` in its options).
    pub async fn connect_inbound(&self) -> Client {
        self.connect_to(Side::Inbound).await
    }

    async fn connect_to(&self, side: Side) -> Client {
        let ours = match side {
            // (The gateway's TLS listener is served on sockets only.)
            Side::Outbound | Side::GatewayTls(_) => self.connect_raw(),
            Side::Inbound => self.connect_inbound_raw(),
        };
        Client::over(ours).await.expect("client handshake")
    }

    /// A new raw client connection to the inbound listener, served as an accepted
    /// socket is: PeerAuthentication's mode, TLS detection and termination, then HTTP.
    pub fn connect_inbound_raw(&self) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let remote = SocketAddr::from(([127, 0, 0, 1], 50000));
        tokio::spawn(crate::inbound_tls::serve(self.shared, self.builder, self.graceful.watcher(), theirs, remote, 0));
        ours
    }

    /// A new client connection to the inbound listener over TLS with `config` (the
    /// proxy needs an identity in its options): the client's handshake error if it
    /// failed on its side. A refusal of the client's certificate shows on its first request.
    pub async fn connect_inbound_tls(&self, config: std::sync::Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
        let name = rustls::pki_types::ServerName::try_from("reviews.default.svc").map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, self.connect_inbound_raw()).await?;
        Client::over(tls).await.map_err(std::io::Error::other)
    }

    /// A new client connection to the proxy's TCP listener on `local` (a service's TCP
    /// port, or its VIP and port), served as an accepted socket there is ([`crate::tcp`]).
    pub fn connect_tcp(&self, local: &str) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let remote = SocketAddr::from(([127, 0, 0, 1], 50000));
        tokio::spawn(crate::tcp::serve(self.shared, theirs, crate::testing::addr(local), remote));
        ours
    }

    /// A new client connection as raw bytes (for half-sent heads and the like), served
    /// as [`Harness::connect`]'s.
    pub fn connect_raw(&self) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let remote = SocketAddr::from(([127, 0, 0, 1], 50000));
        tokio::spawn(crate::server::connection(self.shared, self.builder, &self.graceful, theirs, remote, 0, Side::Outbound));
        ours
    }

    /// `GET path` with `Host: host`, on a connection of its own.
    pub async fn get(&self, host: &str, path: &str) -> Answer {
        self.connect().await.get(host, path).await
    }

    /// `GET /` to `host` until each of `upstreams` has been connected to (a random
    /// balancer can leave one without a pooled connection after a few requests); at most
    /// 64 requests, each answered 200.
    pub async fn warm(&self, net: &Network, host: &str, upstreams: &[SocketAddr]) {
        for _ in 0..64 {
            if upstreams.iter().all(|a| !net.connects(*a).is_empty()) {
                return;
            }
            assert_eq!(self.get(host, "/").await.status, StatusCode::OK, "warming {host}");
        }
        panic!("{host}: not every upstream connected to after 64 requests");
    }

    /// `req` on a connection of its own.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        self.connect().await.send(req).await
    }

    /// The sum of a metric's samples whose labels contain each of `labels` (as the
    /// admin endpoint's `/metrics` shows them).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.shared
            .metrics
            .render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// One client connection to the proxy.
pub struct Client {
    tx: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    /// An HTTP/1.1 client on `io` (its connection driven by a task of its own).
    async fn over<I>(io: I) -> Result<Client, hyper::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        Ok(Client { tx })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        let req = Request::get(path).header(http::header::HOST, host).body(Full::default()).expect("a valid request");
        self.send(req).await
    }

    /// Sends `req` and reads the response to its end.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.try_send(req).await.expect("the proxy answers")
    }

    /// Sends `req`: the response read to its end, or why none came (the proxy closed
    /// the connection).
    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        let resp = self.tx.send_request(req).await?;
        let (parts, mut body) = resp.into_parts();
        let mut data = BytesMut::new();
        let mut cut = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        data.extend_from_slice(d);
                    }
                }
                Err(e) => {
                    cut = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(Answer { status: parts.status, headers: parts.headers, body: data.freeze(), cut })
    }
}
