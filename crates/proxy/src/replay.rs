//! A request body that can be sent again. It streams the client's body to the first
//! try as it arrives (nothing waits for the whole body) while keeping a copy of what
//! went through, up to [`REPLAY_LIMIT`]. When the try's connection lets go of the body
//! (sent whole, connect failure, reset, timeout), the body hands itself back through
//! a one-shot channel; the next try replays the copy and then goes on reading the
//! client. A body that outgrows the buffer, or that the client broke off, cannot be
//! replayed: it hands nothing back, and the request is not retried.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::body::BodyState;

/// Most body bytes kept for replay (Envoy's default per-request retry buffer is
/// 64 KiB as well): larger bodies stream through and are not retried.
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub struct Replaying {
    /// Every data frame read from the client so far (while it fits).
    kept: Vec<Bytes>,
    kept_len: usize,
    /// Next kept frame this try sends.
    next: usize,
    /// The client's body, until it ends.
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    trailers_sent: bool,
    /// Outgrew the buffer or broke off: cannot be sent again.
    spent: bool,
    /// Declared length, and bytes this try has sent (for the size hint).
    declared: Option<u64>,
    sent: u64,
    state: Arc<BodyState>,
    back: Option<oneshot::Sender<Replaying>>,
}

/// Waits for a try's body to come back.
pub type Returned = oneshot::Receiver<Replaying>;

impl Replaying {
    pub fn new(body: Incoming, state: Arc<BodyState>) -> Self {
        let declared = body.size_hint().exact();
        Replaying {
            kept: Vec::new(),
            kept_len: 0,
            next: 0,
            rest: Some(body),
            trailers: None,
            trailers_sent: false,
            spent: declared.is_some_and(|d| d > REPLAY_LIMIT as u64),
            declared,
            sent: 0,
            state,
            back: None,
        }
    }

    /// Arms the body for one try: it comes back through the returned receiver once
    /// the try lets go of it (if it can be sent again).
    pub fn arm(mut self) -> (Self, Returned) {
        let (tx, rx) = oneshot::channel();
        self.back = Some(tx);
        self.next = 0;
        self.sent = 0;
        self.trailers_sent = false;
        (self, rx)
    }

    fn keep(&mut self, d: &Bytes) {
        if self.spent {
            return;
        }
        self.kept_len += d.len();
        if self.kept_len > REPLAY_LIMIT {
            self.spend();
        } else {
            self.kept.push(d.clone());
            self.next = self.kept.len();
        }
    }

    fn spend(&mut self) {
        self.spent = true;
        self.kept = Vec::new();
        self.next = 0;
        self.back = None;
    }
}

impl Body for Replaying {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(d) = this.kept.get(this.next) {
            let d = d.clone();
            this.next += 1;
            this.sent += d.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        let Some(body) = this.rest.as_mut() else {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(this.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.state.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    this.sent += d.len() as u64;
                    let d = d.clone();
                    this.keep(&d);
                } else if let Some(t) = f.trailers_ref() {
                    this.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.broke(&e);
                this.spend();
                this.rest = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.rest = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.kept.len() && self.rest.is_none() && (self.trailers_sent || self.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(d) => SizeHint::with_exact(d.saturating_sub(self.sent)),
            None if self.rest.is_none() => {
                SizeHint::with_exact(self.kept[self.next.min(self.kept.len())..].iter().map(|b| b.len() as u64).sum())
            }
            None => SizeHint::default(),
        }
    }
}

impl Drop for Replaying {
    fn drop(&mut self) {
        let Some(tx) = self.back.take() else { return };
        if self.spent {
            return;
        }
        let _ = tx.send(Replaying {
            kept: std::mem::take(&mut self.kept),
            kept_len: self.kept_len,
            next: 0,
            rest: self.rest.take(),
            trailers: self.trailers.take(),
            trailers_sent: false,
            spent: false,
            declared: self.declared,
            sent: 0,
            state: self.state.clone(),
            back: None,
        });
    }
}
