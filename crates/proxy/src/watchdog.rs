//! Client connections' idle and header timeouts on the worker's coarse clock (the
//! sweep of [`crate::idle`], every [`crate::idle::TICK`]), not on a timer per request: hyper's
//! `header_read_timeout` arms one for every request head (~1.5 k instructions a
//! request). Here a connection's stream is wrapped in [`Watched`], which stamps read
//! and write progress into the connection's [`ConnSlot`] (a relaxed load and store),
//! and each request marks itself active ([`ConnSlot::begin`]). The sweep closes:
//! - a connection whose request head has been arriving for longer than the header
//!   timeout (a head starts with the connection, and with the first byte read while no
//!   request is active; it ends when hyper hands the request to the proxy). HTTP/2
//!   connections (their preface seen on the first read) have no head timeout: frames
//!   between requests (PING, SETTINGS) are no head;
//! - a connection with no active request and no byte read or written for the idle
//!   timeout (Envoy's `idle_timeout`).
//!
//! A timeout fires between its duration and one tick later.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::idle::ticks;

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Idle,
    HeaderTimeout,
}

/// The watchdog's view of one client connection, shared by its stream, its requests
/// and the worker's sweep. Stamps are the worker's tick + 1 (0: none).
pub struct ConnSlot {
    clock: Arc<AtomicU64>,
    last: AtomicU64,
    head_from: AtomicU64,
    active: AtomicU32,
    h2: AtomicBool,
    fired: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// In ticks; 0 is off.
    idle: u64,
    header: u64,
}

impl ConnSlot {
    /// A new connection's slot, on the calling worker's clock, swept by its sweep
    /// (not swept, with both timeouts off).
    pub fn watch(idle: Option<Duration>, header: Option<Duration>) -> Arc<ConnSlot> {
        let make = |clock: Arc<AtomicU64>| {
            let now = clock.load(Relaxed) + 1;
            let header = header.map_or(0, ticks);
            Arc::new(ConnSlot {
                clock,
                last: AtomicU64::new(now),
                head_from: AtomicU64::new(if header > 0 { now } else { 0 }),
                active: AtomicU32::new(0),
                h2: AtomicBool::new(false),
                fired: AtomicU8::new(0),
                waker: Mutex::new(None),
                idle: idle.map_or(0, ticks),
                header,
            })
        };
        if idle.is_none() && header.is_none() {
            return make(Arc::default());
        }
        crate::idle::watch_conn(make)
    }

    fn stamp(&self) -> u64 {
        self.clock.load(Relaxed) + 1
    }

    /// A request head arrived whole: the request is active until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.head_from.store(0, Relaxed);
        self.active.fetch_add(1, Relaxed);
        Active(self.clone())
    }

    fn read(&self, first: bool, bytes: &[u8]) {
        let now = self.stamp();
        self.last.store(now, Relaxed);
        if first && bytes.starts_with(b"PRI ") {
            self.h2.store(true, Relaxed);
            self.head_from.store(0, Relaxed);
        } else if self.header > 0 && self.head_from.load(Relaxed) == 0 && self.active.load(Relaxed) == 0 && !self.h2.load(Relaxed) {
            self.head_from.store(now, Relaxed);
        }
    }

    /// Called by the sweep at tick `now`: the waker to wake if the connection is due.
    pub(crate) fn check(&self, now: u64) -> Option<Waker> {
        if self.fired.load(Relaxed) != 0 {
            return None;
        }
        let head = self.head_from.load(Relaxed);
        let why = if self.header > 0 && head != 0 && now >= head + self.header {
            Closed::HeaderTimeout
        } else if self.idle > 0 && self.active.load(Relaxed) == 0 && now >= self.last.load(Relaxed) + self.idle {
            Closed::Idle
        } else {
            return None;
        };
        self.fired.store(why as u8 + 1, Relaxed);
        self.waker.lock().ok()?.take()
    }

    fn fired(&self) -> Option<Closed> {
        match self.fired.load(Relaxed) {
            0 => None,
            1 => Some(Closed::Idle),
            _ => Some(Closed::HeaderTimeout),
        }
    }
}

/// A request in progress on its connection (the connection is not idle meanwhile).
pub struct Active(Arc<ConnSlot>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.last.store(self.0.stamp(), Relaxed);
        self.0.active.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A client connection's stream, stamping its progress into its slot.
    pub struct Watched<I> {
        #[pin]
        io: I,
        slot: Arc<ConnSlot>,
        first: bool,
    }
}

impl<I> Watched<I> {
    pub fn new(io: I, slot: Arc<ConnSlot>) -> Self {
        Watched { io, slot, first: true }
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if let Some(new) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
                this.slot.read(*this.first, new);
                *this.first = false;
            }
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.slot.last.store(this.slot.stamp(), Relaxed);
            }
        }
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.slot.last.store(this.slot.stamp(), Relaxed);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A request's future, active on its connection until it ends.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        active: Active,
    }
}

impl<F> Tracked<F> {
    pub fn new(inner: F, active: Active) -> Self {
        Tracked { inner, active }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A connection's future, ended (and so its socket closed) when the sweep says so.
    pub struct Guarded<F> {
        #[pin]
        inner: F,
        slot: Arc<ConnSlot>,
        seen: Option<Waker>,
    }
}

impl<F> Guarded<F> {
    pub fn new(inner: F, slot: Arc<ConnSlot>) -> Self {
        Guarded { inner, slot, seen: None }
    }
}

impl<F: Future> Future for Guarded<F> {
    /// `Err` when the watchdog closed the connection.
    type Output = Result<F::Output, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(why) = this.slot.fired() {
            return Poll::Ready(Err(why));
        }
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        // A task's waker rarely changes: the lock is taken once, not on every poll.
        if !this.seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            if let Ok(mut w) = this.slot.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            *this.seen = Some(cx.waker().clone());
            // Fired between the check above and the waker's registration.
            if let Some(why) = this.slot.fired() {
                return Poll::Ready(Err(why));
            }
        }
        Poll::Pending
    }
}
