//! Body types on both sides of the proxy. Bodies stream frame by frame; nothing is
//! buffered whole. The response body carries the request's [`Finish`], which records
//! metrics and releases the endpoint when the last byte has gone (or the client left).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::finish::Finish;
use crate::pool::Returner;

/// What the proxy learns about a client's request body while streaming it.
#[derive(Default)]
pub struct BodyState {
    pub bytes: AtomicU64,
    /// The client's body broke off (the client went away mid-request, or sent a
    /// malformed body).
    pub aborted: AtomicBool,
    /// It broke off because it was malformed (an invalid chunk size): a 400, flag DPE.
    pub malformed: AtomicBool,
}

impl BodyState {
    /// Records the client's body failing with `e`.
    pub fn broke(&self, e: &hyper::Error) {
        if is_malformed(e) {
            self.malformed.store(true, Ordering::Relaxed);
        }
        self.aborted.store(true, Ordering::Relaxed);
    }

    /// The request failed because of the client's body: the client's fault, not the
    /// endpoint's (no outlier detection, no retry).
    pub fn client_fault(&self) -> Option<crate::error::UpstreamError> {
        self.aborted
            .load(Ordering::Relaxed)
            .then(|| crate::error::UpstreamError::Client { malformed: self.malformed.load(Ordering::Relaxed) })
    }
}

/// Whether a body error is a framing error (hyper's decoder reports an invalid chunk
/// size and the like as `InvalidInput`/`InvalidData`; a body cut short is
/// `UnexpectedEof`, an HTTP/2 reset an `h2` error).
pub fn is_malformed(e: &hyper::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData);
        }
        src = s.source();
    }
    e.is_parse()
}

/// The body sent upstream.
pub enum ReqBody {
    /// The client's body, streamed through and counted; optionally also fed to a
    /// mirror (see [`crate::mirror`]).
    Stream {
        body: Incoming,
        state: Arc<BodyState>,
        tee: Option<crate::mirror::Tee>,
    },
    /// A body received through a channel (the mirror's copy).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// The client's body under a retry policy: kept for sending again.
    Replay(crate::replay::Replaying),
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Stream { body, state, tee } => {
                let r = Pin::new(body).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            state.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                            if let Some(t) = tee {
                                t.feed(d);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        state.broke(e);
                        *tee = None;
                    }
                    Poll::Ready(None) => *tee = None,
                    Poll::Pending => {}
                }
                r
            }
            ReqBody::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ReqBody::Replay(r) => Pin::new(r).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream { body, .. } => body.is_end_stream(),
            ReqBody::Channel(_) => false,
            ReqBody::Replay(r) => r.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream { body, .. } => body.size_hint(),
            ReqBody::Channel(_) => SizeHint::default(),
            ReqBody::Replay(r) => r.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent to the client.
pub struct RespBody {
    inner: Inner,
    finish: Option<Finish>,
    /// Returns the upstream HTTP/1.1 connection to its pool once the body is read.
    returner: Option<Returner>,
    /// The stream idle timeout, and its timer (made only once the upstream makes the
    /// body wait; re-armed after each frame that follows a wait).
    idle_after: Option<std::time::Duration>,
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

enum Inner {
    Upstream(Incoming),
    Raw(crate::h1client::RawBody),
    Full(Option<Bytes>),
    /// A body a response filter transformed (compressed, copied into the cache): the
    /// original body inside, boxed only when such a filter is configured.
    Filtered(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>),
}

impl RespBody {
    pub fn full(b: impl Into<Bytes>, finish: Option<Finish>) -> Self {
        let b = b.into();
        RespBody {
            inner: Inner::Full(if b.is_empty() { None } else { Some(b) }),
            finish,
            returner: None,
            idle_after: None,
            idle_timer: None,
            moved: false,
        }
    }

    pub fn upstream(b: Incoming, finish: Option<Finish>, returner: Option<Returner>) -> Self {
        let mut r = RespBody { inner: Inner::Upstream(b), finish, returner, idle_after: None, idle_timer: None, moved: false };
        if r.is_end_stream() {
            r.done();
        }
        r
    }

    pub fn raw(b: crate::h1client::RawBody, finish: Option<Finish>) -> Self {
        let mut r = RespBody { inner: Inner::Raw(b), finish, returner: None, idle_after: None, idle_timer: None, moved: false };
        if r.is_end_stream() {
            r.done();
        }
        r
    }

    /// Hands the body to a response filter's wrapper (`f`), keeping the record on the
    /// outside, where it counts the bytes the client gets. The body inside keeps its
    /// own end-of-stream duties (returning the upstream connection, the idle timeout).
    pub fn wrap<B, F>(mut self, f: F) -> RespBody
    where
        F: FnOnce(RespBody) -> B,
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let finish = self.finish.take();
        RespBody { inner: Inner::Filtered(Box::pin(f(self))), finish, returner: None, idle_after: None, idle_timer: None, moved: false }
    }

    /// Attaches the request's record, which the body completes when its last byte has
    /// gone (at once if there is nothing left to send).
    pub fn attach(&mut self, fin: Finish) {
        if self.is_end_stream() {
            fin.complete();
        } else {
            self.finish = Some(fin);
        }
    }

    /// Cuts the body off when the upstream sends nothing for `after`.
    pub fn idle_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.idle_after = after;
        self
    }

    /// On a wait: arms (or re-arms, after progress) the idle timer; true when it fired.
    fn idled_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(after) = self.idle_after else { return false };
        match &mut self.idle_timer {
            Some(t) if self.moved => t.as_mut().reset(tokio::time::Instant::now() + after),
            Some(_) => {}
            None => self.idle_timer = Some(Box::pin(tokio::time::sleep(after))),
        }
        self.moved = false;
        self.idle_timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    fn done(&mut self) {
        if let Some(r) = self.returner.take() {
            r.release();
        }
        if let Some(f) = self.finish.take() {
            f.complete();
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            Inner::Raw(b) => b.poll_frame(cx).map_err(BoxError::from),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            Inner::Filtered(b) => b.as_mut().poll_frame(cx),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                this.moved = true;
                if let Some(fin) = this.finish.as_mut() {
                    if let Some(d) = f.data_ref() {
                        fin.response_bytes += d.len() as u64;
                    } else if let Some(t) = f.trailers_ref() {
                        fin.grpc_status_from(t);
                    }
                }
                if this.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Err(_))) => {
                // The upstream broke mid-body: the connection is not reusable.
                this.returner = None;
                if let Some(f) = this.finish.as_mut() {
                    f.upstream_reset();
                }
                this.done();
            }
            Poll::Pending if this.idled_out(cx) => {
                // The upstream went quiet mid-body: the response is cut off.
                this.returner = None;
                if let Some(f) = this.finish.as_mut() {
                    f.stream_idle();
                }
                this.done();
                this.inner = Inner::Full(None);
                return Poll::Ready(Some(Err("stream idle timeout".into())));
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Raw(b) => b.is_end(),
            Inner::Full(b) => b.is_none(),
            Inner::Filtered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Raw(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Filtered(b) => b.size_hint(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // A body with nothing left (HEAD, 204, an empty body hyper never polled)
        // ended normally; anything else was cut short: the client went away.
        if self.is_end_stream() {
            self.done();
        }
        // Otherwise `Finish` records the request as cut short when it drops.
    }
}
