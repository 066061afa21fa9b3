//! The stream idle timeout's watchdog for requests waiting on a response head: a
//! coarse per-worker timer. A tokio timer per request cost ~1,200 instructions a
//! request (callgrind: the timer wheel's insert and removal behind its lock, and a
//! clock read); a request here takes a slot in its worker's table (thread-local, no
//! lock) and one task per worker sweeps the table every [`TICK`], waking the requests
//! whose time is up. A timeout fires between its duration and one tick later. The
//! worker runtimes are current-thread, so a request and its sweeper share a thread.
//! The same sweep runs the client connections' idle and header timeouts
//! ([`crate::watchdog`]); it runs while a request waits or a connection is open.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The sweeper's period, and so the timeout's resolution.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// Ticks since the sweeper started (the table's clock).
    now: u64,
    sweeping: bool,
}

/// The worker's client connections, apart from [`Table`] so that a request's bound
/// touches no more than it did before connections were watched.
#[derive(Default)]
struct Conns {
    /// The table's `now`, for the connections' stamps.
    clock: Arc<AtomicU64>,
    /// Dropped from here once only this list holds them.
    list: Vec<Arc<crate::watchdog::ConnSlot>>,
}

struct Slot {
    deadline: u64,
    waker: Option<Waker>,
    fired: bool,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
    static CONNS: RefCell<Conns> = RefCell::new(Conns::default());
}

pub(crate) fn ticks(d: Duration) -> u64 {
    d.as_nanos().div_ceil(TICK.as_nanos()) as u64
}

pin_project_lite::pin_project! {
    /// `inner`, or `None` once `after` passed without it finishing.
    pub struct Bounded<F> {
        #[pin]
        inner: F,
        after: Duration,
        slot: Option<u32>,
    }

    impl<F> PinnedDrop for Bounded<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(i) = this.project().slot.take() {
                release(i);
            }
        }
    }
}

/// Bounds `inner` by the idle timeout `after`.
pub fn bounded<F: Future>(after: Duration, inner: F) -> Bounded<F> {
    Bounded { inner, after, slot: None }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            if let Some(i) = this.slot.take() {
                release(i);
            }
            return Poll::Ready(Some(v));
        }
        let fired = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            match *this.slot {
                Some(i) => {
                    let s = &mut t.slots[i as usize];
                    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.waker = Some(cx.waker().clone());
                    }
                    s.fired
                }
                None => {
                    let deadline = t.now + ticks(*this.after) + 1;
                    let slot = Slot { deadline, waker: Some(cx.waker().clone()), fired: false };
                    let i = match t.free.pop() {
                        Some(i) => {
                            t.slots[i as usize] = slot;
                            i
                        }
                        None => {
                            t.slots.push(slot);
                            (t.slots.len() - 1) as u32
                        }
                    };
                    *this.slot = Some(i);
                    t.live += 1;
                    if !t.sweeping {
                        t.sweeping = true;
                        tokio::spawn(sweep());
                    }
                    false
                }
            }
        });
        if fired {
            if let Some(i) = this.slot.take() {
                release(i);
            }
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Registers a client connection's slot, made by `make` on this worker's clock.
pub(crate) fn watch_conn(make: impl FnOnce(Arc<AtomicU64>) -> Arc<crate::watchdog::ConnSlot>) -> Arc<crate::watchdog::ConnSlot> {
    let slot = CONNS.with(|c| {
        let mut c = c.borrow_mut();
        let slot = make(c.clock.clone());
        c.list.push(slot.clone());
        slot
    });
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if !t.sweeping {
            t.sweeping = true;
            tokio::spawn(sweep());
        }
    });
    slot
}

fn release(i: u32) {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        t.slots[i as usize].waker = None;
        t.free.push(i);
        t.live -= 1;
    });
}

/// Advances the worker's clock each tick and wakes what is due; ends when nothing waits.
async fn sweep() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let due: Vec<Waker> = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            t.now += 1;
            let now = t.now;
            let (no_conns, conns_due) = CONNS.with(|c| {
                let mut c = c.borrow_mut();
                c.clock.store(now, Ordering::Relaxed);
                c.list.retain(|c| Arc::strong_count(c) > 1);
                let due: Vec<Waker> = c.list.iter().filter_map(|c| c.check(now)).collect();
                (c.list.is_empty(), due)
            });
            if t.live == 0 && no_conns {
                t.sweeping = false;
                return Vec::new();
            }
            let mut due: Vec<Waker> = t
                .slots
                .iter_mut()
                .filter(|s| s.waker.is_some() && !s.fired && s.deadline <= now)
                .filter_map(|s| {
                    s.fired = true;
                    s.waker.take()
                })
                .collect();
            due.extend(conns_due);
            due
        });
        // Woken outside the borrow: a wake may poll at once.
        let stop = due.is_empty() && TABLE.with(|t| !t.borrow().sweeping);
        for w in due {
            w.wake();
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_its_time_and_not_before() {
        let start = tokio::time::Instant::now();
        let r = bounded(Duration::from_millis(350), std::future::pending::<()>()).await;
        assert_eq!(r, None);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(350) && took <= Duration::from_millis(350) + 2 * TICK, "{took:?}");
        // What finishes in time is passed through, and its slot is given back.
        let r = bounded(Duration::from_secs(1), tokio::time::sleep(Duration::from_millis(300))).await;
        assert_eq!(r, Some(()));
        TABLE.with(|t| assert_eq!(t.borrow().live, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn many_at_once_each_at_its_own_time() {
        let start = tokio::time::Instant::now();
        let short = bounded(Duration::from_millis(200), std::future::pending::<()>());
        let long = bounded(Duration::from_millis(900), std::future::pending::<()>());
        let dropped = bounded(Duration::from_millis(100), std::future::pending::<()>());
        let mut dropped = Box::pin(dropped);
        assert!(futures_poll(dropped.as_mut()).is_pending());
        drop(dropped);
        let (a, b) = tokio::join!(async { (short.await, start.elapsed()) }, async { (long.await, start.elapsed()) });
        assert_eq!((a.0, b.0), (None, None));
        assert!(a.1 < Duration::from_millis(400) && b.1 >= Duration::from_millis(900), "{:?} {:?}", a.1, b.1);
        TABLE.with(|t| assert_eq!(t.borrow().live, 0));
    }

    fn futures_poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        f.poll(&mut cx)
    }
}
