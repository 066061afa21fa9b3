//! VirtualService changes applied in place (`routes_in_place`) against the whole compile:
//! for random meshes and random sequences of VirtualService edits, every snapshot the
//! fast path makes routes every host as the whole compile of the same documents does.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use weft_config::routes_in_place::{update_routes, RoutesOutcome, VsEdit};
use weft_config::{ClusterSpec, Diagnostics, Resource, Role, Snapshot, View};

/// A small deterministic generator (the proptest seed drives it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Service `i`'s host: a Kubernetes FQDN (even) or a plain one (odd).
fn host(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("s{i}.default.svc.cluster.local")
    } else {
        format!("s{i}.mesh")
    }
}

/// How a VirtualService names service `i`: the short name of a Kubernetes one, or as is.
fn written(i: usize, rng: &mut Rng) -> String {
    if i.is_multiple_of(2) && rng.chance(50) {
        format!("s{i}")
    } else {
        host(i)
    }
}

fn service_entry(i: usize, two_ports: bool) -> Value {
    let mut ports = vec![json!({"number": 80, "name": "http", "protocol": "HTTP"})];
    if two_ports {
        ports.push(json!({"number": 8080, "name": "alt", "protocol": "HTTP"}));
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": format!("s{i}"), "namespace": "default"},
        "spec": {"hosts": [host(i)], "resolution": "STATIC", "ports": ports,
            "endpoints": [{"address": format!("10.0.{i}.1"), "labels": {"version": "v1"}}, {"address": format!("10.0.{i}.2"), "labels": {"version": "v2"}}]}})
}

fn destination_rule(i: usize) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": format!("s{i}"), "namespace": "default"},
        "spec": {"host": host(i), "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}})
}

/// A destination among `n` services: mostly a declared one, sometimes with a subset or
/// a port; now and then a host nothing declares (a cluster only routes make).
fn destination(n: usize, rng: &mut Rng) -> Value {
    if rng.chance(3) {
        return json!({"host": "nowhere.mesh"});
    }
    let i = rng.below(n);
    let mut d = json!({"host": written(i, rng)});
    // (Services with a multiple of 3 have subsets, [`mesh`]; others rarely get one.)
    if rng.chance(if i.is_multiple_of(3) { 40 } else { 3 }) {
        d["subset"] = json!(if rng.chance(50) { "v1" } else { "v2" });
    }
    if rng.chance(20) {
        d["port"] = json!({"number": 80});
    }
    d
}

fn http_route(k: usize, n: usize, rng: &mut Rng) -> Value {
    let mut route = json!({"name": format!("r{k}")});
    match rng.below(4) {
        0 => route["match"] = json!([{"uri": {"prefix": format!("/p{k}")}}]),
        1 => route["match"] = json!([{"headers": {"x-k": {"exact": format!("{k}")}}}]),
        2 => route["match"] = json!([{"uri": {"regex": format!("/re{k}/[a-z]+")}}]),
        _ => {}
    }
    match rng.below(10) {
        0 => route["redirect"] = json!({"uri": "/moved"}),
        1 => route["directResponse"] = json!({"status": 204}),
        _ => {
            let (a, b) = (destination(n, rng), destination(n, rng));
            route["route"] = if rng.chance(50) {
                json!([{"destination": a}])
            } else {
                json!([{"destination": a, "weight": 30}, {"destination": b, "weight": 70}])
            };
            if rng.chance(15) {
                route["mirror"] = destination(n, rng);
            }
        }
    }
    route
}

/// VirtualService `name` for service `i` (now and then another's host too).
fn virtual_service(name: &str, i: usize, n: usize, rng: &mut Rng) -> Value {
    let mut hosts = vec![written(i, rng)];
    if rng.chance(4) {
        hosts.push(written(rng.below(n), rng));
    }
    let routes: Vec<Value> = (0..1 + rng.below(3)).map(|k| http_route(k, n, rng)).collect();
    let mut vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": hosts, "http": routes}});
    if rng.chance(5) {
        vs["spec"]["http"][0]["match"] = json!([{"uri": {"regex": "(unclosed"}}]);
    }
    vs
}

/// The mesh's documents by key, as the control plane sends them.
type Mesh = BTreeMap<String, Value>;

fn mesh(rng: &mut Rng) -> (Mesh, usize) {
    let n = 3 + rng.below(4);
    let mut m = Mesh::new();
    for i in 0..n {
        m.insert(format!("ServiceEntry/s{i}"), service_entry(i, rng.chance(30)));
        if i.is_multiple_of(3) {
            m.insert(format!("DestinationRule/s{i}"), destination_rule(i));
        }
        if rng.chance(60) {
            m.insert(format!("VirtualService/vs{i}"), virtual_service(&format!("vs{i}"), i, n, rng));
        }
    }
    (m, n)
}

fn load(key: &str, doc: &Value) -> Resource {
    let mut out = Vec::new();
    let mut d = Diagnostics::default();
    weft_config::load_str(&format!("control-plane {key}"), &doc.to_string(), &mut out, &mut d);
    assert!(d.is_ok() && out.len() == 1, "{:?}", d.errors);
    out.remove(0)
}

fn resources(m: &Mesh) -> Vec<Resource> {
    m.iter().map(|(k, v)| load(k, v)).collect()
}

/// What a snapshot routes, host by host, with the clusters by name: the text of every
/// reachable virtual host, and every other part of the snapshot.
fn routing(snap: &Snapshot, clusters: &[String]) -> String {
    let mut out = format!("clusters {clusters:?}\nvhosts {}\n", snap.vhosts.len());
    let by_host: BTreeMap<_, _> = snap.exact_hosts.iter().collect();
    for (h, &i) in by_host {
        out += &format!("{h} -> {:?}\n", snap.vhosts[i]);
    }
    let mut all: Vec<String> = snap.vhosts.iter().map(|v| format!("{v:?}")).collect();
    all.sort();
    for (s, i) in &snap.wildcard_hosts {
        out += &format!("*{s} -> {:?}\n", snap.vhosts[*i]);
    }
    out += &format!("catch-all {:?}\nall {all:?}\n", snap.catch_all.map(|i| &snap.vhosts[i]));
    out += &format!("tls {:?}\ntcp {:?}\nservices {:?}\n", snap.tls_routes, snap.tcp_listeners, snap.services);
    out
}

/// The edits that take `before` to `after`.
fn edits(before: &Mesh, after: &Mesh) -> Vec<VsEdit> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| VsEdit { old: before.get(k).map(|v| load(k, v)), new: after.get(k).map(|v| load(k, v)) })
        .collect()
}

/// A VirtualService host as the FQDN it names.
fn served_host(h: &Value) -> String {
    let h = h.as_str().unwrap_or_default();
    if h.contains('.') {
        h.to_owned()
    } else {
        format!("{h}.default.svc.cluster.local")
    }
}

/// One random change to the VirtualServices of `m` (of `n` services).
fn change(m: &Mesh, n: usize, rng: &mut Rng) -> Mesh {
    let mut next = m.clone();
    let vss: Vec<String> = m.keys().filter(|k| k.starts_with("VirtualService/")).cloned().collect();
    let vs_docs = m.iter().filter(|(k, _)| k.starts_with("VirtualService/")).map(|(_, v)| v);
    let served: Vec<String> =
        vs_docs.flat_map(|v| v["spec"]["hosts"].as_array().cloned().unwrap_or_default()).map(|h| served_host(&h)).collect();
    let unserved: Vec<usize> = (0..n).filter(|i| !served.contains(&host(*i)) || rng.chance(5)).collect();
    let i = if unserved.is_empty() { rng.below(n) } else { unserved[rng.below(unserved.len())] };
    match rng.below(4) {
        0 if !vss.is_empty() => {
            next.remove(&vss[rng.below(vss.len())]);
        }
        1 => {
            let name = format!("added{}", rng.below(1000));
            next.insert(format!("VirtualService/{name}"), virtual_service(&name, i, n, rng));
        }
        _ if !vss.is_empty() => {
            let key = &vss[rng.below(vss.len())];
            let name = key.trim_start_matches("VirtualService/");
            let old_host = m[key]["spec"]["hosts"][0].as_str().unwrap_or_default().trim_start_matches('s').split('.').next().unwrap_or("0");
            let i = if rng.chance(95) { old_host.parse().unwrap_or(i) } else { i };
            next.insert(key.clone(), virtual_service(name, i, n, rng));
        }
        _ => {}
    }
    next
}

/// The whole compile: (snapshot with its clusters taken out, their specs, diagnostics).
fn whole(m: &Mesh) -> (Vec<Resource>, Snapshot, Vec<Arc<ClusterSpec>>, Diagnostics) {
    let rs = resources(m);
    let mut d = Diagnostics::default();
    let mut snap = weft_config::compile_in(&rs, &View::default(), &mut d);
    let specs = std::mem::take(&mut snap.clusters).into_iter().map(Arc::new).collect();
    (rs, snap, specs, d)
}

fn names(specs: &[Arc<ClusterSpec>]) -> Vec<String> {
    specs.iter().map(|s| s.name.clone()).collect()
}

/// Counts of (in place, refused, whole) over one sequence of changes from a random mesh.
fn check_sequence(seed: u64) -> [usize; 3] {
    let mut rng = Rng(seed | 1);
    let (mut m, n) = mesh(&mut rng);
    let (_, mut snap, mut specs, d) = whole(&m);
    let mut counts = [0; 3];
    if !d.is_ok() {
        return counts;
    }
    for _ in 0..4 {
        let next = change(&m, n, &mut rng);
        let held: Vec<Arc<Resource>> = resources(&m).into_iter().map(Arc::new).collect();
        let mut diags = Diagnostics::default();
        let outcome = update_routes(&snap, &specs, &held, &edits(&m, &next), &View::default(), &Role::Sidecar, &mut diags);
        let (_, w_snap, w_specs, w_diags) = whole(&next);
        match outcome {
            RoutesOutcome::Updated(u) => {
                assert!(diags.is_ok() && w_diags.is_ok(), "{:?} / {:?}", diags.errors, w_diags.errors);
                assert_eq!(u.from.len(), u.snap.vhosts.len());
                assert_eq!(routing(&u.snap, &names(&specs)), routing(&w_snap, &names(&w_specs)), "seed {seed}");
                (m, snap) = (next, u.snap);
                counts[0] += 1;
            }
            RoutesOutcome::Refused => {
                assert!(!diags.is_ok(), "refused without an error");
                let mut whole_errors: Vec<String> = w_diags.errors.iter().map(|e| e.to_string()).collect();
                whole_errors.sort();
                let mut ours: Vec<String> = diags.errors.iter().map(|e| e.to_string()).collect();
                ours.sort();
                assert_eq!(ours, whole_errors, "the whole compile refuses it for the same reasons");
                counts[1] += 1;
            }
            RoutesOutcome::Whole(_) => {
                counts[2] += 1;
                if w_diags.is_ok() {
                    (m, snap, specs) = (next, w_snap, w_specs);
                }
            }
        }
    }
    counts
}

#[test]
fn vs_edits_in_place_route_as_the_whole_compile_does() {
    let mut total = [0; 3];
    for seed in 1..400u64 {
        let c = check_sequence(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..3).for_each(|k| total[k] += c[k]);
    }
    // (Most edits qualify; the rest exercise refusals and the fallback.)
    assert!(total[0] > total[2] && total[1] > 10 && total[2] > 10, "in place, refused, whole: {total:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_seed_routes_as_the_whole_compile(seed in any::<u64>()) {
        check_sequence(seed);
    }
}
