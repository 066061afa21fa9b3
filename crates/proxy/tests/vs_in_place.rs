//! VirtualService deltas from the control plane applied in place (`incremental.rs`,
//! `weft_config::routes_in_place`), on the harness: the answers encoded as the control
//! plane encodes them and taken as the follower takes them (`follow::take`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_api::{MeshAnswer, MeshEncoder, MeshKind, RawValue};
use weft_proxy::cluster::Cluster;
use weft_proxy::follow::{take, Docs};
use weft_proxy::testing::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

/// A ServiceEntry document for `host`: port 80 `http`, `endpoints` as (address, version).
fn se(host: &str, endpoints: &[(&str, &str)]) -> Box<RawValue> {
    let eps: Vec<String> =
        endpoints.iter().map(|(a, v)| format!(r#"{{"address":"{a}","ports":{{"http":80}},"labels":{{"version":"{v}"}}}}"#)).collect();
    raw(&format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"{host}","namespace":"default"}},"spec":{{"hosts":["{host}"],"resolution":"STATIC","ports":[{{"number":80,"name":"http","protocol":"HTTP"}}],"endpoints":[{}]}}}}"#,
        eps.join(",")
    ))
}

/// VirtualService `name` for `hosts` with these `http` routes (JSON).
fn vs(name: &str, hosts: &str, http: &str) -> Box<RawValue> {
    raw(&format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"hosts":{hosts},"http":{http}}}}}"#
    ))
}

/// a's requests to one subset.
fn a_to(subset: &str) -> Box<RawValue> {
    vs("a", r#"["a"]"#, &format!(r#"[{{"route":[{{"destination":{{"host":"a","subset":"{subset}"}}}}]}}]"#))
}

fn rules() -> Vec<(&'static str, Box<RawValue>)> {
    vec![
        (
            "DestinationRule/default/a",
            raw(
                r#"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"a","namespace":"default"},"spec":{"host":"a","subsets":[{"name":"v1","labels":{"version":"v1"}},{"name":"v2","labels":{"version":"v2"}}]}}"#,
            ),
        ),
        (
            "DestinationRule/default/b",
            raw(
                r#"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"b","namespace":"default"},"spec":{"host":"b","trafficPolicy":{"outlierDetection":{"consecutive5xxErrors":3,"interval":"10s","baseEjectionTime":"60s","maxEjectionPercent":50}}}}"#,
            ),
        ),
    ]
}

struct Follower {
    docs: Docs,
    revision: u64,
    in_sync: bool,
}

impl Follower {
    /// Takes a delta (or, `full`, the whole mesh) putting `put` and removing `remove`.
    fn take(&mut self, h: &Harness, full: bool, put: &[(&str, &RawValue)], remove: &[&str]) -> Result<u64, String> {
        let kind = if full { MeshKind::Full } else { MeshKind::Delta };
        let mut e = MeshEncoder::new(self.revision + 1, kind);
        for (k, v) in put {
            e.put(k, v);
        }
        for k in remove {
            e.remove(k);
        }
        let bytes = e.finish().answer(self.revision + 1).to_vec();
        let answer = MeshAnswer::decode(&bytes).unwrap();
        let (outcome, _) = take(h.shared, &mut self.docs, &answer, self.revision, self.in_sync);
        self.revision = answer.revision;
        self.in_sync = outcome.is_ok();
        outcome.map_err(|(_, why)| why)
    }

    fn delta(&mut self, h: &Harness, put: &[(&str, &RawValue)]) -> Result<u64, String> {
        self.take(h, false, put, &[])
    }
}

const A1: &str = "10.0.0.1:80";
const A2: &str = "10.0.0.2:80";
const B1: &str = "10.0.1.1:80";
const B2: &str = "10.0.1.2:80";

fn upstreams() -> Network {
    let net = Network::new();
    for a in [A1, A2, B1, B2] {
        net.serve(addr(a), move |_| async move { answer(200, a) });
    }
    net
}

/// (in place, of which VirtualServices) as the metrics count them.
fn counts(h: &Harness) -> (u64, u64) {
    let c = &h.shared.metrics.counters;
    (c.control_plane_in_place.load(Ordering::Relaxed), c.control_plane_routes_in_place.load(Ordering::Relaxed))
}

fn cluster(h: &Harness, name: &str) -> Arc<Cluster> {
    let rt = h.shared.current.load();
    rt.clusters.iter().find(|c| c.spec.name == name).cloned().unwrap_or_else(|| panic!("no cluster {name}"))
}

/// The backends answering `n` requests for `host`.
async fn spread(h: &Harness, host: &str, n: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        seen.insert(h.get(host, "/").await.text().to_owned());
    }
    seen.into_iter().collect()
}

/// The whole mesh at start: a (A1 v1, A2 v2) routed to v1 by a VirtualService, b (B1, B2).
fn start(h: &Harness, f: &mut Follower) {
    let (a, b, vs_a) = (se("a", &[("10.0.0.1", "v1"), ("10.0.0.2", "v2")]), se("b", &[("10.0.1.1", "v1"), ("10.0.1.2", "v1")]), a_to("v1"));
    let rules = rules();
    let mut put: Vec<(&str, &RawValue)> =
        vec![("ServiceEntry/default/a", &a), ("ServiceEntry/default/b", &b), ("VirtualService/default/a", &vs_a)];
    put.extend(rules.iter().map(|(k, v)| (*k, &**v)));
    f.take(h, true, &put, &[]).unwrap();
}

/// The running routes for `host` are what the whole compile of the documents held
/// makes (the same text, the same clusters).
fn assert_routes_as_whole(h: &Harness, f: &Follower, host: &str) {
    let rt = h.shared.current.load();
    let ours = rt.snap.vhost(host).map(|v| format!("{v:?}"));
    let (_, whole, diags) = f.docs.build_for(&h.shared.view, &h.shared.role);
    assert!(diags.is_ok(), "{:?}", diags.errors);
    let names: Vec<&str> = rt.specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, whole.clusters.iter().map(|s| s.name.as_str()).collect::<Vec<_>>());
    assert_eq!(ours, whole.vhost(host).map(|v| format!("{v:?}")), "{host}");
}

#[tokio::test(start_paused = true)]
async fn a_vs_delta_reroutes_its_host_and_leaves_other_services_untouched() {
    let net = upstreams();
    let h = Harness::new(&net, "");
    let mut f = Follower::new();
    start(&h, &mut f);
    assert_eq!(spread(&h, "a", 10).await, [A1], "a goes to v1");
    // b: traffic on pooled connections, B2 ejected.
    // (Until both of b's endpoints hold a connection, as the check below on new
    // connections assumes: 4 requests left one without in a full-suite run.)
    h.warm(&net, "b", &[addr(B1), addr(B2)]).await;
    let b_before = cluster(&h, "outbound|80||b");
    let b2 = b_before.endpoints.iter().find(|e| e.id == B2).unwrap().clone();
    assert!(b_before.try_eject(&b2, weft_resilience::outlier::Reason::Consecutive5xx).is_some());
    let b_requests: Vec<u64> = b_before.endpoints.iter().map(|e| e.requests.load(Ordering::Relaxed)).collect();
    let b_connects = (net.connects(addr(B1)).len(), net.connects(addr(B2)).len());
    let before = h.shared.current.load_full();
    let b_vhost = before.snap.vhost_index("b").unwrap();

    // a's VirtualService now sends a to v2: only a's virtual host is compiled again.
    f.delta(&h, &[("VirtualService/default/a", &a_to("v2"))]).unwrap();
    assert_eq!(counts(&h), (1, 1), "applied in place");
    let rt = h.shared.current.load_full();
    assert!(!Arc::ptr_eq(&rt.snap, &before.snap));
    assert!(rt.clusters.iter().zip(&before.clusters).all(|(x, y)| Arc::ptr_eq(x, y)), "every cluster is shared");
    let b_now = rt.snap.vhost_index("b").unwrap();
    assert!(Arc::ptr_eq(&rt.snap.vhosts[b_now].routes[0], &before.snap.vhosts[b_vhost].routes[0]), "b's route is shared");
    assert!(Arc::ptr_eq(&rt.chains[b_now][0], &before.chains[b_vhost][0]), "b's chain is shared");
    assert!(Arc::ptr_eq(&rt.live, &before.live));
    assert_routes_as_whole(&h, &f, "a");
    assert_eq!(spread(&h, "a", 10).await, [A2], "a goes to v2");
    // b: the same endpoints, counters, ejection and connections.
    assert_eq!(b_before.endpoints.iter().map(|e| e.requests.load(Ordering::Relaxed)).collect::<Vec<_>>(), b_requests);
    assert!(b2.health.ejection(weft_proxy::cluster::now_ns()).is_some(), "B2 is still ejected");
    for _ in 0..4 {
        assert_eq!(h.get("b", "/").await.text(), B1);
    }
    assert_eq!((net.connects(addr(B1)).len(), net.connects(addr(B2)).len()), b_connects, "no new connection to b");

    // Removed: a's ServiceEntry route serves it again (both versions).
    f.take(&h, false, &[], &["VirtualService/default/a"]).unwrap();
    assert_eq!(counts(&h), (2, 2));
    assert_routes_as_whole(&h, &f, "a");
    assert_eq!(spread(&h, "a", 30).await, [A1, A2]);
    // Added again, with a change of b's endpoints in the same delta: both in place.
    let b = se("b", &[("10.0.1.1", "v1")]);
    f.delta(&h, &[("VirtualService/default/a", &a_to("v1")), ("ServiceEntry/default/b", &b)]).unwrap();
    assert_eq!(counts(&h), (3, 3));
    assert_eq!(spread(&h, "a", 10).await, [A1]);
    assert_eq!(spread(&h, "b", 10).await, [B1]);
    assert_routes_as_whole(&h, &f, "a");
    assert_routes_as_whole(&h, &f, "b");
    // What the fast path does not take is compiled whole: a host nothing declares (a
    // new cluster), a second VirtualService for a host.
    let to_c = vs("a", r#"["a"]"#, r#"[{"route":[{"destination":{"host":"c"}}]}]"#);
    f.delta(&h, &[("VirtualService/default/a", &to_c)]).unwrap();
    assert_eq!(counts(&h), (3, 3), "compiled whole");
    assert_eq!(h.get("a", "/").await.status, 503);
    f.delta(&h, &[("VirtualService/default/a", &a_to("v2")), ("VirtualService/default/a2", &a_to("v1"))]).unwrap();
    assert_eq!(counts(&h), (3, 3), "compiled whole");
    assert_eq!(spread(&h, "a", 10).await, [A2], "the first VirtualService for a host is kept");
}

#[tokio::test(start_paused = true)]
async fn a_hostile_vs_is_refused_and_the_old_routes_serve() {
    let net = upstreams();
    let h = Harness::new(&net, "");
    let mut f = Follower::new();
    start(&h, &mut f);
    let huge = format!(r#"[{{"match":[{{"uri":{{"regex":"{}"}}}}],"route":[{{"destination":{{"host":"a"}}}}]}}]"#, "(a{1000}){1000}");
    let hostile = [
        ("invalid regex", vs("a", r#"["a"]"#, r#"[{"match":[{"uri":{"regex":"(unclosed"}}],"route":[{"destination":{"host":"a"}}]}]"#)),
        ("duplicate hosts", vs("a", r#"["a","A"]"#, r#"[{"route":[{"destination":{"host":"a"}}]}]"#)),
        ("invalid regex", vs("a", r#"["a"]"#, &huge)),
        (
            "add up to 0",
            vs("a", r#"["a"]"#, r#"[{"route":[{"destination":{"host":"a"},"weight":0},{"destination":{"host":"b"},"weight":0}]}]"#),
        ),
    ];
    for (why, doc) in &hostile {
        let before = h.shared.current.load_full();
        let err = f.delta(&h, &[("VirtualService/default/a", doc)]).unwrap_err();
        assert!(err.contains(why) && err.contains("control-plane VirtualService/default/a"), "{err}");
        assert!(Arc::ptr_eq(&before, &h.shared.current.load_full()), "the running config stays");
        assert_eq!(spread(&h, "a", 10).await, [A1], "a still goes to v1");
        // (The documents held now have the bad one: put the good one back, whole.)
        f.delta(&h, &[("VirtualService/default/a", &a_to("v1"))]).unwrap();
    }
    assert_eq!(counts(&h), (0, 0), "nothing hostile went in");
    // Back in step, a good change goes in place.
    f.delta(&h, &[("VirtualService/default/a", &a_to("v2"))]).unwrap();
    assert_eq!(counts(&h), (1, 1));
    assert_eq!(spread(&h, "a", 10).await, [A2]);
}

impl Follower {
    fn new() -> Follower {
        Follower { docs: Docs::default(), revision: 0, in_sync: true }
    }
}
