//! Brings the registry's ZooKeeper endpoints to what a scan of ZooKeeper found: one
//! revision of puts and deletes, touching only endpoints labelled as ZooKeeper's. A
//! `weft register`ed endpoint at the same service and address wins (ZooKeeper's is
//! skipped and counted), and a service whose ServiceEntry would not compile keeps the
//! endpoints it had.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use weft_api::Registration;

use super::layouts::is_zookeeper;
use crate::plane::{Plane, PlaneError};
use crate::store::Revision;

/// What a sync did besides its revision.
#[derive(Default, Debug, PartialEq)]
pub struct Synced {
    /// Endpoints skipped, with why: a `weft register`ed one holds the key, or the
    /// service's document does not compile.
    pub skipped: Vec<(String, String)>,
}

impl Plane {
    /// Makes ZooKeeper's endpoints in the registry exactly `found` (see the module).
    pub async fn sync_zookeeper(&mut self, found: Vec<Registration>) -> Result<(Option<Revision>, Synced), PlaneError> {
        let mut synced = Synced::default();
        let stored = self.zookeeper_keys();
        let mut wanted: BTreeMap<String, BTreeMap<String, Registration>> = BTreeMap::new();
        for r in found {
            let key = crate::plane::registry_key(&r.service, &r.address);
            if self.store().get(&key).is_some_and(|v| !is_zookeeper(v)) {
                synced.skipped.push((key, "registered through weft register: the registration stays".into()));
                continue;
            }
            wanted.entry(r.service.clone()).or_default().insert(key, r);
        }
        let mut puts: Vec<(String, Option<Value>)> = Vec::new();
        let services: BTreeSet<&String> = wanted.keys().chain(stored.keys()).collect();
        for service in services {
            let new = wanted.get(service);
            let change = changes(self, stored.get(service), new);
            if change.is_empty() {
                continue;
            }
            // (Only a changed service is compiled: a rescan of 10,000 unchanged ones is cheap.)
            if let Some(new) = new.filter(|n| !compiles(self, service, n)) {
                let why = || format!("service {service}'s ServiceEntry would not compile: keeping the endpoints it had");
                synced.skipped.extend(new.keys().map(|k| (k.clone(), why())));
                continue;
            }
            puts.extend(change);
        }
        if puts.is_empty() {
            return Ok((None, synced));
        }
        Ok((self.store_mut().commit("zookeeper", "zookeeper sync", puts).await?, synced))
    }

    /// The registry keys of ZooKeeper's endpoints, by service.
    fn zookeeper_keys(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in self.registrations().into_iter().filter(|r| r.labels.get(super::SOURCE_LABEL).map(String::as_str) == Some(super::SOURCE)) {
            out.entry(r.service.clone()).or_default().insert(crate::plane::registry_key(&r.service, &r.address));
        }
        out
    }
}

/// The puts and deletes that turn a service's stored ZooKeeper keys `old` into `new`.
fn changes(p: &Plane, old: Option<&BTreeSet<String>>, new: Option<&BTreeMap<String, Registration>>) -> Vec<(String, Option<Value>)> {
    let mut puts = Vec::new();
    for key in old.into_iter().flatten().filter(|k| new.is_none_or(|n| !n.contains_key(*k))) {
        puts.push((key.clone(), None));
    }
    for (key, r) in new.into_iter().flatten() {
        let value = serde_json::to_value(r).unwrap_or(Value::Null);
        if p.store().get(key) != Some(&value) {
            puts.push((key.clone(), Some(value)));
        }
    }
    puts
}

/// Whether the registry's ServiceEntry for `service` with ZooKeeper's endpoints `new`
/// (and the service's other registered endpoints) compiles.
fn compiles(p: &Plane, service: &str, new: &BTreeMap<String, Registration>) -> bool {
    let mut regs: Vec<Registration> =
        p.registrations_of(service).into_iter().filter(|r| !r.labels.contains_key(super::SOURCE_LABEL)).collect();
    regs.extend(new.values().cloned());
    let doc = crate::mesh::registration_doc(service, &regs);
    let Ok(resources) = crate::plane::parse_docs("zookeeper", &[&doc]) else { return false };
    let mut diags = weft_config::Diagnostics::default();
    weft_config::compile(&resources, &mut diags);
    diags.is_ok()
}

impl Plane {
    /// Refuses a `weft register` or `weft deregister` that would set ZooKeeper's label or
    /// replace or remove one of ZooKeeper's endpoints (it comes back at the next scan,
    /// or is lost from ZooKeeper's view: either way the registry would lie).
    pub(crate) fn zookeeper_guard(
        &self,
        service: &str,
        address: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), PlaneError> {
        if labels.is_some_and(|l| l.contains_key(super::SOURCE_LABEL)) {
            return Err(PlaneError::Invalid(vec![format!("labels[{}]: reserved for endpoints from ZooKeeper", super::SOURCE_LABEL)]));
        }
        let key = crate::plane::registry_key(service, address);
        if self.store().get(&key).is_some_and(is_zookeeper) {
            return Err(PlaneError::Invalid(vec![format!(
                "{service} {address} comes from ZooKeeper: change it there (weft follows ZooKeeper's nodes)"
            )]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
