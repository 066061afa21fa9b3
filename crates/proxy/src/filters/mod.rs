//! Filters: the features that act on a request between routing and forwarding, and on
//! its response on the way back. Each is one file and one arm of [`Filter`]; a chain
//! is compiled per virtual host and route ([`build`]) from the config snapshot and
//! the proxy's live state, so an unconfigured filter is not in any chain and costs
//! nothing, and an empty chain costs one branch.
//!
//! Request hooks are synchronous: they decide (admit, refuse, answer, hold the request
//! for a while) with the request head at hand; waits they ask for ([`PerRequest`]) run
//! once the config snapshot has been let go. Response hooks run in the reverse order,
//! only for the filters whose request hook ran.
//!
//! Adding a filter: a file here with a type holding its compiled config and live
//! state, an arm in [`Filter`] dispatching to its `on_request` / `on_response`, and a
//! line in [`build`] that puts it in the chains it applies to.

pub mod authz;
pub mod cache;
pub mod compression;
pub mod fault;
pub mod hash_cookie;
pub mod header_ops;
pub mod jwt;
pub mod mirror;
pub mod rate_limit;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use weft_telemetry::ResponseFlags;

use crate::body::RespBody;
use crate::request::RequestCtx;

/// The error type of the body wrappers: whatever the inner body failed with, or the codec.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One filter of a chain.
#[derive(Clone)]
pub enum Filter {
    Jwt(jwt::Jwt),
    Authz(authz::Authz),
    RateLimit(rate_limit::RateLimit),
    Fault(fault::Fault),
    HeaderOps(header_ops::HeaderOps),
    Mirror(mirror::Mirror),
    HashCookie(hash_cookie::HashCookie),
    Compression(compression::Compression),
    Cache(cache::ResponseCache),
}

/// What a request hook decided.
pub enum Flow {
    /// On to the next filter.
    Next,
    /// Refused or failed here: a local answer, recorded at once.
    Reject(Local),
    /// Answered here (the response still passes back through the filters before).
    Respond(Box<Response<RespBody>>),
}

/// A local answer: status, response flag and a message for the client.
pub struct Local {
    pub status: StatusCode,
    pub flags: ResponseFlags,
    pub body: Bytes,
    /// A gRPC status to answer with (trailers-only) instead of an HTTP status.
    pub grpc: Option<u8>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` (a refused JWT, as Envoy's jwt_authn answers).
    pub www_authenticate: Option<http::HeaderValue>,
}

impl Local {
    pub fn new(status: StatusCode, flags: ResponseFlags, body: impl Into<Bytes>) -> Local {
        Local { status, flags, body: body.into(), grpc: None, retry_after: None, www_authenticate: None }
    }
}

/// What filters keep for one request between their hooks and the phases.
#[derive(Default)]
pub struct PerRequest {
    /// Places held in leaky-bucket queues, and the longest wait among them.
    pub queued: Vec<weft_resilience::bucket::Queued>,
    /// How long to hold the request before forwarding (leaky buckets, injected delay).
    pub delay: Duration,
    /// Admissions by adaptive concurrency limits: released (with the latency) when the
    /// response head is back or the request failed.
    pub admitted: Vec<rate_limit::Admitted>,
    /// The cluster a copy of the request goes to (mirroring).
    pub mirror: Option<Arc<crate::cluster::Cluster>>,
    /// The destination routing chose: its index in the route's weighted targets.
    pub target: usize,
    /// A generated consistent-hash cookie to set on the response.
    pub set_cookie: Option<http::HeaderValue>,
    /// The coding the client gets if the response qualifies (Compression).
    pub compress: Option<(compression::Encoding, Arc<compression::CompressionPolicy>)>,
    /// A cache miss or revalidation on its way upstream (ResponseCache).
    pub cache: Option<Box<cache::Outstanding>>,
    /// A miss waiting for another request fetching the same response (ResponseCache).
    pub cache_wait: Option<Box<cache::Waiting>>,
    /// What the inbound authentication and authorization filters found (boxed, one
    /// pointer for both: most requests have neither).
    pub auth: Option<Box<AuthState>>,
}

/// A request's JWT and external authorization state.
#[derive(Default)]
pub struct AuthState {
    /// The JWT a RequestAuthentication verified (AuthorizationPolicy reads it).
    pub jwt: Option<weft_authz::VerifiedJwt>,
    /// A CUSTOM AuthorizationPolicy matched: the external authorizer's check, made
    /// before the request goes anywhere ([`crate::ext_authz`]).
    pub ext_authz: Option<crate::ext_authz::Call>,
    /// Headers the external authorizer allowed with, for the response.
    pub to_downstream: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The filters of one route (its virtual host's first), and the host's hedging.
#[derive(Default)]
pub struct Chain {
    pub filters: Box<[Filter]>,
    pub hedge: Option<Arc<crate::live::Hedge>>,
}

impl Filter {
    /// The request hook; `host` is the request's lower-case host (no port).
    #[inline]
    pub fn on_request(&self, cx: &mut RequestCtx, head: &mut Parts, host: &str) -> Flow {
        match self {
            Filter::Jwt(f) => f.on_request(cx, head),
            Filter::Authz(f) => f.on_request(cx, head, host),
            Filter::RateLimit(f) => f.on_request(cx, head, host),
            Filter::Fault(f) => f.on_request(cx),
            Filter::HeaderOps(f) => f.on_request(head),
            Filter::Mirror(f) => f.on_request(cx),
            Filter::HashCookie(_) => Flow::Next,
            Filter::Compression(f) => f.on_request(cx, head, host),
            Filter::Cache(f) => f.on_request(cx, head, host),
        }
    }

    /// The response hook.
    #[inline]
    pub fn on_response(&self, cx: &mut RequestCtx, resp: &mut Response<RespBody>) {
        match self {
            Filter::HeaderOps(f) => f.on_response(cx.filters.target, resp),
            Filter::HashCookie(f) => f.on_response(cx, resp),
            Filter::Compression(_) => compression::Compression::on_response(cx, resp),
            Filter::Cache(_) => cache::ResponseCache::on_response(cx, resp),
            Filter::Jwt(_) | Filter::Authz(_) | Filter::RateLimit(_) | Filter::Fault(_) | Filter::Mirror(_) => {}
        }
    }
}

/// Runs the response hooks of the first `ran` filters of `chain`, last first.
pub fn respond(chain: &Chain, ran: usize, cx: &mut RequestCtx, resp: &mut Response<RespBody>) {
    for f in chain.filters[..ran].iter().rev() {
        f.on_response(cx, resp);
    }
}

pub use crate::live::build;
