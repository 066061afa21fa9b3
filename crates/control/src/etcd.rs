//! The shared store: the revision log in an etcd cluster, so that several control
//! planes serve one mesh and any of them can serve any proxy.
//!
//! Under the prefix (default `/weft/`):
//! - `revisions/<revision, 20 digits>` → the revision's record (what changed, from
//!   what to what): the log every control plane follows through an etcd watch, and
//!   the truth the store is rebuilt from;
//! - `revision` → the latest revision. Every commit is one etcd transaction that
//!   compares it with the revision the committer holds and puts the record and the new
//!   number, so two control planes can never commit the same number: the loser catches
//!   up and tries again. The transaction has two operations however many objects the
//!   revision changes (etcd allows 128 by default), so a large apply fits;
//! - `checkpoint` → N and `checkpoints/N/<part>` → every object as of revision N,
//!   written every `--etcd-checkpoint-every` revisions by the control plane that
//!   committed N (parts first, then the pointer; older checkpoints are deleted). A
//!   control plane starts from the checkpoint and the records after it;
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
    /// Revisions between checkpoints.
    pub checkpoint_every: u64,
}

/// Bytes per checkpoint part (etcd takes requests up to 1.5 MiB by default).
const PART_BYTES: usize = 512 << 10;

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
    pub async fn connect(endpoints: &[String], prefix: &str, checkpoint_every: u64) -> Result<Etcd, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(opts)).await.map_err(err)?;
        let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        let kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        Ok(Etcd { kv, leases: client.lease_client(), client, prefix, checkpoint_every: checkpoint_every.max(1) })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn revision_key(&self, rev: u64) -> String {
        self.key(&format!("revisions/{rev:020}"))
    }

    /// Objects, latest revision and live leases, all as of one etcd revision: the
    /// latest checkpoint with the records after it applied.
    pub async fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = Txn::new().and_then([
            TxnOp::get(self.key("checkpoint"), None),
            TxnOp::get(self.key("revision"), None),
            TxnOp::get(self.key("alive/"), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self.kv.txn(txn).await.map_err(err)?;
        let etcd_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut snap = Snapshot { objects: BTreeMap::new(), revision: 0, alive: HashSet::new(), etcd_revision };
        let mut checkpoint = 0u64;
        let alive_prefix = self.key("alive/");
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = op else { continue };
            for kv in get.kvs() {
                let number = || String::from_utf8_lossy(kv.value()).trim().parse().unwrap_or(0);
                match i {
                    0 => checkpoint = number(),
                    1 => snap.revision = number(),
                    _ => {
                        snap.alive.insert(String::from_utf8_lossy(kv.key())[alive_prefix.len()..].to_owned());
                    }
                }
            }
        }
        if checkpoint > 0 {
            let parts = self.key(&format!("checkpoints/{checkpoint:020}/"));
            let opts = GetOptions::new().with_prefix().with_revision(etcd_revision);
            for kv in self.kv.get(parts, Some(opts)).await.map_err(err)?.kvs() {
                let part: BTreeMap<String, Value> = serde_json::from_slice(kv.value())
                    .map_err(|e| StoreError::Corrupt(String::from_utf8_lossy(kv.key()).into_owned(), e))?;
                snap.objects.extend(part);
            }
        }
        for rev in self.records(checkpoint, Some(etcd_revision)).await? {
            for c in rev.changes {
                match c.after {
                    Some(v) => snap.objects.insert(c.key, v),
                    None => snap.objects.remove(&c.key),
                };
            }
        }
        Ok(snap)
    }

    /// Every object, as checkpoint parts of about [`PART_BYTES`] each.
    pub fn checkpoint_parts(objects: &BTreeMap<String, Value>) -> Vec<String> {
        let mut parts = Vec::new();
        let mut part = serde_json::Map::new();
        let mut size = 0;
        for (k, v) in objects {
            size += k.len() + v.to_string().len() + 8;
            part.insert(k.clone(), v.clone());
            if size >= PART_BYTES {
                parts.push(Value::Object(std::mem::take(&mut part)).to_string());
                size = 0;
            }
        }
        parts.push(Value::Object(part).to_string());
        parts
    }

    /// Writes the objects as of revision `rev` (from [`Etcd::checkpoint_parts`]) as a
    /// checkpoint, then points at it and deletes the older ones.
    pub async fn checkpoint(&mut self, rev: u64, parts: Vec<String>) -> Result<(), StoreError> {
        let dir = self.key(&format!("checkpoints/{rev:020}/"));
        for (n, p) in parts.into_iter().enumerate() {
            self.kv.put(format!("{dir}{n:06}"), p, None).await.map_err(err)?;
        }
        // Only forwards: a slower control plane's older checkpoint never replaces a newer one.
        let pointer = self.key("checkpoint");
        let padded = format!("{rev:020}");
        let newer = Txn::new()
            .when([Compare::version(pointer.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(pointer.clone(), padded.clone(), None)])
            .or_else([TxnOp::txn(
                Txn::new()
                    .when([Compare::value(pointer.clone(), CompareOp::Less, padded.clone())])
                    .and_then([TxnOp::put(pointer, padded, None)]),
            )]);
        self.kv.txn(newer).await.map_err(err)?;
        // The older checkpoints: every key from `checkpoints/` up to this one's.
        let older = etcd_client::DeleteOptions::new().with_range(dir);
        self.kv.delete(self.key("checkpoints/"), Some(older)).await.map_err(err)?;
        Ok(())
    }

    /// The records of every revision after `rev`, oldest first.
    pub async fn revisions_after(&mut self, rev: u64) -> Result<Vec<Revision>, StoreError> {
        self.records(rev, None).await
    }

    /// The records after `rev`, as of etcd revision `at` (latest when `None`).
    async fn records(&mut self, rev: u64, at: Option<i64>) -> Result<Vec<Revision>, StoreError> {
        let mut opts = GetOptions::new().with_range(prefix_end(&self.key("revisions/")));
        if let Some(at) = at {
            opts = opts.with_revision(at);
        }
        let resp = self.kv.get(self.revision_key(rev + 1), Some(opts)).await.map_err(err)?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt(String::from_utf8_lossy(kv.key()).into_owned(), e))
            })
            .collect()
    }

    /// Commits `revs` (consecutive) if the latest revision in etcd is still `current`;
    /// else [`StoreError::Conflict`]. One transaction: the records, the counter, and
    /// each TTL registration's lease key.
    pub async fn commit(&mut self, revs: &[Revision], current: u64) -> Result<(), StoreError> {
        let Some(last) = revs.last() else { return Ok(()) };
        let counter = self.key("revision");
        let guard = if current == 0 {
            Compare::version(counter.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(counter.clone(), CompareOp::Equal, current.to_string())
        };
        let mut ops = vec![TxnOp::put(counter, last.revision.to_string(), None)];
        // Each lease key once (etcd refuses a key twice in a transaction): the last change's.
        let mut alive: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for rev in revs {
            let record = serde_json::to_string(rev).map_err(|e| StoreError::Corrupt(format!("revision {}", rev.revision), e))?;
            ops.push(TxnOp::put(self.revision_key(rev.revision), record, None));
            for c in rev.changes.iter().filter(|c| c.key.starts_with("registry/")) {
                alive.insert(c.key.clone(), c.after.as_ref().and_then(|v| v.get("ttlMs")).and_then(Value::as_u64));
            }
        }
        for (key, ttl) in alive {
            let alive = self.key(&format!("alive/{key}"));
            match ttl {
                Some(ttl_ms) => {
                    let lease = self.leases.grant(ttl_ms.div_ceil(1000) as i64, None).await.map_err(err)?;
                    ops.push(TxnOp::put(alive, "", Some(PutOptions::new().with_lease(lease.id()))));
                }
                None => ops.push(TxnOp::delete(alive, None)),
            }
        }
        let resp = self.kv.txn(Txn::new().when([guard]).and_then(ops)).await.map_err(|e| {
            let m = e.to_string();
            if m.contains("too many operations") || m.contains("too large") {
                StoreError::Etcd(format!(
                    "{m} (one revision's record is one etcd request: raise etcd's --max-request-bytes, or apply in smaller files)"
                ))
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
        // Two watches on one stream: the log and the leases (not the checkpoints).
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = w.watch(self.key("alive/"), Some(opts.clone())).await.map_err(err)?;
        stream.watch(self.key("revisions/"), Some(opts)).await.map_err(err)?;
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
