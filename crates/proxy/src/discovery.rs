//! On-demand discovery (`--discovery on-demand`, a sidecar following a control plane):
//! the proxy holds the mesh's names only — every service host its Sidecar admits, a
//! few bytes each — and the routes, policies and endpoints of the services it has
//! asked for. The first request for a name it knows but has not asked for asks the
//! control plane (the follower drops its long poll and asks at once with the new set of
//! hosts) and waits, at most [`Discovery::timeout`], for that answer to be installed;
//! every later request is served locally. A name it does not know is answered 404 at
//! once (as when eager), without asking. Hosts unused for `--discovery-idle` are
//! dropped from the set (asked again on their next request).
//!
//! Nothing here runs per request but a miss: a request whose host the installed
//! config serves never looks at this.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

/// The mesh's names as requests may write them: a name (lower case) → the canonical
/// host to ask for (`reviews` → `reviews.default.svc.cluster.local` for a proxy of
/// `default`; `*.example.com` for `api.example.com`).
#[derive(Default)]
pub struct Names {
    exact: HashMap<String, Arc<str>>,
    /// (suffix with its dot, canonical `*.suffix`), longest first.
    wildcard: Vec<(String, Arc<str>)>,
    /// Canonical hosts.
    count: usize,
}

impl Names {
    /// From the control plane's list (canonical hosts), for a proxy of `namespace`.
    pub fn new(canonical: &[String], namespace: &str) -> Names {
        let mut n = Names::default();
        for host in canonical {
            let host = host.to_ascii_lowercase();
            let c: Arc<str> = Arc::from(host.as_str());
            if let Some(suffix) = host.strip_prefix('*') {
                n.wildcard.push((suffix.to_owned(), c));
                continue;
            }
            for alt in weft_config::names::alternates(&host, namespace) {
                n.exact.entry(alt).or_insert_with(|| c.clone());
            }
            n.exact.insert(host, c);
        }
        n.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        n.count = canonical.len();
        n
    }

    /// The canonical host a request's `host` (lower case, no port) names, if any.
    pub fn lookup(&self, host: &str) -> Option<Arc<str>> {
        if let Some(c) = self.exact.get(host) {
            return Some(c.clone());
        }
        self.wildcard.iter().find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str())).map(|(_, c)| c.clone())
    }

    /// How many hosts (canonical; not their alternate names).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What waiting for a host came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Discovered {
    /// The answer that asked for it is installed (routing decides now).
    Installed,
    /// No such name in the mesh (or none the Sidecar admits): 404 without asking.
    Unknown,
    /// The control plane did not answer in time: 503 (flag NC).
    TimedOut,
    /// As many hosts are asked for as a watch may carry, every one of them used or
    /// asked within the last second: 503 (flag NC) rather than dropping one a request
    /// is waiting for.
    Full,
}

/// The on-demand state shared by the request path (a miss) and the follower.
pub struct Discovery {
    names: ArcSwap<Names>,
    /// Canonical host → the tick (of the follower's clock) it was last asked or used.
    asked: Mutex<BTreeMap<String, u64>>,
    /// Bumped each time `asked` gains a host.
    generation: AtomicU64,
    /// The generation whose answer is installed.
    installed: watch::Sender<u64>,
    /// Wakes the follower: ask now.
    pub(crate) wake: Notify,
    pub timeout: Duration,
    pub idle: Duration,
    namespace: String,
}

impl Discovery {
    pub fn new(namespace: &str, timeout: Duration, idle: Duration) -> Discovery {
        Discovery {
            names: ArcSwap::from_pointee(Names::default()),
            asked: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            installed: watch::channel(0).0,
            wake: Notify::new(),
            timeout,
            idle,
            namespace: namespace.to_owned(),
        }
    }

    /// Waits until `host` (lower case, no port) is installed, asking for it if needed.
    pub async fn discover(&self, host: &str) -> Discovered {
        let Some(canonical) = self.names.load().lookup(host) else { return Discovered::Unknown };
        let wanted = {
            let Ok(mut asked) = self.asked.lock() else { return Discovered::TimedOut };
            match asked.get(&*canonical) {
                // Asked already: its answer is on the way (or installed, and routing
                // still missed it: the next generation's answer decides).
                Some(_) => self.generation.load(Ordering::Acquire),
                None => {
                    // At the most a watch may ask for, the longest unused goes (asked
                    // again when needed): a proxy calling more services should be eager.
                    let now = now_tick();
                    if asked.len() >= weft_api::watch::MAX_ON_DEMAND_HOSTS {
                        match asked.iter().min_by_key(|(_, t)| **t).map(|(h, t)| (h.clone(), *t)) {
                            Some((oldest, t)) if t + 1 < now => {
                                asked.remove(&oldest);
                            }
                            _ => return Discovered::Full,
                        }
                    }
                    asked.insert(canonical.to_string(), now);
                    let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    self.wake.notify_one();
                    g
                }
            }
        };
        let mut rx = self.installed.subscribe();
        let installed = async move { rx.wait_for(|g| *g >= wanted).await.is_ok() };
        match tokio::time::timeout(self.timeout, installed).await {
            Ok(true) => Discovered::Installed,
            _ => Discovered::TimedOut,
        }
    }

    /// Whether `host` (lower case, no port) is one of the mesh's names.
    pub fn knows(&self, host: &str) -> bool {
        self.names.load().lookup(host).is_some()
    }

    /// The follower's side: the hosts to ask for now, and their generation.
    pub fn hosts(&self) -> (Vec<String>, u64) {
        let g = self.generation.load(Ordering::Acquire);
        let hosts = self.asked.lock().map(|a| a.keys().cloned().collect()).unwrap_or_default();
        (hosts, g)
    }

    /// The answer asked with generation `g` is installed (with these names, when it had them).
    pub fn installed(&self, g: u64, names: Option<&[String]>) {
        if let Some(n) = names {
            self.names.store(Arc::new(Names::new(n, &self.namespace)));
        }
        self.installed.send_if_modified(|cur| {
            let newer = g > *cur;
            *cur = (*cur).max(g);
            newer
        });
    }

    /// Marks `hosts` as used now (the follower calls it with those that served requests).
    pub fn used<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        let now = now_tick();
        if let Ok(mut asked) = self.asked.lock() {
            for h in hosts {
                if let Some(t) = asked.get_mut(h) {
                    *t = now;
                }
            }
        }
    }

    /// Drops the hosts unused for [`Discovery::idle`]; whether any went (ask again then).
    pub fn drop_idle(&self) -> bool {
        let limit = now_tick().saturating_sub(self.idle.as_secs().max(1));
        let Ok(mut asked) = self.asked.lock() else { return false };
        let before = asked.len();
        asked.retain(|_, t| *t > limit);
        let dropped = asked.len() != before;
        if dropped {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        dropped
    }

    pub fn names_len(&self) -> usize {
        self.names.load().len()
    }
}

/// The follower's look for idle hosts: a host is used when its service received
/// requests since the last look (the proxy's own metrics: nothing is stamped per request),
/// or when its routes lead to one that did (a VirtualService's host).
#[derive(Default)]
pub struct IdleSweep {
    seen: HashMap<String, u64>,
}

impl IdleSweep {
    pub const EVERY: Duration = Duration::from_secs(30);

    /// Marks the used hosts and drops the idle ones; whether any went.
    pub fn run(&mut self, shared: &crate::state::Shared, d: &Discovery) -> bool {
        let totals = shared.metrics.outbound_totals(usize::MAX);
        let active: std::collections::HashSet<&str> =
            totals.iter().filter(|(s, t)| self.seen.get(s) != Some(&t.requests)).map(|(s, _)| s.as_str()).collect();
        if !active.is_empty() {
            let rt = shared.current.load();
            let (asked, _) = d.hosts();
            d.used(asked.iter().map(String::as_str).filter(|h| active.contains(h) || routes_to(&rt, h, &active)));
        }
        self.seen = totals.into_iter().map(|(s, t)| (s, t.requests)).collect();
        d.drop_idle()
    }
}

/// Looks for idle hosts every [`IdleSweep::EVERY`] (half the idle time when shorter);
/// wakes the follower when some went, so that it asks for the smaller set.
pub async fn drop_idle_forever(shared: &'static crate::state::Shared) {
    let Some(d) = &shared.discovery else { return };
    let every = IdleSweep::EVERY.min(d.idle / 2).max(Duration::from_millis(100));
    let mut sweep = IdleSweep::default();
    loop {
        tokio::time::sleep(every).await;
        if sweep.run(shared, d) {
            d.wake.notify_one();
        }
    }
}

/// Whether `host`'s routes send to one of `services`.
/// (The runtime's cluster specs, not the snapshot's: those are taken out into `specs`.)
fn routes_to(rt: &crate::state::Runtime, host: &str, services: &std::collections::HashSet<&str>) -> bool {
    let Some(vi) = rt.snap.vhost_index(host) else { return false };
    rt.snap.vhosts[vi].routes.iter().any(|r| match &r.action {
        weft_config::Action::Forward(wc) => wc.targets.iter().any(|t| {
            let by_port = t.cluster.by_port.iter().map(|(_, c)| *c);
            std::iter::once(t.cluster.default)
                .chain(by_port)
                .any(|c| rt.specs.get(c).is_some_and(|s| services.contains(s.service.as_str())))
        }),
        _ => false,
    })
}

/// Seconds on tokio's clock (paused in tests).
fn now_tick() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now().saturating_duration_since(start).as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let list = ["reviews.default.svc.cluster.local", "ratings.shop.svc.cluster.local", "*.example.com", "api.partner.io"];
        Names::new(&list.map(String::from), "default")
    }

    #[test]
    fn names_are_found_as_pods_write_them() {
        let n = names();
        for h in ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"] {
            assert_eq!(n.lookup(h).as_deref(), Some("reviews.default.svc.cluster.local"), "{h}");
        }
        // Another namespace's service: never by its bare name.
        assert_eq!(n.lookup("ratings"), None);
        assert_eq!(n.lookup("ratings.shop").as_deref(), Some("ratings.shop.svc.cluster.local"));
        assert_eq!(n.lookup("a.b.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(n.lookup("example.com"), None);
        assert_eq!(n.lookup("api.partner.io").as_deref(), Some("api.partner.io"));
        assert_eq!(n.lookup("nowhere"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_asks_once_and_waits_for_its_answer() {
        let d = Arc::new(Discovery::new("default", Duration::from_secs(2), Duration::from_secs(600)));
        d.installed(0, Some(&["reviews.default.svc.cluster.local".to_owned()]));
        assert_eq!(d.discover("nowhere").await, Discovered::Unknown);
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.discover("reviews").await }
        });
        d.wake.notified().await;
        let (hosts, g) = d.hosts();
        assert_eq!(hosts, ["reviews.default.svc.cluster.local"]);
        // A second request for it does not ask again.
        let second = tokio::spawn({
            let d = d.clone();
            async move { d.discover("reviews.default").await }
        });
        tokio::task::yield_now().await;
        assert_eq!(d.hosts().1, g);
        d.installed(g, None);
        assert_eq!(waiting.await.unwrap(), Discovered::Installed);
        assert_eq!(second.await.unwrap(), Discovered::Installed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_hosts_asked_for_are_bounded() {
        let max = weft_api::watch::MAX_ON_DEMAND_HOSTS;
        let list: Vec<String> = (0..max + 10).map(|i| format!("s{i}.example.com")).collect();
        // (No wait at all, so that the clock stays in one second.)
        let d = Discovery::new("default", Duration::ZERO, Duration::from_secs(600));
        d.installed(0, Some(&list));
        for h in &list {
            assert!(matches!(d.discover(h).await, Discovered::TimedOut | Discovered::Full));
        }
        let (hosts, _) = d.hosts();
        assert_eq!(hosts.len(), max);
        // All asked within the same second: the newcomers were refused, none dropped.
        assert!(!hosts.contains(&list[max + 9]) && hosts.contains(&list[0]));
        assert_eq!(d.discover(&list[max + 9]).await, Discovered::Full);
        // Seconds later the longest unused makes room.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(d.discover(&list[max + 9]).await, Discovered::TimedOut);
        assert!(d.hosts().0.contains(&list[max + 9]));
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_in_time_is_a_timeout_and_idle_hosts_go() {
        let d = Discovery::new("default", Duration::from_secs(2), Duration::from_secs(600));
        d.installed(0, Some(&["reviews.default.svc.cluster.local".to_owned()]));
        assert_eq!(d.discover("reviews").await, Discovered::TimedOut);
        tokio::time::advance(Duration::from_secs(300)).await;
        d.used(["reviews.default.svc.cluster.local"]);
        tokio::time::advance(Duration::from_secs(400)).await;
        assert!(!d.drop_idle(), "used 400 s ago: kept");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(d.drop_idle());
        assert!(d.hosts().0.is_empty());
    }
}
