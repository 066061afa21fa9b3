//! Who may hold the API's connections. All of them are capped (`--max-connections`), and
//! a connection is *unproven* until it makes a call with valid credentials (a token, or
//! a mesh workload certificate in the TLS handshake) — and again after a call whose
//! credentials were refused (no token, a bad or expired one).
//! - Unproven connections are the ones anybody who reaches the port can open, so they are
//!   given up for room: past the cap the oldest of the source address (an IPv6 /64)
//!   holding the most is closed for the new one — a flood from many addresses closes its
//!   own before a client's single connection between its accept and its first call — and
//!   one source holds at most [`Limits::unproven_per_source`] of them, its own oldest
//!   closed first.
//! - Proven connections are never closed for someone else, but one credential (a token;
//!   a workload's namespace and service account from one address) holds at most
//!   [`Limits::proven_per_principal`] of them, its own oldest closed first: a leaked
//!   low-privilege token or workload certificate cannot take every place. When every
//!   connection held is proven, a new one takes the place of the oldest connection of the
//!   credential holding the most, if that is over a fair share (a thirty-second of the cap):
//!   several leaked credentials cannot keep everyone else out either.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How many connections may be held.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// All connections, proven or not.
    pub total: usize,
    /// Unproven connections from one source address (an IPv6 /64).
    pub unproven_per_source: usize,
    /// Proven connections of one credential.
    pub proven_per_principal: usize,
}

impl Limits {
    /// For a cap of `total` connections: a source may hold a thirty-second of it unproven
    /// (256 of the default 8,192), at least 4; a credential a quarter of it (2,048: a
    /// proxy keeps 2), at least 4.
    pub fn for_total(total: usize) -> Limits {
        Limits { total: total.max(1), unproven_per_source: (total / 32).max(4), proven_per_principal: (total / 4).max(4) }
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
    /// Proven connections closed because their credential held too many.
    pub closed_for_principal: AtomicU64,
    /// Proven connections closed for a new one, all being proven, their credential
    /// holding the most (over a fair share).
    pub closed_over_share: AtomicU64,
    /// Connections refused at accept: every one held was proven.
    pub refused: AtomicU64,
}

#[derive(Default)]
struct Held {
    next_id: u64,
    /// Every connection counted against the cap (one closed for room leaves at once).
    conns: HashMap<u64, Conn>,
    /// Unproven connections, oldest (lowest id) first.
    unproven: BTreeSet<u64>,
    by_source: HashMap<Source, BTreeSet<u64>>,
    /// The sources holding unproven connections, by how many (most last), then by their
    /// oldest (oldest last): the last is the one to close a connection of for room.
    by_count: BTreeSet<(usize, Reverse<u64>, Source)>,
    /// Proven connections by credential, in the order they were proven.
    by_principal: HashMap<Arc<str>, BTreeSet<(u64, u64)>>,
    /// The credentials holding over a fair share (at most 32 of them: a share is cap/32),
    /// so that a full house of proven connections is searched in bounded time per accept.
    over_share: std::collections::HashSet<Arc<str>>,
    /// A fair share ([`Limits::unproven_per_source`]).
    share: usize,
    next_proof: u64,
}

struct Conn {
    source: Source,
    /// The whole address (a proven workload's limit is per address: many replicas can
    /// share an IPv6 /64).
    ip: IpAddr,
    close: Arc<Notify>,
    /// The credential that proved it, and when (in proof order); none: unproven.
    proof: Option<(Arc<str>, u64)>,
}

/// A source address as limits see it: an IPv4 address, or an IPv6 address's /64 (one
/// host is commonly given a whole /64).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
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

/// One held connection. Dropping it gives its place back.
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    /// Notified when the connection is to be closed for room.
    close: Arc<Notify>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            held: Mutex::new(Held { share: limits.unproven_per_source, ..Held::default() }),
            closed_for_source: AtomicU64::new(0),
            closed_for_room: AtomicU64::new(0),
            closed_for_principal: AtomicU64::new(0),
            closed_over_share: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`, closing another to make room when needed;
    /// `None` when every connection held is proven and no credential holds over a fair
    /// share ([`Limits::unproven_per_source`]).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let source = Source::of(ip);
        let mut held = self.lock();
        let own = held.by_source.get(&source);
        if own.is_some_and(|s| s.len() >= self.limits.unproven_per_source) {
            if let Some(id) = own.and_then(|s| s.first().copied()) {
                held.close(id);
                self.closed_for_source.fetch_add(1, Ordering::Relaxed);
            }
        }
        if held.conns.len() >= self.limits.total {
            // An unproven connection first; with none, one of the credential holding the
            // most, when that is over a fair share (several leaked credentials cannot keep
            // everyone else out); with none over it, the new connection is refused.
            if let Some(id) = held.oldest_of_largest_source(source) {
                held.close(id);
                self.closed_for_room.fetch_add(1, Ordering::Relaxed);
            } else if let Some(id) = held.oldest_of_largest() {
                held.close(id);
                self.closed_over_share.fetch_add(1, Ordering::Relaxed);
            } else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let id = held.next_id;
        held.next_id += 1;
        let close = Arc::new(Notify::new());
        held.conns.insert(id, Conn { source, ip, close: close.clone(), proof: None });
        held.add_unproven(id, source);
        Some(Ticket { id, admission: self.clone(), close })
    }

    /// Connections held now: (all counted against the cap, unproven).
    pub fn held(&self) -> (usize, usize) {
        let held = self.lock();
        (held.conns.len(), held.unproven.len())
    }
}

impl Held {
    /// Tells connection `id` to close and stops counting it.
    fn close(&mut self, id: u64) {
        if let Some(c) = self.forget(id) {
            c.close.notify_one();
        }
    }

    /// The oldest connection of the credential holding the most proven connections, if
    /// it holds over a fair share.
    fn oldest_of_largest(&self) -> Option<u64> {
        let ids = self.over_share.iter().filter_map(|who| self.by_principal.get(who)).max_by_key(|ids| ids.len())?;
        ids.first().map(|&(_, id)| id)
    }

    /// Removes connection `id` from every index.
    fn forget(&mut self, id: u64) -> Option<Conn> {
        let mut c = self.conns.remove(&id)?;
        self.unprove(id, &mut c);
        Some(c)
    }

    /// Takes `c` (connection `id`) out of the proven or the unproven indexes.
    fn unprove(&mut self, id: u64, c: &mut Conn) {
        match c.proof.take() {
            Some((who, at)) => {
                if let Some(ids) = self.by_principal.get_mut(&who) {
                    ids.remove(&(at, id));
                    if ids.len() <= self.share {
                        self.over_share.remove(&who);
                    }
                    if ids.is_empty() {
                        self.by_principal.remove(&who);
                    }
                }
            }
            None => self.remove_unproven(id, c.source),
        }
    }

    /// Counts connection `id` of `source` as unproven.
    fn add_unproven(&mut self, id: u64, source: Source) {
        let before = self.source_key(source);
        self.unproven.insert(id);
        self.by_source.entry(source).or_default().insert(id);
        self.rekey(before, source);
    }

    /// Stops counting connection `id` of `source` as unproven.
    fn remove_unproven(&mut self, id: u64, source: Source) {
        let before = self.source_key(source);
        self.unproven.remove(&id);
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        self.rekey(before, source);
    }

    /// `source`'s place in [`Held::by_count`]: how many unproven it holds, its oldest.
    fn source_key(&self, source: Source) -> Option<(usize, Reverse<u64>, Source)> {
        let ids = self.by_source.get(&source)?;
        Some((ids.len(), Reverse(*ids.first()?), source))
    }

    fn rekey(&mut self, before: Option<(usize, Reverse<u64>, Source)>, source: Source) {
        if let Some(k) = before {
            self.by_count.remove(&k);
        }
        if let Some(k) = self.source_key(source) {
            self.by_count.insert(k);
        }
    }

    /// The oldest unproven connection of the source holding the most (the oldest of all
    /// when every source holds as many), counting a new connection from `new_from` in:
    /// when that source would then hold the most, its own oldest.
    fn oldest_of_largest_source(&self, new_from: Source) -> Option<u64> {
        let &(most, Reverse(oldest), _) = self.by_count.last()?;
        match self.by_source.get(&new_from) {
            Some(own) if own.len() + 1 > most => own.first().copied(),
            _ => Some(oldest),
        }
    }
}

impl Ticket {
    /// The connection made a call with `principal`'s valid credentials: it is no longer
    /// closed for others, and counts against that credential's limit (its oldest other
    /// connection is closed when it holds too many) — from this connection's address
    /// alone when `per_address` (a workload identity, which every replica of a workload
    /// shares: replicas at other addresses do not close each other's connections).
    pub fn prove(&self, principal: &str, per_address: bool) {
        let a = &self.admission;
        let mut held = a.lock();
        let held = &mut *held;
        let Some(mut c) = held.conns.remove(&self.id) else { return };
        let keyed;
        let principal = match per_address {
            true => {
                keyed = format!("{principal} from {}", c.ip);
                keyed.as_str()
            }
            false => principal,
        };
        if c.proof.as_ref().is_some_and(|(who, _)| **who == *principal) {
            held.conns.insert(self.id, c);
            return;
        }
        held.unprove(self.id, &mut c);
        let who: Arc<str> = held.by_principal.get_key_value(principal).map_or_else(|| principal.into(), |(k, _)| k.clone());
        let at = held.next_proof;
        held.next_proof += 1;
        c.proof = Some((who.clone(), at));
        held.conns.insert(self.id, c);
        let ids = held.by_principal.entry(who.clone()).or_default();
        ids.insert((at, self.id));
        let count = ids.len();
        if count > held.share {
            held.over_share.insert(who.clone());
        }
        let ids = held.by_principal.entry(who).or_default();
        if count > a.limits.proven_per_principal {
            if let Some(&(_, oldest)) = ids.first() {
                held.close(oldest);
                a.closed_for_principal.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The connection's call was refused for its credentials (none, bad, expired): it is
    /// unproven again.
    pub fn unprove(&self) {
        let mut held = self.admission.lock();
        let held = &mut *held;
        let Some(mut c) = held.conns.remove(&self.id) else { return };
        if c.proof.is_some() {
            held.unprove(self.id, &mut c);
            held.add_unproven(self.id, c.source);
        }
        held.conns.insert(self.id, c);
    }

    /// Resolves when the connection is to be closed for room.
    pub async fn closed_for_room(&self) {
        self.close.notified().await
    }

    #[cfg(test)]
    fn state(&self) -> &'static str {
        match self.admission.lock().conns.get(&self.id) {
            None => "closed",
            Some(Conn { proof: None, .. }) => "unproven",
            Some(_) => "proven",
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(total: usize, per_source: usize, per_principal: usize) -> Limits {
        Limits { total, unproven_per_source: per_source, proven_per_principal: per_principal }
    }

    #[test]
    fn past_the_cap_the_oldest_unproven_connection_makes_room() {
        let a = Admission::new(limits(3, 10, 10));
        let first = a.admit(ip("10.0.0.1")).unwrap();
        let second = a.admit(ip("10.0.0.2")).unwrap();
        second.prove("token a", false);
        let third = a.admit(ip("10.0.0.3")).unwrap();
        let fourth = a.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(a.held(), (3, 2));
        assert_eq!(first.state(), "closed");
        first.prove("token a", false);
        assert_eq!(first.state(), "closed", "closed for room before it proved itself");
        assert_eq!(a.closed_for_room.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(a.held(), (3, 2), "a connection closed for room is counted once");
        third.prove("token b", false);
        fourth.prove("token c", false);
        assert!(a.admit(ip("10.0.0.5")).is_none(), "every connection held is proven");
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(a.held(), (2, 0));
        assert!(a.admit(ip("10.0.0.5")).is_some());
        assert_eq!(a.held(), (2, 0), "the new ticket was dropped at once");
    }

    #[test]
    fn past_the_cap_the_source_holding_the_most_unproven_gives_one_up() {
        let a = Admission::new(limits(6, 10, 10));
        // A client's one connection, between its accept and its first call...
        let client = a.admit(ip("10.0.0.1")).unwrap();
        // ...and a flood from two addresses, one holding more.
        let big: Vec<Ticket> = (0..3).map(|_| a.admit(ip("192.0.2.1")).unwrap()).collect();
        let small: Vec<Ticket> = (0..2).map(|_| a.admit(ip("192.0.2.2")).unwrap()).collect();
        let _new = a.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(big[0].state(), "closed", "the oldest of the source holding the most");
        let _newer = a.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(big[1].state(), "closed", "ties go to the source whose oldest is oldest");
        assert_eq!(small.iter().map(|t| t.state()).collect::<Vec<_>>(), ["unproven", "unproven"]);
        // Every source down to one: the oldest of all goes, the client's at last.
        let _third = a.admit(ip("192.0.2.4")).unwrap();
        assert_eq!(small[0].state(), "closed");
        assert_eq!(client.state(), "unproven");
        assert_eq!(a.closed_for_room.load(Ordering::Relaxed), 3);
        let _more: Vec<Ticket> = (5..7).map(|i| a.admit(ip(&format!("192.0.2.{i}"))).unwrap()).collect();
        assert_eq!(client.state(), "closed", "with every source at one, oldest first");
    }

    #[test]
    fn past_the_cap_a_source_that_would_hold_the_most_gives_up_its_own() {
        let a = Admission::new(limits(4, 10, 10));
        let others: Vec<Ticket> = ["10.0.0.1", "10.0.0.2"].iter().map(|s| a.admit(ip(s)).unwrap()).collect();
        let flood: Vec<Ticket> = (0..4).map(|_| a.admit(ip("192.0.2.1")).unwrap()).collect();
        let states: Vec<_> = flood.iter().map(|t| t.state()).collect();
        assert_eq!(states, ["closed", "closed", "unproven", "unproven"], "its own oldest");
        assert_eq!(others.iter().map(|t| t.state()).collect::<Vec<_>>(), ["unproven", "unproven"]);
        assert_eq!(a.closed_for_room.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_source_holds_a_bounded_number_unproven_and_loses_its_own_oldest() {
        let a = Admission::new(limits(100, 2, 100));
        let other = a.admit(ip("192.0.2.9")).unwrap();
        let x1 = a.admit(ip("192.0.2.1")).unwrap();
        let x2 = a.admit(ip("192.0.2.1")).unwrap();
        x2.prove("token a", false);
        let x3 = a.admit(ip("192.0.2.1")).unwrap();
        let x4 = a.admit(ip("192.0.2.1")).unwrap();
        let _x5 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.closed_for_source.load(Ordering::Relaxed), 2);
        let states: Vec<_> = [&x1, &x2, &x3, &x4, &other].iter().map(|t| t.state()).collect();
        assert_eq!(states, ["closed", "proven", "closed", "unproven", "unproven"]);
        assert_eq!(a.held(), (4, 3), "the proven one does not count against its source");
    }

    #[test]
    fn one_credential_holds_a_bounded_number_proven_and_loses_its_own_oldest() {
        let a = Admission::new(limits(100, 100, 2));
        let admin = a.admit(ip("10.0.0.1")).unwrap();
        admin.prove("token admin", false);
        let r: Vec<Ticket> = (0..4).map(|i| a.admit(ip(&format!("10.0.1.{i}"))).unwrap()).collect();
        for t in &r {
            t.prove("token leaked", false);
        }
        let states: Vec<_> = r.iter().map(|t| t.state()).collect();
        assert_eq!(states, ["closed", "closed", "proven", "proven"]);
        assert_eq!(a.closed_for_principal.load(Ordering::Relaxed), 2);
        assert_eq!(admin.state(), "proven", "another credential's connection is kept");
        // Proving again with the same credential changes nothing; with another moves it.
        r[2].prove("token leaked", false);
        r[3].prove("token admin", false);
        assert_eq!((r[2].state(), r[3].state(), admin.state()), ("proven", "proven", "proven"));
        assert_eq!(a.held(), (3, 0));
    }

    #[test]
    fn all_proven_a_new_connection_takes_a_place_of_the_largest_holder_over_its_share() {
        let a = Admission::new(limits(6, 2, 4));
        let proxy = a.admit(ip("10.0.0.1")).unwrap();
        proxy.prove("workload shop/web", true);
        let leaked: Vec<Ticket> = (0..5).map(|i| a.admit(ip(&format!("10.0.1.{i}"))).unwrap()).collect();
        for (i, t) in leaked.iter().enumerate() {
            t.prove(if i < 3 { "token one" } else { "token two" }, false);
        }
        let admin = a.admit(ip("10.0.0.9")).expect("a place over the largest holder's share");
        assert_eq!(leaked[0].state(), "closed", "token one's oldest");
        assert_eq!(a.closed_over_share.load(Ordering::Relaxed), 1);
        admin.prove("token admin", false);
        // Nobody over a share of 2 now: refused.
        assert!(a.admit(ip("10.0.0.10")).is_none());
        assert_eq!(proxy.state(), "proven");
    }

    #[test]
    fn a_workload_identity_is_limited_per_address() {
        let a = Admission::new(limits(100, 100, 2));
        let here: Vec<Ticket> = (0..3).map(|_| a.admit(ip("2001:db8::1")).unwrap()).collect();
        // (Another address in the same /64: another replica.)
        let there: Vec<Ticket> = (0..2).map(|_| a.admit(ip("2001:db8::2")).unwrap()).collect();
        for t in here.iter().chain(&there) {
            t.prove("workload shop/web", true);
        }
        let states: Vec<_> = here.iter().chain(&there).map(|t| t.state()).collect();
        assert_eq!(states, ["closed", "proven", "proven", "proven", "proven"], "replicas elsewhere keep theirs");
        assert_eq!(a.closed_for_principal.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refused_call_makes_a_proven_connection_unproven_again() {
        let a = Admission::new(limits(2, 10, 10));
        let held = a.admit(ip("10.0.0.1")).unwrap();
        held.prove("token read", false);
        held.unprove();
        assert_eq!(held.state(), "unproven");
        let _other = a.admit(ip("10.0.0.2")).unwrap();
        let _new = a.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(held.state(), "closed", "closed for room once unproven");
        held.unprove();
        held.prove("token read", false);
        assert_eq!(held.state(), "closed");
        assert_eq!(a.held(), (2, 2));
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64_and_a_mapped_ipv4_is_the_ipv4() {
        assert_eq!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_eq!(Source::of(ip("::ffff:10.1.2.3")), Source::of(ip("10.1.2.3")));
        assert_ne!(Source::of(ip("::1")), Source::of(ip("0.0.0.1")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_closed_for_room_is_told_even_when_not_yet_waiting() {
        let a = Admission::new(limits(1, 4, 4));
        let first = a.admit(ip("10.0.0.1")).unwrap();
        let _second = a.admit(ip("10.0.0.2")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.closed_for_room()).await.unwrap();
    }
}
