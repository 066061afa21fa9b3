//! Splicing recompiled virtual hosts into a copy of a snapshot ([`crate::routes_in_place`]):
//! the new hosts take the dead ones' slots, then the end; slots left over are filled
//! from the end, so no virtual host is unreachable and the rest keep their indexes
//! (but those moved).

use std::collections::HashMap;

use crate::names::alternates;
use crate::routes_in_place::{RoutesUpdate, Touched};
use crate::snapshot::{Snapshot, VirtualHost};

pub(crate) fn splice(old: &Snapshot, touched: &Touched, added: Vec<(Vec<String>, VirtualHost)>, viewer: &str) -> RoutesUpdate {
    let mut vhosts = old.vhosts.clone();
    let mut from: Vec<Option<usize>> = (0..vhosts.len()).map(Some).collect();
    let mut free = touched.dead.iter().copied();
    let mut served = Vec::with_capacity(added.len());
    for (hosts, vh) in added {
        let at = match free.next() {
            Some(slot) => {
                vhosts[slot] = vh;
                from[slot] = None;
                slot
            }
            None => {
                vhosts.push(vh);
                from.push(None);
                vhosts.len() - 1
            }
        };
        served.push((hosts, at));
    }
    let moved = fill_from_end(&mut vhosts, &mut from, free.collect());
    let mut exact_hosts = old.exact_hosts.clone();
    exact_hosts.retain(|k, _| !touched.keys.contains(k));
    if !moved.is_empty() {
        exact_hosts.values_mut().for_each(|i| *i = moved.get(i).copied().unwrap_or(*i));
    }
    for (hosts, at) in served {
        for h in hosts {
            for a in alternates(&h, viewer) {
                exact_hosts.insert(a, at);
            }
            exact_hosts.insert(h, at);
        }
    }
    let remap = |i: &usize| moved.get(i).copied().unwrap_or(*i);
    let snap = Snapshot {
        vhosts,
        exact_hosts,
        wildcard_hosts: old.wildcard_hosts.iter().map(|(s, i)| (s.clone(), remap(i))).collect(),
        catch_all: old.catch_all.as_ref().map(remap),
        inbound: old.inbound.as_ref().map(remap),
        health_checks: old.health_checks.clone(),
        clusters: old.clusters.clone(),
        tls_routes: old.tls_routes.clone(),
        tcp_listeners: old.tcp_listeners.clone(),
        gateway_tcp: old.gateway_tcp.clone(),
        peer_authentication: old.peer_authentication.clone(),
        authorization: old.authorization.clone(),
        request_authentication: old.request_authentication.clone(),
        extension_providers: old.extension_providers.clone(),
        inbound_authorization: old.inbound_authorization.clone(),
        inbound_request_authn: old.inbound_request_authn.clone(),
        inbound_app: old.inbound_app,
        gateway: None,
        tracing: old.tracing.clone(),
        services: old.services.clone(),
    };
    RoutesUpdate { snap, from }
}

/// Fills the slots `free` (ascending) with the virtual hosts at the end; old index →
/// new index of those moved.
fn fill_from_end(vhosts: &mut Vec<VirtualHost>, from: &mut Vec<Option<usize>>, free: Vec<usize>) -> HashMap<usize, usize> {
    let mut moved = HashMap::new();
    let mut dead: std::collections::BTreeSet<usize> = free.into_iter().collect();
    while let Some(slot) = dead.pop_first() {
        // (A dead host at the end is dropped; the last live one moves down.)
        while dead.last() == Some(&(vhosts.len() - 1)) {
            dead.pop_last();
            vhosts.pop();
            from.pop();
        }
        if slot >= vhosts.len() - 1 {
            vhosts.truncate(slot);
            from.truncate(slot);
            continue;
        }
        let last = vhosts.len() - 1;
        vhosts.swap_remove(slot);
        from.swap_remove(slot);
        // (Only old hosts move, each once: the new ones took the lowest slots.)
        moved.insert(last, slot);
    }
    moved
}
