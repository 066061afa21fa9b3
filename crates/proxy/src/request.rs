//! What one request carries through the phases ([`crate::phases`]): the connection it
//! came on, its clock, its record ([`Finish`]), and what routing chose for it. Filters
//! read and write it; everything it holds is owned (`Arc`s), so a config swap in the
//! middle of a request changes nothing for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::Version;

use crate::cluster::Endpoint;
use crate::finish::Finish;
use crate::state::Shared;

/// The request clock: tokio's, so that a request's deadlines follow the simulated
/// clock of a test under `tokio::time::pause` (the in-process harness). Built without
/// tokio's `test-util` (every production build) this is `std::time::Instant::now()`.
#[inline]
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Which listener a connection came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The app's own requests, routed by host to the mesh.
    Outbound,
    /// Requests for the app, from other proxies: every one goes to the app.
    Inbound,
    /// An ingress gateway's TLS listener, TLS terminated for the server (by its key,
    /// [`weft_config::gateway::TlsServer::key`]) the ClientHello's SNI chose: routed by
    /// that server's hosts only.
    GatewayTls(u32),
}

/// What a connection's requests share (cloned per request: an `Arc` count at most).
#[derive(Clone)]
pub struct ConnCtx {
    pub shared: &'static Shared,
    pub remote: SocketAddr,
    pub worker: usize,
    pub side: Side,
    /// The peer's verified SPIFFE ID when the connection came over mTLS (inbound).
    pub peer: Option<Arc<crate::peer::Peer>>,
}

/// One request's state from accept to record.
pub struct RequestCtx {
    pub conn: ConnCtx,
    pub start: Instant,
    /// Recorded once, when the response has gone out (or the request was cut short).
    pub fin: Finish,
    /// The client's HTTP version (the response is sent in it).
    pub version: Version,
    /// A gRPC request: its answers' `grpc-status` counts.
    pub grpc: bool,
    /// The port the client addressed (`Host`/`:authority`), if it named one.
    pub port: Option<u16>,
    /// Per-request state of the filters that keep some between phases.
    pub filters: crate::filters::PerRequest,
}

impl RequestCtx {
    pub fn new(conn: ConnCtx, fin: Finish, version: Version, grpc: bool) -> RequestCtx {
        RequestCtx { conn, start: fin.start, fin, version, grpc, port: None, filters: Default::default() }
    }
}

/// An endpoint's share of a request: taken when the request is sent its way, given
/// back when dropped, however the request ends (answered, failed, retried elsewhere,
/// cancelled). The balancers read the count (least request, peak EWMA).
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn start(ep: Arc<Endpoint>) -> InFlight {
        ep.load.start();
        InFlight(ep)
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.load.finish();
    }
}

/// A `Set-Cookie` the consistent-hash filter sends back (a generated hash cookie).
pub type SetCookie = Option<HeaderValue>;
