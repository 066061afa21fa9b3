//! The store: config resources and registered endpoints as JSON under their keys,
//! and every revision's record (what changed, from what to what, when, by which
//! client) for history and rollback. Held in memory and written through to its
//! backend: the embedded one is one redb file under `--data-dir`, every change a
//! durable transaction (redb commits with fsync), so a `kill -9` loses nothing that
//! was acknowledged; the shared one is an etcd cluster ([`crate::etcd`]).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const OBJECTS: TableDefinition<&str, &str> = TableDefinition::new("objects");
const REVISIONS: TableDefinition<u64, &str> = TableDefinition::new("revisions");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("store: corrupt record {0}: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("store: etcd: {0}")]
    Etcd(String),
    #[error("store: writing failed: {0}")]
    Write(String),
    /// Another control plane committed first; the store has caught up: try again.
    #[error("store: another control plane changed the store at the same time, try again")]
    Conflict,
}

impl StoreError {
    /// The same error again (for every change of a group that failed together).
    pub fn same(&self) -> StoreError {
        match self {
            StoreError::Etcd(m) => StoreError::Etcd(m.clone()),
            StoreError::Conflict => StoreError::Conflict,
            other => StoreError::Write(other.to_string()),
        }
    }
}

macro_rules! db {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

/// One object's change within a revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// A revision: a set of changes committed together.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    pub revision: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub client: String,
    /// What the client did, e.g. `apply`, `delete`, `rollback to 4`, `register`.
    pub action: String,
    pub changes: Vec<Change>,
}

/// The store's contents, kept in memory and written through to the backend.
pub struct Store {
    backend: Backend,
    objects: BTreeMap<String, Value>,
    revision: u64,
    /// The keys each recent revision changed (the mesh index follows them).
    recent: std::collections::VecDeque<(u64, Vec<String>)>,
    /// The same for the revisions that changed config (rarer than registrations, so
    /// this reaches much further back).
    recent_config: std::collections::VecDeque<(u64, Vec<String>)>,
    /// The revision the logs start after, and the last config revision trimmed off.
    log_from: u64,
    config_trimmed: u64,
    /// Revisions committed in memory, written by [`Store::flush`] (group commit).
    deferred: Option<Vec<Revision>>,
}

/// How many revisions' keys `recent` keeps.
const RECENT: usize = 4096;

enum Backend {
    File(Database),
    Etcd(Box<crate::etcd::Etcd>),
}

impl Store {
    /// Opens (or creates) `dir/weft.redb` and loads it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        let db = db!(Database::create(dir.join("weft.redb")))?;
        // Make sure both tables exist, so that reads of a new store find them.
        let w = db!(db.begin_write())?;
        db!(w.open_table(OBJECTS))?;
        db!(w.open_table(REVISIONS))?;
        db!(w.commit())?;
        let r = db!(db.begin_read())?;
        let mut objects = BTreeMap::new();
        for item in db!(db!(r.open_table(OBJECTS))?.iter())? {
            let (k, v) = db!(item)?;
            let value = serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt(k.value().to_owned(), e))?;
            objects.insert(k.value().to_owned(), value);
        }
        let revision = db!(db!(r.open_table(REVISIONS))?.last())?.map(|(k, _)| k.value()).unwrap_or(0);
        drop(r);
        Ok(Store {
            backend: Backend::File(db),
            objects,
            revision,
            recent: Default::default(),
            recent_config: Default::default(),
            log_from: revision,
            config_trimmed: 0,
            deferred: None,
        })
    }

    /// A store kept in etcd under `etcd`'s prefix, starting from a snapshot read from it.
    pub fn on_etcd(etcd: crate::etcd::Etcd, snap: crate::etcd::Snapshot) -> Store {
        Store {
            backend: Backend::Etcd(Box::new(etcd)),
            objects: snap.objects,
            revision: snap.revision,
            recent: Default::default(),
            recent_config: Default::default(),
            log_from: snap.revision,
            config_trimmed: 0,
            deferred: None,
        }
    }

    /// The etcd backend, when the store is shared with other control planes.
    pub fn etcd(&self) -> Option<&crate::etcd::Etcd> {
        match &self.backend {
            Backend::Etcd(e) => Some(e),
            Backend::File(_) => None,
        }
    }

    /// Replaces the contents with a snapshot loaded from etcd.
    pub fn replace(&mut self, snap: crate::etcd::Snapshot) {
        self.objects = snap.objects;
        self.revision = snap.revision;
        self.recent.clear();
        self.recent_config.clear();
        self.log_from = self.revision;
    }

    /// The keys changed after revision `rev`, when the revisions since are all known.
    pub fn changed_since(&self, rev: u64) -> Option<Vec<String>> {
        if rev == self.revision {
            return Some(Vec::new());
        }
        let first = self.recent.iter().position(|(r, _)| *r == rev + 1)?;
        Some(self.recent.iter().skip(first).flat_map(|(_, keys)| keys.iter().cloned()).collect())
    }

    /// The config keys changed after revision `rev`, when known.
    pub fn config_changed_since(&self, rev: u64) -> Option<Vec<String>> {
        // Known from where the logs start, and past the last revision trimmed off them.
        if rev < self.log_from || rev < self.config_trimmed {
            return None;
        }
        Some(self.recent_config.iter().filter(|(r, _)| *r > rev).flat_map(|(_, keys)| keys.iter().cloned()).collect())
    }

    /// Applies a revision another control plane committed (the next one only); false
    /// when it is not the next: the caller catches up instead.
    pub fn apply_remote(&mut self, rev: &Revision) -> bool {
        if rev.revision != self.revision + 1 {
            return rev.revision <= self.revision;
        }
        self.apply(rev);
        true
    }

    /// Group commit: the revisions committed from now until [`Store::flush`] are made
    /// in memory and written together — to the file with one fsync, to etcd as one
    /// transaction guarded by the revision before the first.
    pub fn defer(&mut self) {
        self.deferred = Some(Vec::new());
    }

    /// Writes the deferred revisions; if that fails they are undone in memory too (and
    /// after a conflict with another control plane, the store catches up: try again).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(revs) = self.deferred.take() else { return Ok(()) };
        let Some(first) = revs.first().map(|r| r.revision) else { return Ok(()) };
        let written = match &mut self.backend {
            Backend::File(db) => write_file(db, &revs),
            Backend::Etcd(e) => e.commit(&revs, first - 1).await,
        };
        match &written {
            Ok(()) => {
                let crossed = revs.iter().any(|r| self.checkpoint_due(r.revision));
                if crossed {
                    self.checkpoint();
                }
            }
            Err(e) => {
                for rev in revs.iter().rev() {
                    for c in rev.changes.iter().rev() {
                        match &c.before {
                            Some(v) => self.objects.insert(c.key.clone(), v.clone()),
                            None => self.objects.remove(&c.key),
                        };
                    }
                    self.revision = rev.revision - 1;
                    if self.recent.back().is_some_and(|(r, _)| *r == rev.revision) {
                        self.recent.pop_back();
                    }
                    if self.recent_config.back().is_some_and(|(r, _)| *r == rev.revision) {
                        self.recent_config.pop_back();
                    }
                }
                if matches!(e, StoreError::Conflict) {
                    self.catch_up().await?;
                }
            }
        }
        written
    }

    fn checkpoint_due(&self, rev: u64) -> bool {
        matches!(&self.backend, Backend::Etcd(e) if rev.is_multiple_of(e.checkpoint_every))
    }

    /// Writes a checkpoint of the objects as they are now (etcd), in the background.
    fn checkpoint(&self) {
        let Backend::Etcd(e) = &self.backend else { return };
        let (mut e, at, parts) = (e.clone(), self.revision, crate::etcd::Etcd::checkpoint_parts(&self.objects));
        tokio::spawn(async move {
            if let Err(err) = e.checkpoint(at, parts).await {
                tracing::warn!("etcd checkpoint at revision {at}: {err}");
            }
        });
    }

    /// Reads and applies the revisions committed elsewhere since ours.
    pub async fn catch_up(&mut self) -> Result<(), StoreError> {
        let Backend::Etcd(e) = &mut self.backend else { return Ok(()) };
        for rev in e.revisions_after(self.revision).await? {
            if rev.revision == self.revision + 1 {
                self.apply(&rev);
            }
        }
        Ok(())
    }

    fn apply(&mut self, rev: &Revision) {
        self.recent.push_back((rev.revision, rev.changes.iter().map(|c| c.key.clone()).collect()));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        let config: Vec<String> = rev.changes.iter().filter(|c| c.key.starts_with("config/")).map(|c| c.key.clone()).collect();
        if !config.is_empty() {
            self.recent_config.push_back((rev.revision, config));
            if self.recent_config.len() > RECENT {
                if let Some((r, _)) = self.recent_config.pop_front() {
                    self.config_trimmed = r;
                }
            }
        }
        for c in &rev.changes {
            match &c.after {
                Some(v) => self.objects.insert(c.key.clone(), v.clone()),
                None => self.objects.remove(&c.key),
            };
        }
        self.revision = rev.revision;
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn objects(&self) -> &BTreeMap<String, Value> {
        &self.objects
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Commits `puts` (key → new value, `None` deletes) as one revision; keys whose
    /// value does not change are left out. Returns the revision, or `None` when
    /// nothing changed.
    pub async fn commit(&mut self, client: &str, action: &str, puts: Vec<(String, Option<Value>)>) -> Result<Option<Revision>, StoreError> {
        let changes: Vec<Change> = puts
            .into_iter()
            .filter_map(|(key, after)| {
                let before = self.objects.get(&key).cloned();
                (before != after).then_some(Change { key, before, after })
            })
            .collect();
        if changes.is_empty() {
            return Ok(None);
        }
        let rev = Revision { revision: self.revision + 1, at_ms: now_ms(), client: client.to_owned(), action: action.to_owned(), changes };
        if let Some(batch) = &mut self.deferred {
            batch.push(rev.clone());
            self.apply(&rev);
            return Ok(Some(rev));
        }
        match &mut self.backend {
            Backend::File(db) => write_file(db, std::slice::from_ref(&rev))?,
            Backend::Etcd(e) => {
                if let Err(err) = e.commit(std::slice::from_ref(&rev), self.revision).await {
                    if matches!(err, StoreError::Conflict) {
                        self.catch_up().await?;
                    }
                    return Err(err);
                }
            }
        }
        self.apply(&rev);
        if self.checkpoint_due(rev.revision) {
            self.checkpoint();
        }
        Ok(Some(rev))
    }

    /// Every revision, oldest first.
    pub async fn history(&self) -> Result<Vec<Revision>, StoreError> {
        let db = match &self.backend {
            Backend::File(db) => db,
            Backend::Etcd(e) => return e.clone().revisions_after(0).await,
        };
        let r = db!(db.begin_read())?;
        let t = db!(r.open_table(REVISIONS))?;
        let mut out = Vec::new();
        for item in db!(t.iter())? {
            let (k, v) = db!(item)?;
            out.push(serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt(format!("revision {}", k.value()), e))?);
        }
        Ok(out)
    }

    /// The values under `prefix` as they were right after revision `at`: the current
    /// ones with every later change undone.
    pub async fn state_at(&self, at: u64, prefix: &str) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut state: BTreeMap<String, Value> = self
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut later = self.history().await?;
        later.retain(|r| r.revision > at);
        for r in later.iter().rev() {
            for c in r.changes.iter().rev().filter(|c| c.key.starts_with(prefix)) {
                match &c.before {
                    Some(v) => state.insert(c.key.clone(), v.clone()),
                    None => state.remove(&c.key),
                };
            }
        }
        Ok(state)
    }
}

/// Writes revisions to the file: their objects and records, one transaction.
fn write_file(db: &Database, revs: &[Revision]) -> Result<(), StoreError> {
    let w = db!(db.begin_write())?;
    {
        let mut objects = db!(w.open_table(OBJECTS))?;
        let mut records = db!(w.open_table(REVISIONS))?;
        for rev in revs {
            let record = serde_json::to_string(rev).map_err(|e| StoreError::Corrupt(format!("revision {}", rev.revision), e))?;
            for c in &rev.changes {
                match &c.after {
                    Some(v) => {
                        db!(objects.insert(c.key.as_str(), v.to_string().as_str()))?;
                    }
                    None => {
                        db!(objects.remove(c.key.as_str()))?;
                    }
                }
            }
            db!(records.insert(rev.revision, record.as_str()))?;
        }
    }
    db!(w.commit())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("weft-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn commits_survive_reopening_and_history_undoes() {
        let d = dir("reopen");
        let mut s = Store::open(&d).unwrap();
        assert_eq!(s.revision(), 0);
        let r1 = s
            .commit("cli", "apply", vec![("config/a".into(), Some(json!({"v": 1}))), ("config/b".into(), Some(json!({"v": 2})))])
            .await
            .unwrap();
        assert_eq!(r1.unwrap().revision, 1);
        assert!(
            s.commit("cli", "apply", vec![("config/a".into(), Some(json!({"v": 1})))]).await.unwrap().is_none(),
            "no change, no revision"
        );
        s.commit("cli", "apply", vec![("config/a".into(), Some(json!({"v": 3}))), ("config/b".into(), None)]).await.unwrap();
        s.commit("cli", "register", vec![("registry/x".into(), Some(json!({"p": 1})))]).await.unwrap();
        drop(s);

        let s = Store::open(&d).unwrap();
        assert_eq!(s.revision(), 3);
        assert_eq!(s.get("config/a"), Some(&json!({"v": 3})));
        assert_eq!(s.get("config/b"), None);
        let h = s.history().await.unwrap();
        assert_eq!(h.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["apply", "apply", "register"]);
        let at1 = s.state_at(1, "config/").await.unwrap();
        assert_eq!(at1.get("config/a"), Some(&json!({"v": 1})));
        assert_eq!(at1.get("config/b"), Some(&json!({"v": 2})));
        assert!(s.state_at(0, "config/").await.unwrap().is_empty());
        assert_eq!(s.state_at(3, "registry/").await.unwrap().len(), 1);

        // Group commit: revisions made in memory, written together, each its own.
        let mut s = s;
        s.defer();
        for i in 0..3 {
            s.commit("cli", "register", vec![(format!("registry/g{i}"), Some(json!({"p": i})))]).await.unwrap();
        }
        s.commit("cli", "deregister", vec![("registry/g0".into(), None)]).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.revision(), 7);
        assert_eq!(s.get("registry/g2"), Some(&json!({"p": 2})));
        assert_eq!(s.get("registry/g0"), None);
        assert_eq!(s.history().await.unwrap().len(), 7);
        let _ = std::fs::remove_dir_all(&d);
    }
}
