//! Client connections' idle and header timeouts on the worker's coarse clock (the
//! sweep of [`crate::idle`], every [`crate::idle::TICK`]), not on a timer per request:
//! hyper's `header_read_timeout` arms one for every request head (~1.5 k instructions
//! a request). A connection's stream is wrapped in [`Watched`], which stamps read and
//! write progress into the connection's [`ConnSlot`] (a relaxed load and store); a
//! request marks the connection busy when hyper hands it over ([`ConnSlot::begin`]) and
//! the response's first write marks it free. No per-request wrapper, allocation or
//! reference count. The sweep fires:
//! - the header timeout, when a request head has been arriving for longer (a head
//!   starts with the connection, and with the first byte read while the connection is
//!   free; it ends when hyper hands the request over). HTTP/2 connections (their
//!   preface seen on the first read) have none: frames between requests are no head;
//! - the idle timeout, when the connection is free and no byte was read or written for
//!   that long (Envoy's `idle_timeout`).
//!
//! Fired, the stream's next read fails (the sweep wakes the task reading it), and hyper
//! ends the connection. A timeout fires between its duration and one tick later.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::idle::ticks;

/// `fired` of a connection whose HTTP ended: never fired again.
const RETIRED: u8 = 3;

/// hyper's interim answer to `Expect: 100-continue`, written alone: the request is
/// still in progress.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

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
    /// A request was handed over and its response has not started.
    busy: AtomicBool,
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
                busy: AtomicBool::new(false),
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

    /// A request head arrived whole and was handed over: busy until its response starts.
    #[inline(always)]
    pub fn begin(&self) {
        self.head_from.store(0, Relaxed);
        self.busy.store(true, Relaxed);
    }

    #[inline(always)]
    fn wrote(&self, first: &[u8], n: usize) {
        self.last.store(self.stamp(), Relaxed);
        if n != CONTINUE.len() || !first.starts_with(CONTINUE) {
            self.busy.store(false, Relaxed);
        }
    }

    /// Bytes were read: progress, and maybe the start of a request head.
    #[inline(always)]
    fn read(&self) {
        let now = self.stamp();
        self.last.store(now, Relaxed);
        if self.head_from.load(Relaxed) == 0 && !self.busy.load(Relaxed) && self.header > 0 && !self.h2.load(Relaxed) {
            self.head_from.store(now, Relaxed);
        }
    }

    /// The connection's first bytes: HTTP/2's preface means no head timeout.
    #[cold]
    fn first_read(&self, bytes: &[u8]) {
        if bytes.starts_with(b"PRI ") {
            self.h2.store(true, Relaxed);
            self.head_from.store(0, Relaxed);
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
        } else if self.idle > 0 && !self.busy.load(Relaxed) && now >= self.last.load(Relaxed) + self.idle {
            Closed::Idle
        } else {
            return None;
        };
        self.fired.store(why as u8 + 1, Relaxed);
        self.waker.lock().ok()?.take()
    }

    /// Whether (and why) the watchdog closed this connection.
    pub fn fired(&self) -> Option<Closed> {
        match self.fired.load(Relaxed) {
            1 => Some(Closed::Idle),
            2 => Some(Closed::HeaderTimeout),
            _ => None,
        }
    }

    /// The connection's HTTP ended (closed, or upgraded to a tunnel that carries the
    /// stream on): the watchdog leaves it alone from now on.
    pub fn retire(&self) {
        let _ = self.fired.compare_exchange(0, RETIRED, Relaxed, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A client connection's stream, stamping its progress into its slot.
    pub struct Watched<I> {
        #[pin]
        io: I,
        slot: Arc<ConnSlot>,
        first: bool,
        // The waker last given to the slot (replaced only when the task's changes).
        seen: Option<Waker>,
    }
}

impl<I> Watched<I> {
    pub fn new(io: I, slot: Arc<ConnSlot>) -> Self {
        Watched { io, slot, first: true, seen: None }
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.slot.fired.load(Relaxed) != 0 {
            if let Some(why) = this.slot.fired() {
                return Poll::Ready(Err(closed(why)));
            }
        }
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if *this.first {
                        *this.first = false;
                        this.slot.first_read(buf.filled().get(before..).unwrap_or_default());
                    }
                    this.slot.read();
                }
            }
            Poll::Pending => {
                // The sweep wakes this task to close the connection.
                if !this.seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    register(this.slot, this.seen, cx.waker());
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

#[cold]
fn closed(why: Closed) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{why:?}"))
}

/// Gives the slot the waker of the task reading the stream (once per task).
#[cold]
fn register(slot: &ConnSlot, seen: &mut Option<Waker>, waker: &Waker) {
    if let Ok(mut w) = slot.waker.lock() {
        *w = Some(waker.clone());
    }
    *seen = Some(waker.clone());
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.slot.wrote(buf, n);
            }
        }
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.slot.wrote(bufs.first().map_or(&[][..], |b| &b[..]), n);
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
