//! Who may hold the API's connections. All of them are capped (`--max-connections`), and
//! a connection is *unproven* until it makes a call with valid credentials (a token, or
//! a mesh workload certificate in the TLS handshake). Unproven connections are the ones
//! anybody who reaches the port can open, so they are the ones given up for room: past
//! the cap the oldest unproven connection is closed for the new one, and one source
//! address (an IPv6 /64) holds at most [`Limits::unproven_per_source`] of them, its own
//! oldest closed first. A proven connection — a proxy's long poll, the CLI's call — is
//! never closed for room, so idle TLS connections from anywhere cannot lock the mesh out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How many connections may be held.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// All connections, proven or not.
    pub total: usize,
    /// Unproven connections from one source address (an IPv6 /64).
    pub unproven_per_source: usize,
}

impl Limits {
    /// For a cap of `total` connections: a source may hold a thirty-second of it unproven
    /// (256 of the default 8,192), at least 4.
    pub fn for_total(total: usize) -> Limits {
        Limits { total: total.max(1), unproven_per_source: (total / 32).max(4) }
    }
}

/// The connections held, and counts of those closed or refused for room.
pub struct Admission {
    limits: Limits,
    held: Mutex<Held>,
    /// Unproven connections closed because their source held too many.
    pub closed_for_source: AtomicU64,
    /// Unproven connections closed because all connections were taken.
    pub closed_for_room: AtomicU64,
    /// Connections refused at accept: every one held was proven.
    pub refused: AtomicU64,
}

#[derive(Default)]
struct Held {
    next_id: u64,
    /// Connections counted against the cap (closed-for-room ones are not, from the moment
    /// they are told to close).
    open: usize,
    /// Unproven connections, oldest (lowest id) first.
    unproven: BTreeMap<u64, (Source, Arc<Notify>)>,
    by_source: HashMap<Source, BTreeSet<u64>>,
}

/// A source address as limits see it: an IPv4 address, or an IPv6 address's /64 (one
/// host is commonly given a whole /64).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u32::from(v4) as u128),
                None => Source((u128::from(v6) >> 64 << 64) | (1 << 32)),
            },
        }
    }
}

const UNPROVEN: u8 = 0;
const PROVEN: u8 = 1;
const CLOSED: u8 = 2;

/// One held connection. Dropping it gives its place back.
pub struct Ticket {
    id: u64,
    source: Source,
    admission: Arc<Admission>,
    /// Notified when the connection is to be closed for room.
    close: Arc<Notify>,
    /// UNPROVEN, PROVEN or CLOSED; changed only under `held`'s lock.
    state: AtomicU8,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            held: Mutex::default(),
            closed_for_source: AtomicU64::new(0),
            closed_for_room: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `ip`, closing an unproven one to make room when
    /// needed; `None` when every connection held is proven.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Ticket>> {
        let source = Source::of(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let own = held.by_source.get(&source).map_or(0, |s| s.len());
        if own >= self.limits.unproven_per_source {
            let oldest = held.by_source.get(&source).and_then(|s| s.first().copied());
            if let Some(id) = oldest {
                held.close(id);
                self.closed_for_source.fetch_add(1, Ordering::Relaxed);
            }
        }
        if held.open >= self.limits.total {
            let Some(id) = held.unproven.keys().next().copied() else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            held.close(id);
            self.closed_for_room.fetch_add(1, Ordering::Relaxed);
        }
        let id = held.next_id;
        held.next_id += 1;
        held.open += 1;
        let close = Arc::new(Notify::new());
        held.unproven.insert(id, (source, close.clone()));
        held.by_source.entry(source).or_default().insert(id);
        Some(Arc::new(Ticket { id, source, admission: self.clone(), close, state: AtomicU8::new(UNPROVEN) }))
    }

    /// Connections held now: (all counted against the cap, unproven).
    pub fn held(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        (held.open, held.unproven.len())
    }
}

impl Held {
    /// Tells unproven connection `id` to close and stops counting it.
    fn close(&mut self, id: u64) {
        if let Some((source, close)) = self.unproven.remove(&id) {
            self.forget_source(source, id);
            self.open -= 1;
            close.notify_one();
        }
    }

    fn forget_source(&mut self, source: Source, id: u64) {
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
    }
}

impl Ticket {
    /// The connection made a call with valid credentials: it is no longer closed for room.
    pub fn prove(&self) {
        if self.state.load(Ordering::Relaxed) != UNPROVEN {
            return;
        }
        let mut held = self.admission.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.unproven.remove(&self.id).is_some() {
            held.forget_source(self.source, self.id);
            self.state.store(PROVEN, Ordering::Relaxed);
        } else {
            self.state.store(CLOSED, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection is to be closed for room.
    pub async fn closed_for_room(&self) {
        self.close.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.admission.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.unproven.remove(&self.id).is_some() {
            held.forget_source(self.source, self.id);
            held.open -= 1;
        } else if self.state.load(Ordering::Relaxed) == PROVEN {
            held.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn past_the_cap_the_oldest_unproven_connection_makes_room() {
        let a = Admission::new(Limits { total: 3, unproven_per_source: 10 });
        let first = a.admit(ip("10.0.0.1")).unwrap();
        let second = a.admit(ip("10.0.0.2")).unwrap();
        second.prove();
        let third = a.admit(ip("10.0.0.3")).unwrap();
        let fourth = a.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(a.held(), (3, 2));
        assert_eq!(first.state.load(Ordering::Relaxed), UNPROVEN);
        first.prove();
        assert_eq!(first.state.load(Ordering::Relaxed), CLOSED, "closed for room before it proved itself");
        assert_eq!(a.closed_for_room.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(a.held(), (3, 2), "a connection closed for room is counted once");
        third.prove();
        fourth.prove();
        assert!(a.admit(ip("10.0.0.5")).is_none(), "every connection held is proven");
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(a.held(), (2, 0));
        assert!(a.admit(ip("10.0.0.5")).is_some());
        assert_eq!(a.held(), (2, 0), "the new ticket was dropped at once");
    }

    #[test]
    fn one_source_holds_a_bounded_number_unproven_and_loses_its_own_oldest() {
        let a = Admission::new(Limits { total: 100, unproven_per_source: 2 });
        let other = a.admit(ip("192.0.2.9")).unwrap();
        let x1 = a.admit(ip("192.0.2.1")).unwrap();
        let x2 = a.admit(ip("192.0.2.1")).unwrap();
        x2.prove();
        let x3 = a.admit(ip("192.0.2.1")).unwrap();
        let x4 = a.admit(ip("192.0.2.1")).unwrap();
        let _x5 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.closed_for_source.load(Ordering::Relaxed), 2);
        for (t, want) in [(&x1, CLOSED), (&x3, CLOSED), (&x4, PROVEN), (&other, PROVEN)] {
            t.prove();
            assert_eq!(t.state.load(Ordering::Relaxed), want);
        }
        assert_eq!(a.held(), (4, 1), "the proven ones do not count against their source");
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64_and_a_mapped_ipv4_is_the_ipv4() {
        assert_eq!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_eq!(Source::of(ip("::ffff:10.1.2.3")), Source::of(ip("10.1.2.3")));
        assert_ne!(Source::of(ip("::1")), Source::of(ip("0.0.0.1")));
    }

    #[tokio::test]
    async fn a_connection_closed_for_room_is_told_even_when_not_yet_waiting() {
        let a = Admission::new(Limits { total: 1, unproven_per_source: 4 });
        let first = a.admit(ip("10.0.0.1")).unwrap();
        let _second = a.admit(ip("10.0.0.2")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.closed_for_room()).await.unwrap();
    }
}
