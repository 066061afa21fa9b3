//! ZooKeeper as a discovery source (`--zookeeper`): services registered in ZooKeeper
//! (Curator's `<root>/NAME/ID` and Dubbo's `/dubbo/<interface>/providers/<URL>`, see
//! [`layouts`]) become registered endpoints, labelled `weft.io/source: zookeeper`.
//!
//! One session at a time with two persistent recursive watches (on the root and on
//! `/dubbo`); any node event, and every reconnection, rescans both trees and syncs the
//! registry to what was found ([`sync`]): one revision, pushed to proxies like any
//! registration. While ZooKeeper is away nothing is removed — the last known set is
//! served, `weft_zookeeper_connected` is 0 — and a new session rescans.

pub mod layouts;
mod sync;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_api::Registration;
use zookeeper_client::{AddWatchMode, Client, EventType, PersistentWatcher, SessionState};

pub use layouts::{SOURCE, SOURCE_LABEL};

use crate::api::Server;

/// Services and endpoints taken from ZooKeeper at most; past them nodes are skipped.
pub const MAX_SERVICES: usize = 10_000;
pub const MAX_ENDPOINTS: usize = 100_000;
/// The most bytes of a node's data read as an instance.
pub const MAX_DATA: usize = 64 << 10;
/// Dubbo's registry root.
const DUBBO: &str = "/dubbo";
/// Events arriving this close together are one rescan.
const SETTLE: Duration = Duration::from_millis(100);
/// A session that lasted this long resets the reconnection back-off.
const STEADY_SESSION: Duration = Duration::from_secs(30);

pub struct Options {
    /// The connect string, `host:port[,host:port…]`.
    pub servers: String,
    /// Curator's service-discovery root (`--zookeeper-root`).
    pub root: String,
}

/// What `/metrics` shows of ZooKeeper.
#[derive(Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub skipped: AtomicU64,
    pub endpoints: AtomicU64,
    pub over_bounds: AtomicU64,
    /// Scans of both trees synced to the registry.
    pub scans: AtomicU64,
}

impl Stats {
    pub fn metrics(&self) -> String {
        format!(
            "# HELP weft_zookeeper_connected 1 while a ZooKeeper session is up.\n# TYPE weft_zookeeper_connected gauge\nweft_zookeeper_connected {}\n\
             # HELP weft_zookeeper_nodes_skipped_total ZooKeeper nodes skipped (each once): malformed, refused by weft's rules, or in conflict with a weft register.\n# TYPE weft_zookeeper_nodes_skipped_total counter\nweft_zookeeper_nodes_skipped_total {}\n\
             # HELP weft_zookeeper_endpoints Endpoints found in ZooKeeper's last scan.\n# TYPE weft_zookeeper_endpoints gauge\nweft_zookeeper_endpoints {}\n\
             # HELP weft_zookeeper_nodes_over_bounds Nodes past the bounds (services, endpoints) at the last scan, not read.\n# TYPE weft_zookeeper_nodes_over_bounds gauge\nweft_zookeeper_nodes_over_bounds {}\n\
             # HELP weft_zookeeper_scans_total Scans of ZooKeeper's trees synced to the registry (at each change and each reconnection).\n# TYPE weft_zookeeper_scans_total counter\nweft_zookeeper_scans_total {}\n",
            u8::from(self.connected.load(Ordering::Relaxed)),
            self.skipped.load(Ordering::Relaxed),
            self.endpoints.load(Ordering::Relaxed),
            self.over_bounds.load(Ordering::Relaxed),
            self.scans.load(Ordering::Relaxed),
        )
    }
}

/// Follows ZooKeeper forever: a session, then after it ends a new one (back-off up to 30 s).
pub async fn follow(server: Arc<Server>, opts: Options, stats: Arc<Stats>) {
    let mut backoff = Duration::from_millis(500);
    // The nodes skipped at the last scan, across sessions: each is logged and counted once,
    // not again after every reconnection.
    let mut reported = HashSet::new();
    loop {
        let (scans, began) = (stats.scans.load(Ordering::Relaxed), std::time::Instant::now());
        let ended = session(&server, &opts, &stats, &mut reported).await;
        // (After a session that scanned and lasted, the back-off starts again from its
        // least; one that flaps keeps backing off, or each would rescan both trees.)
        if stats.scans.load(Ordering::Relaxed) > scans && began.elapsed() >= STEADY_SESSION {
            backoff = Duration::from_millis(500);
        }
        if let Err(e) = ended {
            tracing::warn!("zookeeper {}: {e}; serving the last known endpoints, retrying in {backoff:?}", opts.servers);
        }
        if stats.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!("zookeeper {}: session lost; serving the last known endpoints", opts.servers);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One session: watch, scan, sync, and again at each change; returns when the session
/// ends (expired or closed) or a read fails.
async fn session(server: &Arc<Server>, opts: &Options, stats: &Stats, reported: &mut HashSet<String>) -> Result<(), String> {
    let client = Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(5))
        .connect(&opts.servers)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut roots, mut dubbo) = watch_both(&client, &opts.root).await?;
    stats.connected.store(true, Ordering::Relaxed);
    tracing::info!("zookeeper {}: connected, following {} and {DUBBO}", opts.servers, opts.root);
    loop {
        *reported = rescan(server, &client, opts, stats, std::mem::take(reported)).await?;
        let mut reconnected = false;
        // Wait for a node event (or a reconnection, after which events may be lost).
        loop {
            let ev = tokio::select! { e = roots.changed() => e, e = dubbo.changed() => e };
            match seen(&ev, stats, opts)? {
                Seen::Session => {}
                Seen::Reconnected => {
                    reconnected = true;
                    break;
                }
                Seen::Node => break,
            }
        }
        // Let a burst of events settle; a reconnection among them counts as one.
        tokio::time::sleep(SETTLE).await;
        while let Ok(ev) = tokio::time::timeout(Duration::ZERO, async {
            tokio::select! { e = roots.changed() => e, e = dubbo.changed() => e }
        })
        .await
        {
            reconnected |= seen(&ev, stats, opts)? == Seen::Reconnected;
        }
        if reconnected {
            // The watches again, before the rescan: zookeeper-client 0.11 re-registers
            // only one-shot watches when it reconnects a session (its SetWatches request
            // leaves persistent ones out), and a restarted server has none — changes after
            // the rescan would go unseen. (The new watchers are in place before the old
            // ones are dropped, so nothing is removed on the server.)
            (roots, dubbo) = watch_both(&client, &opts.root).await?;
        }
    }
}

/// What a watch event says.
#[derive(PartialEq)]
enum Seen {
    /// A node changed.
    Node,
    /// The session is connected again (events may have been lost meanwhile, and the
    /// persistent watches with them).
    Reconnected,
    /// Anything else about the session (a disconnection: `connected` is 0 until it is back).
    Session,
}

/// Reads `ev` (and notes the session's state in `stats`); Err when the session ended.
fn seen(ev: &zookeeper_client::WatchedEvent, stats: &Stats, opts: &Options) -> Result<Seen, String> {
    Ok(match (ev.event_type, ev.session_state) {
        (EventType::Session, SessionState::Disconnected) => {
            stats.connected.store(false, Ordering::Relaxed);
            tracing::warn!("zookeeper {}: disconnected; serving the last known endpoints", opts.servers);
            Seen::Session
        }
        (EventType::Session, SessionState::SyncConnected | SessionState::ConnectedReadOnly) => {
            stats.connected.store(true, Ordering::Relaxed);
            tracing::info!("zookeeper {}: reconnected", opts.servers);
            Seen::Reconnected
        }
        (EventType::Session, s) if s.is_terminated() => return Err(format!("session {s:?}")),
        (EventType::Session, _) => Seen::Session,
        _ => Seen::Node,
    })
}

/// Persistent recursive watches on `root` and on Dubbo's root.
async fn watch_both(client: &Client, root: &str) -> Result<(PersistentWatcher, PersistentWatcher), String> {
    let watch = |path: &str| {
        let path = path.to_owned();
        async move { client.watch(&path, AddWatchMode::PersistentRecursive).await.map_err(|e| format!("watch {path}: {e}")) }
    };
    Ok((watch(root).await?, watch(DUBBO).await?))
}

/// Reads both trees and syncs the registry to them; logs and counts the nodes skipped
/// that `reported` (the last scan's) does not hold, and returns this scan's.
async fn rescan(
    server: &Arc<Server>,
    client: &Client,
    opts: &Options,
    stats: &Stats,
    reported: HashSet<String>,
) -> Result<HashSet<String>, String> {
    let mut scan = Scan::default();
    scan.curator(client, &opts.root).await.map_err(|e| format!("reading {}: {e}", opts.root))?;
    scan.dubbo(client).await.map_err(|e| format!("reading {DUBBO}: {e}"))?;
    stats.endpoints.store(scan.found.len() as u64, Ordering::Relaxed);
    let over = stats.over_bounds.swap(scan.over_bounds, Ordering::Relaxed);
    if scan.over_bounds > 0 && over != scan.over_bounds {
        tracing::warn!(
            "zookeeper: {} nodes over the bounds ({MAX_SERVICES} services, {MAX_ENDPOINTS} endpoints) not read",
            scan.over_bounds
        );
    }
    let mut skipped = scan.skipped;
    skipped.extend(server.sync_zookeeper(scan.found).await);
    stats.scans.fetch_add(1, Ordering::Relaxed);
    let mut now = HashSet::with_capacity(skipped.len());
    for (what, why) in skipped {
        if !reported.contains(&what) {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("zookeeper: skipping {}: {why}", weft_config::rules::cut(&what, 200));
        }
        now.insert(what);
    }
    Ok(now)
}

/// What one scan found.
#[derive(Default)]
struct Scan {
    found: Vec<Registration>,
    services: HashSet<String>,
    /// The same services as ZooKeeper names them (a Curator name, a Dubbo interface's service).
    names: HashSet<String>,
    /// What was skipped (a node's path, with its version for data) and why.
    skipped: Vec<(String, String)>,
    /// Nodes past the bounds, not read.
    over_bounds: u64,
}

type ZkResult<T> = Result<T, zookeeper_client::Error>;

/// Children of `path`; none when it does not exist (any more).
async fn children(client: &Client, path: &str) -> ZkResult<Vec<String>> {
    match client.list_children(path).await {
        Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
        r => r,
    }
}

fn join(parent: &str, child: &str) -> String {
    format!("{}/{child}", parent.trim_end_matches('/'))
}

impl Scan {
    async fn curator(&mut self, client: &Client, root: &str) -> ZkResult<()> {
        for name in children(client, root).await? {
            let dir = join(root, &name);
            for id in children(client, &dir).await? {
                if self.full(&name) {
                    continue;
                }
                let path = join(&dir, &id);
                let (data, version) = match client.get_data(&path).await {
                    Ok((data, stat)) => (data, stat.mzxid),
                    Err(zookeeper_client::Error::NoNode) => continue,
                    Err(e) => return Err(e),
                };
                let r = match data.len() {
                    n if n > MAX_DATA => Err(format!("{n} bytes of data (at most {MAX_DATA})")),
                    _ => layouts::curator(&name, &data),
                };
                // (Its version too: a node fixed in place is new, and reported if bad again.)
                self.add(&name, format!("{path}@{version}"), r);
            }
        }
        Ok(())
    }

    async fn dubbo(&mut self, client: &Client) -> ZkResult<()> {
        for iface in children(client, DUBBO).await? {
            let dir = join(&join(DUBBO, &iface), "providers");
            for url in children(client, &dir).await? {
                if self.full(&layouts::dubbo_service(&iface)) {
                    continue;
                }
                let r = layouts::dubbo(&iface, &url);
                self.add(&layouts::dubbo_service(&iface), join(&dir, &url), r);
            }
        }
        Ok(())
    }

    /// Whether a node of service `name` (as ZooKeeper names it) is past the bounds; it
    /// is counted then, and not read.
    fn full(&mut self, name: &str) -> bool {
        let new_service = self.services.len() >= MAX_SERVICES && !self.names.contains(name);
        let full = self.found.len() + self.skipped.len() >= MAX_ENDPOINTS || new_service;
        self.over_bounds += u64::from(full);
        full
    }

    /// Keeps `r`, or notes node `what` skipped (and why).
    fn add(&mut self, name: &str, what: String, r: Result<Registration, String>) {
        match r {
            Ok(r) => {
                self.names.insert(name.to_owned());
                self.services.insert(r.service.clone());
                self.found.push(r);
            }
            Err(e) => self.skipped.push((what, e)),
        }
    }
}

impl Server {
    /// Syncs the registry to ZooKeeper's endpoints and pushes the change; returns the
    /// endpoints skipped (by registry key) and why.
    async fn sync_zookeeper(&self, found: Vec<Registration>) -> Vec<(String, String)> {
        let mut p = self.plane.lock().await;
        let mut tries = 1;
        // (Another control plane sharing the store committed first: try again.)
        let result = loop {
            match p.sync_zookeeper(found.clone()).await {
                Err(e) if e.is_conflict() && tries < crate::api::TRIES => tries += 1,
                r => break r,
            }
        };
        drop(p);
        match result {
            Ok((rev, synced)) => {
                self.published(&rev);
                synced.skipped
            }
            Err(e) => {
                tracing::warn!("zookeeper: storing endpoints: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(service: &str, i: usize) -> Result<Registration, String> {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
        layouts::curator(service, format!(r#"{{"address":"{ip}","port":80}}"#).as_bytes())
    }

    #[test]
    fn a_scan_stops_reading_at_the_bounds_and_counts_the_rest() {
        let mut scan = Scan::default();
        for i in 0..MAX_SERVICES {
            let name = format!("s{i}");
            assert!(!scan.full(&name));
            scan.add(&name, format!("/services/{name}/1"), reg(&name, i));
        }
        // A new service is past the bounds; more endpoints of a known one are not.
        assert!(scan.full("new"));
        assert!(!scan.full("s1"));
        scan.add("s1", "/services/s1/bad".into(), Err("malformed".into()));
        let mut i = MAX_SERVICES;
        while !scan.full("s2") {
            scan.add("s2", format!("/services/s2/{i}"), reg("s2", i));
            i += 1;
        }
        assert_eq!(scan.found.len() + scan.skipped.len(), MAX_ENDPOINTS);
        assert_eq!((scan.over_bounds, scan.skipped.len()), (2, 1));
    }
}
