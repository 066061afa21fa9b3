//! Graceful shutdown of a worker's client connections: what hyper-util's
//! `GracefulShutdown` does, for a flag check per poll instead of a lock.
//!
//! hyper-util's watcher polls a `watch::Receiver::changed` future (a tokio `Notify`,
//! whose poll takes its mutex) on every poll of the connection: ~700 instructions a
//! request. Here that future is polled with a waker of its own ([`SignalWake`]),
//! which raises a flag when the shutdown is signalled; a connection's poll reads the
//! flag, and polls the signal only when it is raised (or on the first poll, or when
//! the task's waker changed: the signal must wake the new one).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::watch;

/// Signals every watched connection to finish (hyper's graceful shutdown: the
/// request in flight completes, no new one is read) and waits until they have ended.
pub struct GracefulShutdown {
    tx: watch::Sender<()>,
}

/// One connection's subscription, taken before it is served; it counts as a live
/// connection (for [`GracefulShutdown::shutdown`]) until the connection ends.
pub struct Watcher {
    rx: watch::Receiver<()>,
}

impl GracefulShutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(());
        GracefulShutdown { tx }
    }

    /// A subscription for a connection about to be served (taken here, not cloned,
    /// so that a connection watched after a shutdown began still sees it).
    pub fn watcher(&self) -> Watcher {
        Watcher { rx: self.tx.subscribe() }
    }

    /// Signals the watched connections, then waits until every one has ended.
    pub async fn shutdown(self) {
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

impl Default for GracefulShutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// The shutdown signal: done once a shutdown began; it yields the subscription, held
/// until the connection ends.
type Signal = Pin<Box<dyn Future<Output = watch::Receiver<()>> + Send>>;

impl Watcher {
    /// `conn`, shut down gracefully when the shutdown is signalled.
    pub fn watch<C: GracefulConnection>(self, conn: C) -> Graceful<C> {
        let mut rx = self.rx;
        let signal: Signal = Box::pin(async move {
            let _ = rx.changed().await;
            rx
        });
        Graceful { conn, signal: Some(signal), wake: None, guard: None }
    }
}

pin_project! {
    /// A connection under a [`GracefulShutdown`].
    pub struct Graceful<C> {
        #[pin]
        conn: C,
        // Pending until the shutdown is signalled; then `None`.
        signal: Option<Signal>,
        // The waker the signal was last polled with.
        wake: Option<Arc<SignalWake>>,
        // The subscription, held from the signal until the connection ends.
        guard: Option<watch::Receiver<()>>,
    }
}

impl<C: GracefulConnection> Future for Graceful<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if let Some(signal) = this.signal.as_mut() {
            if let Some(waker) = signal_waker_if_due(this.wake, cx.waker()) {
                if let Poll::Ready(rx) = signal.as_mut().poll(&mut Context::from_waker(&waker)) {
                    *this.guard = Some(rx);
                    *this.signal = None;
                    *this.wake = None;
                    this.conn.as_mut().graceful_shutdown();
                }
            }
        }
        this.conn.poll(cx)
    }
}

/// The waker to poll the signal with, when it must be polled: on the first poll,
/// after the signal woke its waker, or when the task's waker is another than the one
/// the signal would wake.
fn signal_waker_if_due(wake: &mut Option<Arc<SignalWake>>, task: &Waker) -> Option<Waker> {
    match wake {
        Some(w) if w.task.will_wake(task) => {
            (w.fired.load(Ordering::Acquire) && w.fired.swap(false, Ordering::AcqRel)).then(|| Waker::from(w.clone()))
        }
        _ => {
            let w = Arc::new(SignalWake { fired: AtomicBool::new(false), task: task.clone() });
            *wake = Some(w.clone());
            Some(Waker::from(w))
        }
    }
}

/// The signal's waker: raises the flag, then wakes the connection's task.
struct SignalWake {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for SignalWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use hyper_util::rt::TokioIo;

    use super::*;

    #[tokio::test]
    async fn a_shutdown_ends_an_idle_connection_and_waits_for_it() {
        let graceful = GracefulShutdown::new();
        let (client, server) = tokio::io::duplex(1024);
        let svc = hyper::service::service_fn(|_| async { Ok::<_, Infallible>(http::Response::new(String::new())) });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), svc);
        let served = tokio::spawn(graceful.watcher().watch(conn));
        tokio::task::yield_now().await;
        assert!(!served.is_finished(), "an idle connection is served until the shutdown");
        tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.expect("the shutdown waits for the connection only");
        assert!(served.is_finished());
        assert!(served.await.unwrap().is_ok());
        drop(client);
    }
}
