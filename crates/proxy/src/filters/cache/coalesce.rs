//! Request coalescing: concurrent misses for one key make one upstream request.
//!
//! The first miss becomes the leader and holds a [`LeaderGuard`]; later misses get a
//! [`Flight`] to wait on. However the leader ends — its response stored, not storable,
//! failed, or its future dropped (client gone, timeout) — dropping the guard wakes
//! every waiter, which looks the store up again and, on a miss, goes upstream itself.
//! Waiters wait a bounded time, so a slow leader costs them that bound at most.
//!
//! The map is behind a `std::sync::Mutex` held only to insert or remove one key
//! (never across an await); only misses touch it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::key::PrimaryKey;

#[derive(Debug, Default)]
pub struct Coalescer {
    flights: Mutex<HashMap<PrimaryKey, (u64, watch::Receiver<()>), foldhash::fast::RandomState>>,
    next_id: AtomicU64,
}

/// What a miss is to do.
#[derive(Debug)]
pub enum Role {
    /// Go upstream; keep the guard until the response is stored or abandoned (hand it
    /// to [`super::FillBody`], which drops it once the entry is in).
    Leader(LeaderGuard),
    /// Wait for the leader, then look again.
    Waiter(Flight),
}

/// Held by the leader; dropping it ends the flight.
#[derive(Debug)]
pub struct LeaderGuard {
    coalescer: Arc<Coalescer>,
    key: PrimaryKey,
    id: u64,
    _done: watch::Sender<()>,
}

/// A waiter's ticket.
#[derive(Debug)]
pub struct Flight(watch::Receiver<()>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The leader is done: look the store up again.
    Done,
    /// The bound passed first: go upstream.
    TimedOut,
}

impl Coalescer {
    pub fn new() -> Arc<Coalescer> {
        Arc::new(Coalescer::default())
    }

    /// Leader if nobody is fetching `key`, else a waiter on whoever is.
    pub fn join(self: &Arc<Self>, key: &PrimaryKey) -> Role {
        let mut flights = self.lock();
        if let Some((_, rx)) = flights.get(key) {
            return Role::Waiter(Flight(rx.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(());
        flights.insert(key.clone(), (id, rx));
        Role::Leader(LeaderGuard { coalescer: self.clone(), key: key.clone(), id, _done: tx })
    }

    /// Keys being fetched now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PrimaryKey, (u64, watch::Receiver<()>), foldhash::fast::RandomState>> {
        // Nothing panics while holding it; a poisoned map is still a consistent map.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let mut flights = self.coalescer.lock();
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
        // `_done` drops after this: every waiter's `changed()` returns.
    }
}

impl Flight {
    /// Waits until the leader is done, at most `bound`.
    pub async fn wait(mut self, bound: Duration) -> WaitOutcome {
        // `changed` errs when the sender is gone, which is how the leader says "done".
        match tokio::time::timeout(bound, self.0.changed()).await {
            Ok(_) => WaitOutcome::Done,
            Err(_) => WaitOutcome::TimedOut,
        }
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
