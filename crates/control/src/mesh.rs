//! The mesh proxies receive, held as one document per resource so that a change is
//! pushed as what it changed: a proxy that has revision N gets the documents changed
//! since N and the keys removed since N (a delta), not the whole mesh again.
//!
//! Each document is a config resource (a ServiceEntry with the registered endpoints
//! of its hosts merged in) or a ServiceEntry the registry makes for a registered
//! service nobody declared. A registration touches one document, found through the
//! host → ServiceEntry index; only a config change rebuilds the set, and even then
//! only the documents whose text changed count as changed.
//!
//! The answers are encoded by `weft_api::MeshEncoder` (keys and documents as JSON, so
//! nothing in a key can be read as framing), once per revision and scope.

mod answers;
mod registry_docs;

use answers::Answers;
pub(crate) use registry_docs::merge_endpoints;
pub use registry_docs::{registration_doc, TLS_MODE_LABEL};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde_json::Value;
use weft_api::{MeshBody, MeshEncoder, MeshKind, RawValue};

use crate::plane::Plane;

/// How many revisions of changes are kept for deltas; older proxies get everything.
const LOG_REVISIONS: usize = 20_000;

struct Doc {
    /// The document as sent (compact JSON).
    json: Box<RawValue>,
    hosts: Vec<String>,
    /// Its hosts as a proxy asks for them on demand: short ones resolved in its namespace.
    canonical: Vec<String>,
    namespace: String,
    kind: String,
}

/// Which documents a proxy receives: all, those its Sidecar lets it see, and on demand
/// only those of the hosts it asked for.
pub struct Scope {
    /// The proxy's namespace.
    pub namespace: String,
    /// None: it admits everything.
    pub sidecar: Option<weft_config::istio::Sidecar>,
    /// On demand: the hosts asked for (canonical).
    subscribed: Option<HashSet<String>>,
    /// Hosts the admitted (on demand: asked-for) VirtualServices route to (computed per
    /// config revision).
    wanted: HashSet<String>,
    config_rev: u64,
}

impl Scope {
    /// The hosts it holds (asked for, and routed to).
    fn hosts(&self) -> usize {
        self.subscribed.as_ref().map_or(0, HashSet::len) + self.wanted.len()
    }
}

/// Scopes kept at most (each on-demand proxy's set of hosts is one), and the hosts they
/// hold in all (asked for and routed to): past either they are made again as asked. (By
/// count alone, 1,000 scopes of 2,048 asked hosts each held ~600 MB.)
const MAX_SCOPES: usize = 1_000;
const MAX_SCOPE_HOSTS: usize = 200_000;
#[derive(Default)]
pub struct Index {
    built: bool,
    revision: u64,
    docs: BTreeMap<String, Doc>,
    /// Host → key of the config ServiceEntry declaring it.
    declared: HashMap<String, String>,
    /// Per revision, the document keys it changed or removed.
    log: VecDeque<(u64, Vec<String>)>,
    /// Deltas can be made for proxies at this revision or later.
    horizon: u64,
    /// The last revision that changed config (not only the registry): scoped proxies
    /// get a full answer across one, since what their Sidecar admits may have moved.
    config_rev: u64,
    scopes: HashMap<String, Scope>,
    /// The hosts the scopes hold in all (subscribed and wanted).
    scope_hosts: usize,
    answers: Answers,
    /// The last revision that changed which hosts exist, or the config (a Sidecar decides
    /// which a proxy may ask for): on-demand proxies get the names again across one.
    names_rev: u64,
    /// Every host a document has (canonical and as written), as of `names_rev`.
    known: (u64, std::sync::Arc<HashSet<String>>),
    /// The keys of the documents naming each host (canonical and as written), as of
    /// `names_rev`: a widening ask looks up what its new hosts bring instead of testing
    /// every document (2 ms a first request at 10,000 services).
    by_host: Option<(u64, HashMap<String, Vec<String>>)>,
}

/// Whether a store key is a VirtualService's or a DestinationRule's: config that no
/// other document of the mesh is made from.
fn routing_only(key: &str) -> bool {
    key.starts_with("config/VirtualService/") || key.starts_with("config/DestinationRule/")
}

/// The hosts a resource is about (lower case).
pub fn hosts_of(d: &Value) -> Vec<String> {
    let spec = &d["spec"];
    let list =
        |v: &Value| v.as_array().map(|a| a.iter().filter_map(|h| h.as_str()).map(str::to_ascii_lowercase).collect()).unwrap_or_default();
    match d["kind"].as_str().unwrap_or("") {
        "ServiceEntry" | "VirtualService" => list(&spec["hosts"]),
        _ => spec["host"].as_str().map(|h| vec![h.to_ascii_lowercase()]).unwrap_or_default(),
    }
}

/// The hosts a ServiceEntry document declares for the registry: its hosts, and for a
/// short one (`ratings`) also the FQDN a registration of that name in the entry's
/// namespace is stored as (`ratings.<ns>.svc.cluster.local`), so that it joins the entry.
pub fn declared_hosts(se: &Value) -> Vec<String> {
    let ns = se["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut out = hosts_of(se);
    for h in out.clone() {
        if weft_config::names::is_short(&h) {
            let fqdn = weft_config::names::resolve(&h, ns);
            if !out.contains(&fqdn) {
                out.push(fqdn);
            }
        }
    }
    out
}

fn doc(v: &Value) -> Doc {
    // (A `Value` always serialises: its map keys are strings.)
    let json = serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned());
    let namespace = v["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let kind = v["kind"].as_str().unwrap_or("").to_owned();
    let mut hosts = hosts_of(v);
    let canonical: Vec<String> = hosts.iter().map(|h| weft_config::names::resolve(h, &namespace)).collect();
    if matches!(kind.as_str(), "VirtualService" | "DestinationRule") {
        // Their short hosts are services of their namespace: a Sidecar naming the FQDN
        // admits them (the literal form stays, for a ServiceEntry's short host).
        let resolved: Vec<String> =
            hosts.iter().filter(|h| weft_config::names::is_short(h)).map(|h| weft_config::names::resolve(h, &namespace)).collect();
        hosts.extend(resolved);
    }
    Doc { json, hosts, canonical, namespace, kind }
}

impl Index {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn config_revision(&self) -> u64 {
        self.config_rev
    }

    /// Brings the index to the plane's revision: the documents the revisions since
    /// touched, or all of them after a config change (or when the store cannot say).
    pub fn sync(&mut self, plane: &Plane) {
        let rev = plane.revision();
        if self.built && rev == self.revision {
            return;
        }
        let keys = if self.built { plane.changed_since(self.revision) } else { None };
        match keys {
            // (Token counts are no part of the mesh.)
            Some(keys)
                if keys.iter().all(|k| k.starts_with("registry/") || k.starts_with(crate::token_uses::TOKENS) || routing_only(k)) =>
            {
                let services: BTreeSet<String> = keys
                    .iter()
                    .filter_map(|k| k.strip_prefix("registry/"))
                    .filter_map(|k| k.split('/').next())
                    .map(str::to_ascii_lowercase)
                    .collect();
                let routing: Vec<&String> = keys.iter().filter(|k| routing_only(k)).collect();
                if !routing.is_empty() {
                    self.update_routing(plane, rev, &routing);
                }
                self.update_services(plane, rev, services);
            }
            _ => self.rebuild(plane, rev),
        }
        self.revision = rev;
        self.answers.clear();
        // With on-demand proxies about, the host index is brought up to date now (by the
        // push that follows a change), not by the next proxy's first request.
        if self.scopes.values().any(|s| s.subscribed.is_some()) {
            self.index_hosts();
        }
    }

    fn record(&mut self, rev: u64, changed: Vec<String>) {
        if !changed.is_empty() {
            self.log.push_back((rev, changed));
        }
        while self.log.len() > LOG_REVISIONS {
            if let Some((r, _)) = self.log.pop_front() {
                self.horizon = r;
            }
        }
    }

    /// Only the VirtualServices and DestinationRules at `keys` (store keys) — they
    /// declare no service and carry no registrations, so no other document changes:
    /// at 10,000 services a VirtualService edit rebuilt every document (~250 ms).
    fn update_routing(&mut self, plane: &Plane, rev: u64, keys: &[&String]) {
        let mut changed = Vec::new();
        for store_key in keys {
            let key = store_key.trim_start_matches("config/").to_owned();
            match plane.config_value(&key) {
                Some(v) => {
                    let d = doc(v);
                    if self.docs.get(&key).is_none_or(|old| old.json.get() != d.json.get()) {
                        self.docs.insert(key.clone(), d);
                        changed.push(key);
                    }
                }
                None => {
                    if self.docs.remove(&key).is_some() {
                        changed.push(key);
                    }
                }
            }
        }
        // As any config change: what scoped proxies see may have moved, and a
        // VirtualService's hosts are names.
        self.config_rev = rev;
        self.names_rev = rev;
        self.record(rev, changed);
    }

    /// Every document from scratch, compared with the ones held.
    fn rebuild(&mut self, plane: &Plane, rev: u64) {
        let regs = plane.registrations_by_service();
        let mut declared = HashMap::new();
        let mut fresh: BTreeMap<String, Value> = BTreeMap::new();
        for (key, v) in plane.config().filter(|(_, v)| v["kind"] != "Sidecar") {
            let key = key.trim_start_matches("config/").to_owned();
            let mut v = v.clone();
            if v["kind"] == "ServiceEntry" {
                for h in declared_hosts(&v) {
                    declared.entry(h).or_insert_with(|| key.clone());
                }
                merge_endpoints(&mut v, |h| regs.get(h).cloned().unwrap_or_default());
            }
            fresh.insert(key, v);
        }
        for (service, list) in &regs {
            if !declared.contains_key(service) {
                fresh.insert(format!("registry/{service}"), registration_doc(service, list));
            }
        }
        let mut changed: Vec<String> = self.docs.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
        let mut docs = BTreeMap::new();
        for (key, v) in fresh {
            let d = doc(&v);
            if self.docs.get(&key).is_none_or(|old| old.json.get() != d.json.get()) {
                changed.push(key.clone());
            }
            docs.insert(key, d);
        }
        // (Any config change may be a Sidecar's, which changes the names a proxy may see.)
        self.names_rev = rev;
        if !self.built {
            self.horizon = rev;
        }
        self.docs = docs;
        self.declared = declared;
        self.config_rev = rev;
        self.built = true;
        self.record(rev, changed);
    }

    /// Only the documents of `services` (their registrations changed).
    fn update_services(&mut self, plane: &Plane, rev: u64, services: BTreeSet<String>) {
        let mut changed = Vec::new();
        for service in services {
            let (key, v) = match self.declared.get(&service) {
                Some(key) => {
                    let Some(mut v) = plane.config_value(key).cloned() else { continue };
                    merge_endpoints(&mut v, |h| plane.registrations_of(h));
                    (key.clone(), Some(v))
                }
                None => {
                    let regs = plane.registrations_of(&service);
                    (format!("registry/{service}"), (!regs.is_empty()).then(|| registration_doc(&service, &regs)))
                }
            };
            match v {
                Some(v) => {
                    let d = doc(&v);
                    if self.docs.get(&key).is_none_or(|old| old.json.get() != d.json.get()) {
                        if self.docs.insert(key.clone(), d).is_none() {
                            self.names_rev = rev;
                        }
                        changed.push(key);
                    }
                }
                None => {
                    if self.docs.remove(&key).is_some() {
                        self.names_rev = rev;
                        changed.push(key);
                    }
                }
            }
        }
        self.record(rev, changed);
    }

    /// The scope for a proxy in `namespace` under the Sidecar stored at `key` (none: no
    /// Sidecar), asking on demand for `hosts` (none: everything it admits).
    pub fn scope(&mut self, key: &str, namespace: &str, sidecar: Option<weft_config::istio::Sidecar>, hosts: Option<&[String]>) -> String {
        let mut scope_key = format!("{key}@{namespace}");
        // Only hosts the mesh has count (what a proxy asks for beyond them is nothing), and
        // the key holds a hash of them: memory follows the mesh, not what is asked.
        let subscribed: Option<HashSet<String>> = hosts.map(|h| {
            let known = self.known_hosts();
            h.iter().map(|h| h.to_ascii_lowercase()).filter(|h| known.contains(h.as_str())).collect()
        });
        if let Some(sub) = &subscribed {
            let mut sorted: Vec<&String> = sub.iter().collect();
            sorted.sort();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&sorted, &mut hasher);
            scope_key.push_str(&format!("#{:016x}", std::hash::Hasher::finish(&hasher)));
        }
        let held = self.scopes.get(&scope_key);
        let fresh = held.is_some_and(|s| s.config_rev == self.config_rev && s.subscribed == subscribed);
        if held.is_some_and(|s| s.subscribed != subscribed) {
            // (Another set of hosts under the same hash: its answers are not this one's.)
            self.answers.forget_scope(&scope_key);
        }
        if !fresh {
            let wanted = self.vs_destinations(namespace, sidecar.as_ref(), subscribed.as_ref());
            let hosts = subscribed.as_ref().map_or(0, HashSet::len) + wanted.len();
            let replaced = self.scopes.get(&scope_key).map_or(0, Scope::hosts);
            if self.scopes.len() >= MAX_SCOPES || self.scope_hosts - replaced + hosts > MAX_SCOPE_HOSTS {
                self.scopes.clear();
                self.scope_hosts = 0;
            } else {
                self.scope_hosts -= replaced;
            }
            let s = Scope { namespace: namespace.to_owned(), sidecar, subscribed, wanted, config_rev: self.config_rev };
            self.scopes.insert(scope_key.clone(), s);
            self.scope_hosts += hosts;
        }
        scope_key
    }

    /// Brings [`Index::by_host`] up to this revision.
    fn index_hosts(&mut self) {
        // (Hosts change only with the names: not with an endpoint, nor a token-use flush.)
        if self.by_host.as_ref().is_some_and(|(rev, _)| *rev == self.names_rev) {
            return;
        }
        let mut by_host: HashMap<String, Vec<String>> = HashMap::with_capacity(self.docs.len() * 2);
        for (k, d) in &self.docs {
            // (Those every proxy gets, whatever it asks for, under "".)
            if every_scope_has(d) {
                by_host.entry(String::new()).or_default().push(k.clone());
            }
            for h in d.hosts.iter().chain(&d.canonical) {
                let keys = by_host.entry(h.clone()).or_default();
                if keys.last() != Some(k) {
                    keys.push(k.clone());
                }
            }
        }
        self.by_host = Some((self.names_rev, by_host));
    }

    /// Every host of the documents held (built again only when the hosts may have
    /// changed: not for every registration of a churning mesh, whose on-demand asks each
    /// rebuilt a set of every host).
    fn known_hosts(&mut self) -> std::sync::Arc<HashSet<String>> {
        if self.known.0 != self.names_rev || self.known.1.is_empty() {
            let all = self.docs.values().flat_map(|d| d.hosts.iter().chain(&d.canonical)).cloned().collect();
            self.known = (self.names_rev, std::sync::Arc::new(all));
        }
        self.known.1.clone()
    }

    /// The destinations of the VirtualServices a Sidecar admits (on demand: of those
    /// asked for).
    fn vs_destinations(&self, me: &str, sc: Option<&weft_config::istio::Sidecar>, subscribed: Option<&HashSet<String>>) -> HashSet<String> {
        let mut wanted = HashSet::new();
        for d in self.docs.values().filter(|d| d.kind == "VirtualService") {
            if !d.hosts.iter().any(|h| sc.is_none_or(|sc| sc.admits(me, &d.namespace, h))) {
                continue;
            }
            if subscribed.is_some_and(|sub| !d.canonical.iter().chain(&d.hosts).any(|h| sub.contains(h))) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(d.json.get()) else { continue };
            let routes = ["http", "tcp", "tls"].into_iter().flat_map(|k| v["spec"][k].as_array().into_iter().flatten());
            for route in routes {
                for dest in route["route"].as_array().into_iter().flatten().chain(std::iter::once(&route["mirror"])) {
                    if let Some(h) = dest["destination"]["host"].as_str().or(dest["host"].as_str()) {
                        // A short host is the service of the VirtualService's namespace
                        // (or, literally, a ServiceEntry's short host).
                        wanted.insert(h.to_ascii_lowercase());
                        wanted.insert(weft_config::names::resolve(h, &d.namespace));
                    }
                }
            }
        }
        wanted
    }

    fn in_scope(&self, d: &Doc, scope: Option<&Scope>) -> bool {
        let Some(s) = scope else { return true };
        if every_scope_has(d) {
            return true;
        }
        let admits = |h: &String| s.sidecar.as_ref().is_none_or(|sc| sc.admits(&s.namespace, &d.namespace, h));
        match &s.subscribed {
            None => d.hosts.iter().any(|h| s.wanted.contains(h) || admits(h)),
            // Asked for and admitted, or where an asked-for VirtualService routes (as the
            // whole mesh's scope takes its admitted VirtualServices' destinations).
            Some(sub) => {
                let names = || d.canonical.iter().chain(&d.hosts);
                (names().any(|h| sub.contains(h)) && names().any(admits)) || names().any(|h| s.wanted.contains(h))
            }
        }
    }

    /// The service hosts a proxy in `s` may ask for on demand (canonical, sorted).
    fn names(&self, s: &Scope) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (key, d) in &self.docs {
            if !(matches!(d.kind.as_str(), "ServiceEntry" | "VirtualService") || key.starts_with("registry/")) {
                continue;
            }
            for (h, c) in d.hosts.iter().zip(&d.canonical) {
                if s.sidecar.as_ref().is_none_or(|sc| sc.admits(&s.namespace, &d.namespace, h) || sc.admits(&s.namespace, &d.namespace, c))
                {
                    out.push(c);
                    // A ServiceEntry's short host is also a literal name, in every namespace.
                    if d.kind == "ServiceEntry" && h != c {
                        out.push(h);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The answer for a proxy at revision `since` (0: none) in `scope` (a key from
    /// [`Index::scope`], "" for the whole mesh), all but its nonce: the documents
    /// changed since (a delta), or all of them.
    pub fn answer(&mut self, since: u64, scope: &str) -> MeshBody {
        self.answer_on_demand(since, scope, since)
    }

    /// The answer for an on-demand proxy at revision `since` that held scope `held` and
    /// now asks for more hosts (`scope`): a delta of the documents the new hosts bring (in
    /// `scope`, not in `held`) and those changed since in `scope` — so a proxy's tenth
    /// service costs it the tenth's documents, not all ten again. Whole (as
    /// [`Index::answer_on_demand`] with `since` 0) when no delta can be made from `since`.
    pub fn answer_widened(&mut self, since: u64, scope: &str, held: &str, names_since: u64) -> MeshBody {
        self.index_hosts();
        let delta = since > 0 && since >= self.horizon && since <= self.revision && self.config_rev <= since;
        let (Some(s), Some(old)) = (self.scopes.get(scope), self.scopes.get(held)) else {
            // (The scope asked for is made last: only the held one can have been evicted.)
            return self.answer_on_demand(0, scope, names_since);
        };
        if !delta || scope.is_empty() || held.is_empty() {
            return self.answer_on_demand(0, scope, names_since);
        }
        let names = s.subscribed.is_some() && (names_since == 0 || self.names_rev > names_since);
        let cache_key = (since, format!("{scope}+{held}"), names);
        if let Some(b) = self.answers.get(&cache_key) {
            return b.clone();
        }
        let mut out = MeshEncoder::new(self.revision, MeshKind::Delta);
        if names {
            out.names(self.names(s));
        }
        let changed: BTreeSet<&String> = self.log.iter().rev().take_while(|(r, _)| *r > since).flat_map(|(_, k)| k).collect();
        // A document in the new scope and not the held one names a host asked for or
        // routed to (those naming none are in both): only those, and the changed ones.
        let mut candidates: BTreeSet<&String> = changed.clone();
        if let (Some(sub), Some((_, by_host))) = (&s.subscribed, &self.by_host) {
            candidates.extend(sub.iter().chain(&s.wanted).filter_map(|h| by_host.get(h)).flatten());
        } else {
            candidates.extend(self.docs.keys());
        }
        for k in candidates {
            let Some(d) = self.docs.get(k) else { continue };
            if self.in_scope(d, Some(s)) && (changed.contains(k) || !self.in_scope(d, Some(old))) {
                out.put(k, &d.json);
            }
        }
        for k in changed.into_iter().filter(|k| !self.docs.contains_key(*k)) {
            out.remove(k);
        }
        let body = out.finish();
        self.answers.insert(cache_key, &body);
        body
    }

    /// [`Index::answer`], for an on-demand scope whose proxy holds the names as of
    /// revision `names_since` (0: none): they are sent again only if they changed since.
    pub fn answer_on_demand(&mut self, since: u64, scope: &str, names_since: u64) -> MeshBody {
        if self.scopes.get(scope).is_some_and(|s| s.subscribed.is_some()) {
            self.index_hosts();
        }
        let s = self.scopes.get(scope).filter(|_| !scope.is_empty());
        let delta = since > 0 && since >= self.horizon && since <= self.revision && (s.is_none() || self.config_rev <= since);
        let names = s.is_some_and(|s| s.subscribed.is_some()) && (names_since == 0 || self.names_rev > names_since);
        let cache_key = (if delta { since } else { 0 }, scope.to_owned(), names);
        if let Some(b) = self.answers.get(&cache_key) {
            return b.clone();
        }
        let mut out = MeshEncoder::new(self.revision, if delta { MeshKind::Delta } else { MeshKind::Full });
        if let Some(s) = s.filter(|_| names) {
            out.names(self.names(s));
        }
        if delta {
            let keys: BTreeSet<&String> = self.log.iter().rev().take_while(|(r, _)| *r > since).flat_map(|(_, k)| k).collect();
            // (A delta's scope is the one the proxy's documents were chosen by: a change of
            // config, Sidecar or hosts asked for gets a full answer. So a changed document
            // outside it was never the proxy's: it costs the proxy nothing.)
            for k in keys {
                match self.docs.get(k) {
                    Some(d) if self.in_scope(d, s) => out.put(k, &d.json),
                    Some(_) => {}
                    None => out.remove(k),
                }
            }
        } else if let (Some(sub), Some((_, by_host))) = (s.and_then(|s| s.subscribed.as_ref().map(|sub| (sub, &s.wanted))), &self.by_host) {
            // On demand: the documents of the hosts asked for (or routed to) and those every
            // scope has, from the host index — not a test of every document.
            let (sub, wanted) = sub;
            let every = by_host.get("").into_iter().flatten();
            let keys: BTreeSet<&String> = sub.iter().chain(wanted).filter_map(|h| by_host.get(h)).flatten().chain(every).collect();
            for (k, d) in keys.into_iter().filter_map(|k| Some((k, self.docs.get(k)?))).filter(|(_, d)| self.in_scope(d, s)) {
                out.put(k, &d.json);
            }
        } else {
            for (k, d) in self.docs.iter().filter(|(_, d)| self.in_scope(d, s)) {
                out.put(k, &d.json);
            }
        }
        let body = out.finish();
        self.answers.insert(cache_key, &body);
        body
    }
}

/// Whether every scope holds `d`, whatever hosts it asks for: workload policies,
/// WorkloadEntries and Gateways name no service host (every proxy gets them and picks
/// what selects it: a gateway, its Gateways), and a delegate VirtualService (no hosts)
/// is used through its root's hosts.
fn every_scope_has(d: &Doc) -> bool {
    matches!(
        d.kind.as_str(),
        "PeerAuthentication"
            | "AuthorizationPolicy"
            | "RequestAuthentication"
            | "ExtensionProvider"
            | "WorkloadEntry"
            | "Gateway"
            | "Telemetry"
    ) || (d.kind == "VirtualService" && d.hosts.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plane::Registration;
    use crate::store::Store;
    use serde_json::json;

    fn reg(service: &str, address: &str) -> Registration {
        Registration {
            service: service.into(),
            address: address.into(),
            labels: Default::default(),
            locality: None,
            weight: None,
            ttl_ms: None,
            identity: None,
            namespace: None,
        }
    }

    /// (keys upserted, keys removed) of an answer.
    fn parts(body: &MeshBody) -> (Vec<String>, Vec<String>) {
        let bytes = body.answer(1).to_vec();
        let a = weft_api::MeshAnswer::decode(&bytes).unwrap();
        (a.documents.keys().cloned().collect(), a.removed)
    }

    /// A plane on a fresh store of its own (its directory, removed by the caller).
    fn test_plane(name: &str) -> (std::path::PathBuf, Plane) {
        let dir = std::env::temp_dir().join(format!("weft-mesh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let plane = Plane::new(Store::open(&dir).unwrap());
        (dir, plane)
    }

    #[tokio::test]
    async fn on_demand_scopes_are_bounded_by_the_hosts_they_hold() {
        let (dir, mut plane) = test_plane("scopes");
        let mut yaml = String::new();
        for i in 0..1_000 {
            yaml += &format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}}}\nspec:\n  hosts: [s{i}.example]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1}}]\n");
        }
        plane.apply("t", &[("mesh.yaml".into(), yaml)]).await.unwrap();
        let mut idx = Index::default();
        idx.sync(&plane);
        let all: Vec<String> = (0..1_000).map(|i| format!("s{i}.example")).collect();
        // Sets of ~1,000 hosts, each another (one host left out): 400 of them would hold
        // 400,000 hosts.
        let mut most = 0;
        for i in 0..400 {
            let asked: Vec<String> = all.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, h)| h.clone()).collect();
            let key = idx.scope("", "default", None, Some(&asked));
            assert!(idx.scopes.contains_key(&key), "the scope asked for is kept");
            assert_eq!(idx.scope_hosts, idx.scopes.values().map(Scope::hosts).sum::<usize>());
            most = most.max(idx.scope_hosts);
        }
        assert!(most <= MAX_SCOPE_HOSTS && most > MAX_SCOPE_HOSTS / 2, "{most}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a widening ask must bring, by testing every document (the definition the
    /// host index's look-up must agree with).
    fn widened_by_scan(idx: &Index, since: u64, scope: &str, held: &str) -> (Vec<String>, Vec<String>) {
        let (s, old) = (&idx.scopes[scope], &idx.scopes[held]);
        let changed: BTreeSet<&String> = idx.log.iter().rev().take_while(|(r, _)| *r > since).flat_map(|(_, k)| k).collect();
        let puts = idx
            .docs
            .iter()
            .filter(|(k, d)| idx.in_scope(d, Some(s)) && (changed.contains(k) || !idx.in_scope(d, Some(old))))
            .map(|(k, _)| k.clone())
            .collect();
        (puts, changed.into_iter().filter(|k| !idx.docs.contains_key(*k)).cloned().collect())
    }

    #[tokio::test]
    async fn a_widening_ask_brings_what_testing_every_document_would() {
        let (dir, mut plane) = test_plane("widen");
        // Services in two namespaces (short and full hosts), one VirtualService routing to
        // another service, a policy naming no host, and registry-only services.
        let mut yaml = String::new();
        for i in 0..12 {
            let (ns, host) = if i % 2 == 0 { ("shop", format!("s{i}")) } else { ("web", format!("s{i}.web.svc.cluster.local")) };
            yaml += &format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: 9{i:03}}}}}]\n");
        }
        yaml += "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: to-s4, namespace: shop}\nspec:\n  hosts: [s2]\n  http: [{route: [{destination: {host: s4}}]}]\n";
        yaml += "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: PERMISSIVE}}\n";
        plane.apply("t", &[("mesh.yaml".into(), yaml)]).await.unwrap();
        for i in 0..4 {
            plane.register("t", reg(&format!("r{i}"), "127.0.0.1:7000")).await.unwrap();
        }
        let mut idx = Index::default();
        idx.sync(&plane);
        let hosts = |names: &[&str]| names.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let cases: [(&[&str], &[&str]); 5] = [
            (&["s0.shop.svc.cluster.local"], &["s2.shop.svc.cluster.local"]),
            (&["s1.web.svc.cluster.local"], &["r0.default.svc.cluster.local", "s6.shop.svc.cluster.local"]),
            (&["s2.shop.svc.cluster.local"], &["s4.shop.svc.cluster.local", "nowhere.default.svc.cluster.local"]),
            (&["r1.default.svc.cluster.local", "s3.web.svc.cluster.local"], &["r2.default.svc.cluster.local"]),
            (&["s8.shop.svc.cluster.local"], &[]),
        ];
        let mut since = idx.revision();
        for (round, (held, added)) in cases.iter().enumerate() {
            // Changes between the held answer and the ask: an endpoint, a removal.
            plane.register("t", reg(&format!("r{round}"), "127.0.0.9:7100")).await.unwrap();
            if round == 2 {
                plane.deregister("t", "r3", "127.0.0.1:7000").await.unwrap();
            }
            idx.sync(&plane);
            let held = hosts(held);
            let asked = [held.clone(), hosts(added)].concat();
            let held_scope = idx.scope("", "shop", None, Some(&held));
            let scope = idx.scope("", "shop", None, Some(&asked));
            let body = idx.answer_widened(since, &scope, &held_scope, since);
            assert_eq!(body.kind(), MeshKind::Delta);
            let (puts, removed) = parts(&body);
            assert_eq!((puts, removed), widened_by_scan(&idx, since, &scope, &held_scope), "case {round}");
            // A whole answer for the same hosts: what testing every document gives, the
            // policy naming no host included.
            let whole = parts(&idx.answer_on_demand(0, &scope, 0)).0;
            let scanned: Vec<String> =
                idx.docs.iter().filter(|(_, d)| idx.in_scope(d, idx.scopes.get(&scope))).map(|(k, _)| k.clone()).collect();
            assert_eq!(whole, scanned, "case {round}, whole");
            assert!(whole.contains(&"PeerAuthentication/shop/default".to_owned()), "{whole:?}");
            since = idx.revision();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews, namespace: shop}\nspec:\n  hosts: [reviews]\n  resolution: STATIC\n  ports: [{number: 8080, name: web, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, ports: {web: 9001}}]\n";

    #[tokio::test]
    async fn registrations_are_pushed_as_the_documents_they_touch() {
        let (dir, mut plane) = test_plane("pushed");
        plane.apply("t", &[("se.yaml".into(), SE.into())]).await.unwrap();
        for i in 0..3 {
            plane.register("t", reg(&format!("svc{i}"), "127.0.0.1:7000")).await.unwrap();
        }
        let mut idx = Index::default();
        idx.sync(&plane);
        let full = idx.answer(0, "");
        assert_eq!(full.kind(), MeshKind::Full);
        assert_eq!(parts(&full).0, ["ServiceEntry/shop/reviews", "registry/svc0", "registry/svc1", "registry/svc2"]);
        let at = idx.revision();

        // An endpoint of a declared host joins its ServiceEntry, under its port name.
        plane.register("t", reg("Reviews", "127.0.0.2:9002")).await.unwrap();
        plane.register("t", reg("svc1", "127.0.0.1:7001")).await.unwrap();
        plane.deregister("t", "svc2", "127.0.0.1:7000").await.unwrap();
        idx.sync(&plane);
        let body = idx.answer(at, "");
        assert_eq!(body.kind(), MeshKind::Delta);
        assert_eq!(
            parts(&body),
            (vec!["ServiceEntry/shop/reviews".to_owned(), "registry/svc1".to_owned()], vec!["registry/svc2".to_owned()])
        );
        let text = String::from_utf8_lossy(&body.answer(1).to_vec()).into_owned();
        assert!(text.contains(r#"{"address":"127.0.0.2","ports":{"web":9002}}"#), "{text}");
        // A proxy further behind gets the union; one that is current, nothing.
        assert_eq!(parts(&idx.answer(at - 1, "")).0.len(), 3);
        assert_eq!(parts(&idx.answer(idx.revision(), "")), (vec![], vec![]));

        // A config change rebuilds, but only what changed counts as changed.
        let before = idx.revision();
        let se2 = SE.replace("9001", "9005");
        plane.apply("t", &[("se.yaml".into(), se2)]).await.unwrap();
        idx.sync(&plane);
        assert_eq!(parts(&idx.answer(before, "")), (vec!["ServiceEntry/shop/reviews".to_owned()], vec![]));

        // Scoped proxies: registrations are deltas, config changes full answers.
        let sc: weft_config::istio::Sidecar = serde_json::from_value(json!({"egress": [{"hosts": ["*/svc1"]}]})).unwrap();
        let scope = idx.scope("Sidecar/shop/s", "shop", Some(sc), None);
        let body = idx.answer(before, &scope);
        assert_eq!(body.kind(), MeshKind::Full, "a config change since: full");
        assert_eq!(parts(&body).0, ["registry/svc1"]);
        let now = idx.revision();
        plane.register("t", reg("svc0", "127.0.0.1:7002")).await.unwrap();
        plane.register("t", reg("svc1", "127.0.0.1:7003")).await.unwrap();
        idx.sync(&plane);
        let body = idx.answer(now, &scope);
        assert_eq!(body.kind(), MeshKind::Delta);
        assert_eq!(parts(&body), (vec!["registry/svc1".to_owned()], vec![]), "svc0 is out of scope: not even a removal");

        // On demand: only what was asked for (and host-less policies), the mesh's names,
        // and a delta of nothing asked for is empty.
        let asked = ["svc1.default.svc.cluster.local".to_owned()];
        let on_demand = idx.scope("", "default", None, Some(&asked));
        // Hosts the mesh does not have are not the scope's: the same scope, whatever is asked.
        let padded = [asked[0].clone(), "x".repeat(253), "nowhere.example".to_owned()];
        assert_eq!(idx.scope("", "default", None, Some(&padded)), on_demand);
        let body = idx.answer(0, &on_demand);
        let bytes = body.answer(1).to_vec();
        let a = weft_api::MeshAnswer::decode(&bytes).unwrap();
        assert_eq!(a.documents.keys().collect::<Vec<_>>(), ["registry/svc1"]);
        let names = a.names.clone().unwrap_or_default();
        assert!(names.contains(&"reviews.shop.svc.cluster.local".to_owned()) && names.contains(&asked[0]), "{names:?}");
        let now = idx.revision();
        plane.register("t", reg("svc0", "127.0.0.1:7004")).await.unwrap();
        idx.sync(&plane);
        assert!(idx.answer(now, &on_demand).is_empty_delta(), "svc0 was not asked for");
        plane.register("t", reg("svc9", "127.0.0.1:7005")).await.unwrap();
        idx.sync(&plane);
        let body = idx.answer(now, &on_demand);
        let bytes = body.answer(1).to_vec();
        let a = weft_api::MeshAnswer::decode(&bytes).unwrap();
        assert!(a.documents.is_empty() && a.names.unwrap_or_default().contains(&"svc9.default.svc.cluster.local".to_owned()), "a new name");

        // A PeerAuthentication names no host: a scoped proxy gets it all the same.
        let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
        plane.apply("t", &[("pa.yaml".into(), pa.into())]).await.unwrap();
        idx.sync(&plane);
        assert!(parts(&idx.answer(0, &scope)).0.contains(&"PeerAuthentication/istio-system/default".to_owned()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
