//! The shared store: the objects and revision records in an etcd cluster, so that
//! several control planes serve one mesh and any of them can serve any proxy.
//!
//! Under the prefix (default `/weft/`):
//! - `objects/<key>` → the object's JSON, as the embedded store keeps it;
//! - `revisions/<revision, 20 digits>` → the revision's record (what changed, from
//!   what to what): the log every control plane follows through an etcd watch;
//! - `revision` → the latest revision. Every commit is one etcd transaction that
//!   compares it with the revision the committer holds, so two control planes can
//!   never commit the same number: the loser catches up and tries again;
//! - `alive/<registry key>` → put with an etcd lease of the registration's TTL.
//!   A heartbeat, at any control plane, keeps the lease alive; when it runs out etcd
//!   deletes the key and the control planes see the delete and remove the endpoint.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, LeaseClient, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{Revision, StoreError};

/// Large stores come back in one range: allow big responses.
const MAX_MESSAGE: usize = 512 << 20;

fn err(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

/// A connection to the etcd cluster and the prefix weft's keys live under.
#[derive(Clone)]
pub struct Etcd {
    kv: KvClient,
    leases: LeaseClient,
    client: Client,
    prefix: String,
}

/// The store as read from etcd at one etcd revision.
pub struct Snapshot {
    pub objects: BTreeMap<String, Value>,
    pub revision: u64,
    /// Registry keys whose lease is alive.
    pub alive: HashSet<String>,
    pub etcd_revision: i64,
}

/// What the follower hears from etcd.
pub enum Remote {
    /// Another control plane committed this revision.
    Revision(Revision),
    /// A registration's lease ran out (its `alive/` key is gone).
    Expired(String),
    /// Reconnected after etcd was away: the store as it is now.
    Snapshot(Snapshot),
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // The prefix ends in '/', so incrementing the last byte cannot overflow.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl Etcd {
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(opts)).await.map_err(err)?;
        let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Ok(Etcd { kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE), leases: client.lease_client(), client, prefix })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn revision_key(&self, rev: u64) -> String {
        self.key(&format!("revisions/{rev:020}"))
    }

    /// Objects, latest revision and live leases, all at one etcd revision.
    pub async fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = Txn::new().and_then([
            TxnOp::get(self.key("objects/"), Some(GetOptions::new().with_prefix())),
            TxnOp::get(self.key("revision"), None),
            TxnOp::get(self.key("alive/"), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self.kv.txn(txn).await.map_err(err)?;
        let etcd_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut snap = Snapshot { objects: BTreeMap::new(), revision: 0, alive: HashSet::new(), etcd_revision };
        let objects_prefix = self.key("objects/");
        let alive_prefix = self.key("alive/");
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = op else { continue };
            for kv in get.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match i {
                    0 => {
                        let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt(key.clone(), e))?;
                        snap.objects.insert(key[objects_prefix.len()..].to_owned(), value);
                    }
                    1 => snap.revision = String::from_utf8_lossy(kv.value()).parse().unwrap_or(0),
                    _ => {
                        snap.alive.insert(key[alive_prefix.len()..].to_owned());
                    }
                }
            }
        }
        Ok(snap)
    }

    /// The records of every revision after `rev`, oldest first.
    pub async fn revisions_after(&mut self, rev: u64) -> Result<Vec<Revision>, StoreError> {
        let opts = GetOptions::new().with_range(prefix_end(&self.key("revisions/")));
        let resp = self.kv.get(self.revision_key(rev + 1), Some(opts)).await.map_err(err)?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt(String::from_utf8_lossy(kv.key()).into_owned(), e))
            })
            .collect()
    }

    /// Commits `rev` if the latest revision in etcd is still `current`; else
    /// [`StoreError::Conflict`]. One transaction: the objects, the record, the counter,
    /// and each TTL registration's lease key.
    pub async fn commit(&mut self, rev: &Revision, current: u64) -> Result<(), StoreError> {
        let counter = self.key("revision");
        let guard = if current == 0 {
            Compare::version(counter.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(counter.clone(), CompareOp::Equal, current.to_string())
        };
        let record = serde_json::to_string(rev).map_err(|e| StoreError::Corrupt(format!("revision {}", rev.revision), e))?;
        let mut ops = vec![TxnOp::put(self.revision_key(rev.revision), record, None), TxnOp::put(counter, rev.revision.to_string(), None)];
        for c in &rev.changes {
            let key = self.key(&format!("objects/{}", c.key));
            match &c.after {
                Some(v) => ops.push(TxnOp::put(key, v.to_string(), None)),
                None => ops.push(TxnOp::delete(key, None)),
            }
            if c.key.starts_with("registry/") {
                let alive = self.key(&format!("alive/{}", c.key));
                match c.after.as_ref().and_then(|v| v.get("ttlMs")).and_then(Value::as_u64) {
                    Some(ttl_ms) => {
                        let lease = self.leases.grant(ttl_ms.div_ceil(1000) as i64, None).await.map_err(err)?;
                        ops.push(TxnOp::put(alive, "", Some(PutOptions::new().with_lease(lease.id()))));
                    }
                    None => ops.push(TxnOp::delete(alive, None)),
                }
            }
        }
        let resp = self.kv.txn(Txn::new().when([guard]).and_then(ops)).await.map_err(|e| {
            let m = e.to_string();
            if m.contains("too many operations") || m.contains("too large") {
                StoreError::Etcd(format!("{m} (one revision is one etcd transaction: raise etcd's --max-txn-ops / --max-request-bytes, or apply in smaller files)"))
            } else {
                StoreError::Etcd(m)
            }
        })?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// Keeps a TTL registration's lease alive; false when it has none (any more).
    pub async fn keep_alive(&mut self, key: &str) -> Result<bool, StoreError> {
        let resp = self.kv.get(self.key(&format!("alive/{key}")), None).await.map_err(err)?;
        let Some(lease) = resp.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0) else { return Ok(false) };
        let (mut keeper, mut stream) = self.leases.keep_alive(lease).await.map_err(err)?;
        keeper.keep_alive().await.map_err(err)?;
        let answer = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        Ok(matches!(answer, Ok(Ok(Some(r))) if r.ttl() > 0))
    }

    /// Whether a registration's lease key is still there.
    pub async fn alive(&mut self, key: &str) -> Result<bool, StoreError> {
        let resp = self.kv.get(self.key(&format!("alive/{key}")), None).await.map_err(err)?;
        Ok(!resp.kvs().is_empty())
    }

    /// Follows etcd from `from` (a snapshot's etcd revision) forever: revisions other
    /// control planes commit and leases that run out go to `tx`; when etcd goes away,
    /// reconnects with back-off and sends a fresh snapshot.
    pub async fn follow(mut self, from: i64, tx: mpsc::Sender<Remote>) {
        let mut start = from + 1;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.watch(start, &tx).await {
                Ok(()) => return, // the receiver is gone: the control plane is stopping
                Err(e) => tracing::warn!("etcd watch: {e}; reconnecting"),
            }
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match self.load().await {
                    Ok(snap) => {
                        start = snap.etcd_revision + 1;
                        backoff = Duration::from_millis(100);
                        if tx.send(Remote::Snapshot(snap)).await.is_err() {
                            return;
                        }
                        break;
                    }
                    Err(e) => tracing::warn!("etcd: {e}"),
                }
            }
        }
    }

    /// One watch stream over `revisions/` and `alive/` from etcd revision `start`; returns
    /// `Err` when it breaks, `Ok` when `tx` is closed.
    async fn watch(&mut self, start: i64, tx: &mpsc::Sender<Remote>) -> Result<(), StoreError> {
        let mut w = self.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let opts = WatchOptions::new().with_range(prefix_end(&self.prefix)).with_start_revision(start);
        let mut stream = w.watch(self.key("alive/"), Some(opts)).await.map_err(err)?;
        // (`alive/` < `objects/` < `revision` < `revisions/`: one range from `alive/` to the prefix's end.)
        let revisions = self.key("revisions/");
        let alive = self.key("alive/");
        loop {
            let Some(resp) = stream.message().await.map_err(err)? else {
                return Err(StoreError::Etcd("watch stream ended".into()));
            };
            if resp.canceled() {
                return Err(StoreError::Etcd(format!("watch cancelled: {}", resp.cancel_reason())));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let msg = match ev.event_type() {
                    EventType::Put if key.starts_with(&revisions) => match serde_json::from_slice(kv.value()) {
                        Ok(rev) => Remote::Revision(rev),
                        Err(e) => {
                            tracing::error!("etcd: corrupt record {key}: {e}");
                            continue;
                        }
                    },
                    EventType::Delete if key.starts_with(&alive) => Remote::Expired(key[alive.len()..].to_owned()),
                    _ => continue,
                };
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
