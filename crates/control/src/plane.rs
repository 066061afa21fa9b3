//! The control plane's state and operations, free of I/O but the store: applying,
//! listing, deleting and rolling back config resources (validated by the same compiler
//! the proxy runs, with the same messages), and the registry of endpoints with TTLs.
//! The mesh a proxy receives is the config resources plus a ServiceEntry per
//! registered service.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use weft_config::{Diagnostics, Resource};

use crate::store::{now_ms, Revision, Store, StoreError};

const CONFIG: &str = "config/";
const REGISTRY: &str = "registry/";

/// The kinds `weft get` and `weft delete` know, with their short names.
/// Every config kind the store holds, with its short names and plurals (`weft get`'s
/// help is written from it).
pub const KINDS: [(&str, &[&str]); 16] = [
    ("Sidecar", &["sidecars"]),
    ("ServiceEntry", &["se", "serviceentries"]),
    ("DestinationRule", &["dr", "destinationrules"]),
    ("VirtualService", &["vs", "virtualservices"]),
    ("RateLimit", &["rl", "ratelimits"]),
    ("HealthCheck", &["hc", "healthchecks"]),
    ("Hedging", &["hedgings"]),
    ("Compression", &["compressions"]),
    ("ResponseCache", &["rc", "responsecaches"]),
    ("PeerAuthentication", &["pa", "peerauthentications"]),
    ("AuthorizationPolicy", &["ap", "authorizationpolicies"]),
    ("RequestAuthentication", &["ra", "requestauthentications"]),
    ("ExtensionProvider", &["extensionproviders"]),
    ("WorkloadEntry", &["we", "workloadentries"]),
    ("Telemetry", &["telemetries"]),
    ("Gateway", &["gw", "gateways"]),
];

/// `kind` as the store spells it (case-insensitive, short names and plurals too).
pub fn canonical_kind(kind: &str) -> Option<&'static str> {
    KINDS.iter().find(|(k, alt)| k.eq_ignore_ascii_case(kind) || alt.iter().any(|a| a.eq_ignore_ascii_case(kind))).map(|(k, _)| *k)
}

/// An endpoint registered by `weft register` (a message of the control protocol).
pub use weft_api::Registration;

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The request was wrong: the messages say how (HTTP 400).
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlaneError {
    /// Another control plane sharing the store committed first (the store caught up): try again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, PlaneError::Store(StoreError::Conflict))
    }
}

pub struct Plane {
    store: Store,
    /// The config resources parsed, as of a revision (see [`Plane::resources`]).
    parsed: Option<(u64, BTreeMap<String, Option<Resource>>)>,
    /// When each registration with a TTL expires (unix ms); in memory only: a heartbeat
    /// costs no disk write, and after a restart every TTL starts afresh.
    expiry: HashMap<String, u64>,
}

fn config_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{CONFIG}{kind}/{}/{name}", namespace.unwrap_or("default"))
}

pub(crate) fn registry_key(service: &str, address: &str) -> String {
    format!("{REGISTRY}{service}/{address}")
}

impl Plane {
    pub fn new(store: Store) -> Plane {
        let now = now_ms();
        // (A shared store's TTLs are etcd leases.)
        let expiry = if store.etcd().is_some() { HashMap::new() } else { Self::ttls(&store, now) };
        Plane { store, expiry, parsed: None }
    }

    fn ttls(store: &Store, now: u64) -> HashMap<String, u64> {
        store
            .objects()
            .range(REGISTRY.to_owned()..)
            .take_while(|(k, _)| k.starts_with(REGISTRY))
            .filter_map(|(k, v)| Some((k.clone(), now.saturating_add(v.get("ttlMs")?.as_u64()?))))
            .collect()
    }

    pub fn revision(&self) -> u64 {
        self.store.revision()
    }

    /// Config resources (JSON) by key.
    pub(crate) fn config(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.store.objects().range(CONFIG.to_owned()..).take_while(|(k, _)| k.starts_with(CONFIG))
    }

    /// A config resource by its key without `config/` (`Kind/namespace/name`).
    pub(crate) fn config_value(&self, key: &str) -> Option<&Value> {
        self.store.get(&format!("{CONFIG}{key}"))
    }

    /// The registered endpoints of one service.
    pub fn registrations_of(&self, service: &str) -> Vec<Registration> {
        let prefix = format!("{REGISTRY}{service}/");
        self.store
            .objects()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// The keys the revisions after `rev` changed, when the store still knows.
    pub fn changed_since(&self, rev: u64) -> Option<Vec<String>> {
        self.store.changed_since(rev)
    }

    pub fn registrations(&self) -> Vec<Registration> {
        self.store
            .objects()
            .range(REGISTRY.to_owned()..)
            .take_while(|(k, _)| k.starts_with(REGISTRY))
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Validates and stores every document of `files` ((name, YAML text)) as one
    /// revision; nothing is stored if any document is invalid. What the compile warns
    /// about the documents applied comes back with the revision.
    pub async fn apply(&mut self, client: &str, files: &[(String, String)]) -> Result<Applied, PlaneError> {
        let mut new = Vec::new();
        let mut diags = Diagnostics::default();
        for (name, text) in files {
            weft_config::load_str(name, text, &mut new, &mut diags);
        }
        let mut seen = HashMap::new();
        for r in &new {
            let key = config_key(&r.kind, r.metadata.namespace.as_deref(), &r.metadata.name);
            if let Some(first) = seen.insert(key, r.source.clone()) {
                diags.errors.push(weft_config::ConfigError::new(
                    &r.source,
                    Some(&r.kind),
                    Some(&r.metadata.name),
                    "metadata.name",
                    format!("{} {} is also defined in {} (document {})", r.kind, r.metadata.name, first.file, first.doc + 1),
                ));
            }
            // (Names and namespaces, parts of keys `Kind/namespace/name`, passed the
            // loader's DNS-1123 rules.)
        }
        if !diags.is_ok() {
            return Err(PlaneError::Invalid(shown_messages(diags.errors.iter(), "errors")));
        }
        let replaced: std::collections::HashSet<&String> = seen.keys().collect();
        let mut merged: Vec<Resource> = self.resources(|k| !replaced.contains(k))?;
        // The applied documents are compiled under a file name no stored document has (a
        // NUL and the file's index), so that a warning is known for theirs whatever the
        // client named its files ("store" is the stored documents' name), and shown
        // under the client's name.
        merged.extend(new.iter().cloned().map(|mut r| {
            let i = files.iter().position(|(name, _)| *name == r.source.file).unwrap_or_default();
            r.source.file = format!("{APPLIED}{i}");
            r
        }));
        let mut warnings = self.check_files(merged, files)?;
        warnings.retain(|w| w.source.file.starts_with(APPLIED));
        warnings.iter_mut().for_each(|w| restore_file(w, files));
        let warnings = shown_messages(warnings.iter(), "warnings");
        let puts = new
            .iter()
            .map(|r| {
                let v = serde_json::to_value(r).unwrap_or(Value::Null);
                (config_key(&r.kind, r.metadata.namespace.as_deref(), &r.metadata.name), Some(v))
            })
            .collect();
        Ok(Applied { revision: self.store.commit(client, "apply", puts).await?, warnings })
    }

    /// The stored config resources whose key passes `keep`, parsed back: kept parsed
    /// between calls and brought up to date from the keys changed since (parsing
    /// 10,000 stored resources again took 4 s per apply).
    fn resources(&mut self, keep: impl Fn(&String) -> bool) -> Result<Vec<Resource>, PlaneError> {
        let rev = self.store.revision();
        let changed = self.parsed.as_ref().and_then(|(at, _)| self.store.config_changed_since(*at));
        let mut parsed = match (self.parsed.take(), changed) {
            (Some((_, mut parsed)), Some(keys)) => {
                for k in keys {
                    match self.store.get(&k) {
                        Some(v) => {
                            let r = parse_docs("store", &[v])?.pop();
                            parsed.insert(k, r);
                        }
                        None => {
                            parsed.remove(&k);
                        }
                    }
                }
                parsed
            }
            _ => {
                let keys: Vec<String> = self.config().map(|(k, _)| k.clone()).collect();
                let docs: Vec<&Value> = self.config().map(|(_, v)| v).collect();
                keys.into_iter().zip(parse_docs("store", &docs)?.into_iter().map(Some)).collect()
            }
        };
        let out = parsed.iter().filter(|(k, _)| keep(k)).filter_map(|(_, r)| r.clone()).collect();
        self.parsed = Some((rev, std::mem::take(&mut parsed)));
        Ok(out)
    }

    /// Compiles `resources` with the registry's ServiceEntries: any error rejects them;
    /// the warnings come back.
    fn check(&self, all: Vec<Resource>) -> Result<Vec<weft_config::ConfigError>, PlaneError> {
        self.check_files(all, &[])
    }

    /// [`Plane::check`], with the documents of `files` under their [`APPLIED`] names:
    /// errors name the client's files again.
    fn check_files(&self, mut all: Vec<Resource>, files: &[(String, String)]) -> Result<Vec<weft_config::ConfigError>, PlaneError> {
        let reg = self.registry_docs(&all);
        all.extend(parse_docs("registry", &reg.iter().collect::<Vec<_>>())?);
        let mut diags = Diagnostics::default();
        weft_config::compile(&all, &mut diags);
        if diags.is_ok() {
            Ok(diags.warnings)
        } else {
            diags.errors.iter_mut().for_each(|e| restore_file(e, files));
            Err(PlaneError::Invalid(shown_messages(diags.errors.iter(), "errors")))
        }
    }

    /// Config resources of `kind` (all kinds when `None`), optionally one by name.
    pub fn list(&self, kind: Option<&str>, name: Option<&str>, namespace: Option<&str>) -> Vec<Value> {
        self.config()
            .filter(|(_, v)| kind.is_none_or(|k| v["kind"] == k))
            .filter(|(_, v)| name.is_none_or(|n| v["metadata"]["name"] == n))
            .filter(|(_, v)| namespace.is_none_or(|ns| v["metadata"]["namespace"].as_str().unwrap_or("default") == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub async fn delete(&mut self, client: &str, kind: &str, name: &str, namespace: Option<&str>) -> Result<Option<Revision>, PlaneError> {
        let key = config_key(kind, namespace, name);
        if self.store.get(&key).is_none() {
            return Err(PlaneError::NotFound(format!("{kind} {name} not found")));
        }
        let rest = self.resources(|k| *k != key)?;
        self.check(rest)?;
        Ok(self.store.commit(client, &format!("delete {kind}/{name}"), vec![(key, None)]).await?)
    }

    /// Restores the config resources as they were right after `to` (a new revision).
    /// Registered endpoints are left as they are.
    pub async fn rollback(&mut self, client: &str, to: u64) -> Result<Option<Revision>, PlaneError> {
        if to > self.revision() {
            return Err(PlaneError::NotFound(format!("revision {to} does not exist (latest is {})", self.revision())));
        }
        let target = self.store.state_at(to, CONFIG).await?;
        let docs: Vec<&Value> = target.values().collect();
        self.check(parse_docs("rollback", &docs)?)?;
        let mut puts: Vec<(String, Option<Value>)> =
            self.config().filter(|(k, _)| !target.contains_key(*k)).map(|(k, _)| (k.clone(), None)).collect();
        puts.extend(target.into_iter().map(|(k, v)| (k, Some(v))));
        Ok(self.store.commit(client, &format!("rollback to {to}"), puts).await?)
    }

    pub async fn register(&mut self, client: &str, r: Registration) -> Result<Option<Revision>, PlaneError> {
        // (Hosts are case-insensitive: a service is kept as its lower-case name.)
        let r = Registration { service: r.service.to_ascii_lowercase(), ..r };
        let errors = crate::registration::check(&r);
        if !errors.is_empty() {
            return Err(PlaneError::Invalid(errors));
        }
        self.zookeeper_guard(&r.service, &r.address, Some(&r.labels))?;
        // The document the mesh will hold for the service with `r` in it, compiled
        // alone by the config's rules (e.g. the endpoints' weights add up to at most
        // 4294967295; a STATIC ServiceEntry's endpoints are IPs): what a proxy would
        // refuse is refused here, before it is stored.
        let doc = self.service_doc_with(&r);
        let mut diags = Diagnostics::default();
        weft_config::compile(&parse_docs("registration", &[&doc])?, &mut diags);
        if !diags.is_ok() {
            return Err(PlaneError::Invalid(shown_messages(diags.errors.iter(), "errors")));
        }
        let key = registry_key(&r.service, &r.address);
        let value = serde_json::to_value(&r).unwrap_or(Value::Null);
        // (Name, address and locality are all a registration brings: checked above.)
        let shared = self.store.etcd().is_some();
        match r.ttl_ms {
            Some(ttl) if !shared => self.expiry.insert(key.clone(), now_ms().saturating_add(ttl)),
            _ => self.expiry.remove(&key),
        };
        let rev = self.store.commit(client, &format!("register {} {}", r.service, r.address), vec![(key.clone(), Some(value))]).await?;
        if rev.is_none() && r.ttl_ms.is_some() && shared {
            // Registered again as it was: a heartbeat (a new lease only comes with a change).
            self.heartbeat(&r.service, &r.address).await;
        }
        Ok(rev)
    }

    /// How long `r` has before its TTL runs out (ms); none without one (or on etcd,
    /// where a lease keeps the time).
    pub fn ttl_left_ms(&self, r: &Registration) -> Option<u64> {
        let at = self.expiry.get(&registry_key(&r.service.to_ascii_lowercase(), &r.address))?;
        Some(at.saturating_sub(now_ms()))
    }

    /// Extends a registration's TTL; false when it is not registered (any more).
    pub async fn heartbeat(&mut self, service: &str, address: &str) -> bool {
        let key = registry_key(&service.to_ascii_lowercase(), address);
        if let Some(etcd) = self.store.etcd() {
            let has_ttl = self.store.get(&key).is_some_and(|v| v.get("ttlMs").is_some());
            return match has_ttl {
                true => etcd.clone().keep_alive(&key).await.unwrap_or(false),
                false => self.store.get(&key).is_some(),
            };
        }
        let Some(ttl) = self.store.get(&key).and_then(|v| v.get("ttlMs")).and_then(Value::as_u64) else {
            return self.store.get(&key).is_some();
        };
        self.expiry.insert(key, now_ms().saturating_add(ttl));
        true
    }

    pub async fn deregister(&mut self, client: &str, service: &str, address: &str) -> Result<Option<Revision>, PlaneError> {
        let key = registry_key(&service.to_ascii_lowercase(), address);
        if self.store.get(&key).is_none() {
            return Err(PlaneError::NotFound(format!("{service} {address} is not registered")));
        }
        self.zookeeper_guard(&service.to_ascii_lowercase(), address, None)?;
        self.expiry.remove(&key);
        Ok(self.store.commit(client, &format!("deregister {service} {address}"), vec![(key, None)]).await?)
    }

    /// Removes registrations whose TTL passed (one revision for all of them).
    pub async fn expire(&mut self) -> Result<Option<Revision>, PlaneError> {
        let now = now_ms();
        let due: Vec<String> = self.expiry.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        if due.is_empty() {
            return Ok(None);
        }
        for k in &due {
            self.expiry.remove(k);
        }
        Ok(self.store.commit("control-plane", "ttl expired", due.into_iter().map(|k| (k, None)).collect()).await?)
    }

    /// Removes TTL registrations among `keys` whose etcd lease is gone (shared store);
    /// `alive`, when known, is the set of keys whose lease lives, else etcd is asked.
    pub async fn expire_leases(
        &mut self,
        keys: Vec<String>,
        alive: Option<&std::collections::HashSet<String>>,
    ) -> Result<Option<Revision>, PlaneError> {
        let Some(etcd) = self.store.etcd() else { return Ok(None) };
        let mut etcd = etcd.clone();
        let mut due = Vec::new();
        for k in keys {
            if self.store.get(&k).is_none_or(|v| v.get("ttlMs").is_none()) {
                continue;
            }
            let gone = match alive {
                Some(a) => !a.contains(&k),
                None => !etcd.alive(&k).await?,
            };
            if gone {
                due.push((k, None));
            }
        }
        Ok(self.store.commit("control-plane", "ttl expired", due).await?)
    }

    /// After loading from etcd: removes the TTL registrations whose lease is not in
    /// `alive` (it ran out while no control plane was watching).
    pub async fn expire_dead_leases(&mut self, alive: &std::collections::HashSet<String>) -> Result<Option<Revision>, PlaneError> {
        let keys: Vec<String> = self
            .store
            .objects()
            .range(REGISTRY.to_owned()..)
            .take_while(|(k, _)| k.starts_with(REGISTRY))
            .map(|(k, _)| k.clone())
            .collect();
        self.expire_leases(keys, Some(alive)).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for following a shared one.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// How long a TTL registration has left (embedded store; on etcd, leases are etcd's).
    pub fn ttl_left(&self, service: &str, address: &str) -> Option<Duration> {
        self.expiry.get(&registry_key(service, address)).map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// When the next TTL runs out, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.expiry.values().min().map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// The ServiceEntries the registry adds: registered endpoints of a host that a
    /// ServiceEntry already declares join that entry; other services get one of their own.
    fn registry_docs(&self, resources: &[Resource]) -> Vec<Value> {
        let declared: std::collections::HashSet<String> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                weft_config::Spec::ServiceEntry(se) => Some(
                    se.hosts
                        .iter()
                        .flat_map(|h| {
                            // (A short host also declares its FQDN: see `mesh::declared_hosts`.)
                            let fqdn = weft_config::names::resolve(h, weft_config::names::namespace_of(r));
                            [h.to_ascii_lowercase(), fqdn]
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        self.registrations_by_service()
            .iter()
            .filter(|(s, _)| !declared.contains(*s))
            .map(|(s, regs)| crate::mesh::registration_doc(s, regs))
            .collect()
    }

    /// The ServiceEntry the mesh would hold for `r.service` with `r` registered: the
    /// stored one declaring the host with the registrations merged in, else the
    /// registry's own.
    fn service_doc_with(&self, r: &Registration) -> Value {
        let mut regs: Vec<Registration> = self.registrations_of(&r.service).into_iter().filter(|x| x.address != r.address).collect();
        regs.push(r.clone());
        let prefix = format!("{CONFIG}ServiceEntry/");
        let declared = self
            .store
            .objects()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .find(|(_, v)| crate::mesh::declared_hosts(v).contains(&r.service));
        match declared {
            Some((_, v)) => {
                let mut v = v.clone();
                crate::mesh::merge_endpoints(&mut v, |h| if h == r.service { regs.clone() } else { self.registrations_of(h) });
                v
            }
            None => crate::mesh::registration_doc(&r.service, &regs),
        }
    }

    /// Every registered endpoint, by service (lower case).
    pub fn registrations_by_service(&self) -> BTreeMap<String, Vec<Registration>> {
        let mut by_service: BTreeMap<String, Vec<Registration>> = BTreeMap::new();
        for r in self.registrations() {
            by_service.entry(r.service.to_ascii_lowercase()).or_default().push(r);
        }
        by_service
    }

    /// The Sidecar that scopes a proxy in `namespace` with `labels` (Istio's choice: one
    /// in its namespace whose selector matches, else its namespace's selector-less one,
    /// else the root namespace's), by key; `None` when none applies.
    pub fn sidecar_for(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<(String, weft_config::istio::Sidecar)> {
        let sidecars: Vec<(String, String, weft_config::istio::Sidecar)> = self
            .config()
            .filter(|(_, v)| v["kind"] == "Sidecar")
            .filter_map(|(k, v)| {
                let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
                Some((k.clone(), ns, serde_json::from_value(v["spec"].clone()).ok()?))
            })
            .collect();
        let selected = |sc: &weft_config::istio::Sidecar| {
            sc.workload_selector.as_ref().is_some_and(|s| !s.labels.is_empty() && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        let pick = |pred: &dyn Fn(&(String, String, weft_config::istio::Sidecar)) -> bool| {
            sidecars.iter().find(|s| pred(s)).map(|(k, _, sc)| (k.clone(), sc.clone()))
        };
        pick(&|(_, ns, sc)| ns == namespace && selected(sc))
            .or_else(|| pick(&|(_, ns, sc)| ns == namespace && sc.workload_selector.is_none()))
            .or_else(|| pick(&|(_, ns, sc)| ns == ROOT_NAMESPACE && sc.workload_selector.is_none()))
    }
}

/// Every revision, oldest first, with the keys it changed (not the values).
pub async fn history(p: &Plane) -> Result<Vec<weft_api::HistoryEntry>, PlaneError> {
    let op = |c: &crate::store::Change| match (&c.before, &c.after) {
        (None, Some(_)) => "created",
        (Some(_), None) => "deleted",
        _ => "updated",
    };
    Ok(p.store
        .history()
        .await?
        .into_iter()
        .map(|r| weft_api::HistoryEntry {
            changes: r.changes.iter().map(|c| weft_api::ChangeEntry { key: c.key.clone(), op: op(c).into() }).collect(),
            revision: r.revision,
            at_ms: r.at_ms,
            client: r.client,
            action: r.action,
        })
        .collect())
}

/// Istio's root namespace: a Sidecar there without a selector is the mesh's default.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Parses stored JSON documents back into resources.
pub(crate) fn parse_docs(file: &str, docs: &[&Value]) -> Result<Vec<Resource>, PlaneError> {
    let text: String = docs.iter().map(|d| format!("---\n{d}\n")).collect();
    let mut out = Vec::new();
    let mut diags = Diagnostics::default();
    weft_config::load_str(file, &text, &mut out, &mut diags);
    if !diags.is_ok() {
        return Err(PlaneError::Invalid(shown_messages(diags.errors.iter(), "errors")));
    }
    Ok(out)
}

/// The file name an applied document is compiled under, followed by its file's index:
/// no stored document's (those are "store", "registry", "rollback") begins so.
const APPLIED: char = '\u{0}';

/// `e`'s file name as the client gave it, if it is an applied document's.
fn restore_file(e: &mut weft_config::ConfigError, files: &[(String, String)]) {
    if let Some(i) = e.source.file.strip_prefix(APPLIED).and_then(|i| i.parse::<usize>().ok()) {
        if let Some((name, _)) = files.get(i) {
            e.source.file = name.clone();
        }
    }
}

/// What an apply stored, and what the compile warned about it.
#[derive(Debug)]
pub struct Applied {
    pub revision: Option<Revision>,
    pub warnings: Vec<String>,
}

/// Warnings or errors shown to a client at most (the rest counted), the characters of
/// each, and of the file name in each.
const MAX_SHOWN_MESSAGES: usize = 100;
const MAX_MESSAGE_CHARS: usize = 1_000;
const MAX_SHOWN_FILE_CHARS: usize = 128;

/// Diagnostics as a client is shown them: bounded in count and length (a whole mesh
/// applied at once can warn about, or fail in, every resource), each file name cut so
/// that a long one leaves room for the message.
fn shown_messages<'a>(diags: impl Iterator<Item = &'a weft_config::ConfigError>, what: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut more = 0usize;
    for d in diags {
        if out.len() >= MAX_SHOWN_MESSAGES {
            more += 1;
            continue;
        }
        let line = if d.source.file.len() > MAX_SHOWN_FILE_CHARS {
            let mut short = d.clone();
            short.source.file = format!("{}…", weft_config::rules::cut(&d.source.file, MAX_SHOWN_FILE_CHARS));
            short.to_string()
        } else {
            d.to_string()
        };
        out.push(weft_config::rules::cut(&line, MAX_MESSAGE_CHARS).to_owned());
    }
    if more > 0 {
        out.push(format!("… and {more} more {what}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, host: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  http: [{{route: [{{destination: {{host: {host}}}}}]}}]\n")
    }

    #[tokio::test]
    async fn an_apply_is_warned_about_its_own_documents_only() {
        let dir = std::env::temp_dir().join(format!("weft-plane-warnings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut plane = Plane::new(crate::store::Store::open(&dir).unwrap());
        // Routed to a host nothing declares: warned.
        let a = plane.apply("t", &[("a.yaml".into(), vs("a", "nowhere-a"))]).await.unwrap();
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(a.warnings[0].starts_with("a.yaml: VirtualService a: "), "{:?}", a.warnings);
        // A file named like the stored documents' source: a's warning is not its own.
        let b = plane.apply("t", &[("store".into(), vs("b", "nowhere-b"))]).await.unwrap();
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert!(b.warnings[0].starts_with("store: VirtualService b: ") && b.warnings[0].contains("nowhere-b"), "{:?}", b.warnings);
        // The same kind and name in another namespace, from a file named "store": only its
        // own warning (a stored document changed since is parsed again as "store", doc 0).
        let hidden = vs("x", "hidden-x").replace("metadata: {name: x}", "metadata: {name: x, namespace: secret}");
        plane.apply("t", &[("x.yaml".into(), hidden)]).await.unwrap();
        let x = plane.apply("t", &[("store".into(), vs("x", "nowhere-x"))]).await.unwrap();
        assert_eq!(x.warnings.len(), 1, "{:?}", x.warnings);
        assert!(x.warnings[0].contains("nowhere-x") && !x.warnings[0].contains("hidden-x"), "{:?}", x.warnings);
        // An error of the whole-mesh compile names the client's file.
        let twice = vs("dup", "dup-host").replace("hosts: [dup-host]", "hosts: [dup-host, dup-host]");
        let e = plane.apply("t", &[("twice.yaml".into(), twice)]).await.unwrap_err().to_string();
        assert!(e.contains("twice.yaml: VirtualService dup: spec.hosts[1]: duplicate hosts"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_applys_warnings_are_bounded_in_count_and_length() {
        let source = weft_config::Source { file: "mesh.yaml".into(), doc: 1 };
        let many: Vec<weft_config::ConfigError> = (0..150)
            .map(|i| weft_config::ConfigError::new(&source, Some("VirtualService"), Some(&format!("vs{i}")), "spec", "x".repeat(5_000)))
            .collect();
        let shown = shown_messages(many.iter(), "warnings");
        assert_eq!(shown.len(), MAX_SHOWN_MESSAGES + 1);
        assert!(shown.iter().all(|w| w.len() <= MAX_MESSAGE_CHARS + 4), "cut");
        assert!(shown[0].starts_with("mesh.yaml: VirtualService vs0: spec: xxx"), "{}", shown[0]);
        assert_eq!(shown[MAX_SHOWN_MESSAGES], "… and 50 more warnings");
        assert!(shown_messages([].iter(), "errors").is_empty());
    }

    #[test]
    fn a_long_file_name_leaves_room_for_the_message() {
        let source = weft_config::Source { file: "d/".repeat(2_000) + "mesh.yaml", doc: 1 };
        let e = weft_config::ConfigError::new(&source, Some("VirtualService"), Some("vs"), "spec.hosts[0]", "duplicate hosts");
        let shown = shown_messages([e].iter(), "errors");
        assert!(shown[0].ends_with("VirtualService vs: spec.hosts[0]: duplicate hosts"), "{}", shown[0]);
        assert!(shown[0].len() < 300, "{}", shown[0]);
    }

    #[tokio::test]
    async fn an_invalid_applys_errors_are_bounded() {
        let dir = std::env::temp_dir().join(format!("weft-plane-errors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut plane = Plane::new(crate::store::Store::open(&dir).unwrap());
        let twice = |i: usize| vs(&format!("v{i}"), &format!("h{i}")).replace(&format!("hosts: [h{i}]"), &format!("hosts: [h{i}, h{i}]"));
        let docs: String = (0..300).map(|i| format!("{}---\n", twice(i))).collect();
        let Err(PlaneError::Invalid(errors)) = plane.apply("t", &[("m.yaml".into(), docs)]).await else { panic!("applied") };
        assert_eq!(errors.len(), MAX_SHOWN_MESSAGES + 1, "{:?}", &errors[..3]);
        assert!(errors[MAX_SHOWN_MESSAGES].starts_with("… and ") && errors[MAX_SHOWN_MESSAGES].ends_with(" more errors"));
        assert_eq!(plane.revision(), 0, "nothing stored");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
