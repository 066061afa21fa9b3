//! Endpoint deltas from the control plane applied in place (`incremental.rs`), on the
//! harness: the answers encoded as the control plane encodes them and taken as the
//! follower takes them (`follow::take`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_api::{MeshAnswer, MeshEncoder, MeshKind, RawValue};
use weft_proxy::cluster::Cluster;
use weft_proxy::follow::{take, Docs};
use weft_proxy::testing::*;

/// A ServiceEntry document for `host`: port 80 `http`, `endpoints` as (address, version).
fn se(host: &str, endpoints: &[(&str, &str)]) -> Box<RawValue> {
    let eps: Vec<String> =
        endpoints.iter().map(|(a, v)| format!(r#"{{"address":"{a}","ports":{{"http":80}},"labels":{{"version":"{v}"}}}}"#)).collect();
    raw(&format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"{host}","namespace":"default"}},"spec":{{"hosts":["{host}"],"resolution":"STATIC","ports":[{{"number":80,"name":"http","protocol":"HTTP"}}],"endpoints":[{}]}}}}"#,
        eps.join(",")
    ))
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

/// Subsets v1 and v2 for `a`; outlier detection for `b`.
fn rules() -> Vec<(&'static str, Box<RawValue>)> {
    vec![
        (
            "DestinationRule/default/a",
            raw(
                r#"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"a","namespace":"default"},"spec":{"host":"a","trafficPolicy":{"loadBalancer":{"simple":"ROUND_ROBIN"}},"subsets":[{"name":"v1","labels":{"version":"v1"}},{"name":"v2","labels":{"version":"v2"}}]}}"#,
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

/// The follower's state between answers.
struct Follower {
    docs: Docs,
    revision: u64,
    in_sync: bool,
}

impl Follower {
    fn new() -> Follower {
        Follower { docs: Docs::default(), revision: 0, in_sync: true }
    }

    /// Takes an answer of `kind` putting `put`, as the follower does: Err(reason) is a NACK.
    fn take(&mut self, h: &Harness, kind: MeshKind, put: &[(&str, &RawValue)]) -> Result<u64, String> {
        let mut e = MeshEncoder::new(self.revision + 1, kind);
        for (k, v) in put {
            e.put(k, v);
        }
        let bytes = e.finish().answer(self.revision + 1).to_vec();
        let answer = MeshAnswer::decode(&bytes).unwrap();
        let (outcome, _) = take(h.shared, &mut self.docs, &answer, self.revision, self.in_sync);
        self.revision = answer.revision;
        self.in_sync = outcome.is_ok();
        outcome.map_err(|(_, why)| why)
    }
}

fn cluster(h: &Harness, name: &str) -> Arc<Cluster> {
    let rt = h.shared.current.load();
    rt.clusters.iter().find(|c| c.spec.name == name).cloned().unwrap_or_else(|| panic!("no cluster {name}"))
}

fn addresses(c: &Cluster) -> Vec<&str> {
    c.endpoints.iter().map(|e| e.id.as_str()).collect()
}

fn in_place(h: &Harness) -> u64 {
    h.shared.metrics.counters.control_plane_in_place.load(Ordering::Relaxed)
}

const A1: &str = "10.0.0.1:80";
const A2: &str = "10.0.0.2:80";
const A3: &str = "10.0.0.3:80";
const B1: &str = "10.0.1.1:80";
const B2: &str = "10.0.1.2:80";

fn upstreams() -> Network {
    let net = Network::new();
    for a in [A1, A2, A3, B1, B2] {
        net.serve(addr(a), move |_| async move { answer(200, a) });
    }
    net
}

/// The whole mesh at start: a (A1 v1, A2 v2), b (B1, B2) and their rules.
fn start(h: &Harness, f: &mut Follower) {
    let (a, b) = (se("a", &[("10.0.0.1", "v1"), ("10.0.0.2", "v2")]), se("b", &[("10.0.1.1", "v1"), ("10.0.1.2", "v1")]));
    let rules = rules();
    let mut put: Vec<(&str, &RawValue)> = vec![("ServiceEntry/default/a", &a), ("ServiceEntry/default/b", &b)];
    put.extend(rules.iter().map(|(k, v)| (*k, &**v)));
    f.take(h, MeshKind::Full, &put).unwrap();
    assert_eq!(in_place(h), 0, "a whole mesh is compiled");
}

#[tokio::test(start_paused = true)]
async fn an_endpoints_delta_rebuilds_only_its_clusters_and_keeps_endpoint_state() {
    let net = upstreams();
    let h = Harness::new(&net, "");
    let mut f = Follower::new();
    start(&h, &mut f);
    // Traffic to both: requests counted, connections pooled; one of b's endpoints ejected.
    for _ in 0..4 {
        assert_eq!(h.get("b", "/").await.status, 200);
        assert_eq!(h.get("a", "/").await.status, 200);
    }
    // (b's balancer picks at random: until both of its endpoints hold a connection, as the
    // check below on new connections assumes; 4 requests left one without in 1 run of 8.)
    h.warm(&net, "b", &[addr(B1), addr(B2)]).await;
    let (a_before, b_before) = (cluster(&h, "outbound|80||a"), cluster(&h, "outbound|80||b"));
    let b2 = b_before.endpoints.iter().find(|e| e.id == B2).unwrap().clone();
    assert!(b_before.try_eject(&b2, weft_resilience::outlier::Reason::Consecutive5xx).is_some());
    let b_requests: Vec<u64> = b_before.endpoints.iter().map(|e| e.requests.load(Ordering::Relaxed)).collect();
    let b_connects = (net.connects(addr(B1)).len(), net.connects(addr(B2)).len());
    let a1_requests = a_before.endpoints[0].requests.load(Ordering::Relaxed);
    let snap = h.shared.current.load().snap.clone();

    // a: A2 leaves, A3 (v2) joins.
    let a = se("a", &[("10.0.0.1", "v1"), ("10.0.0.3", "v2")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &a)]).unwrap();
    assert_eq!(in_place(&h), 1, "applied in place");
    let rt = h.shared.current.load();
    assert!(Arc::ptr_eq(&rt.snap, &snap), "nothing was compiled again");
    // b: the same cluster, endpoints, counters, ejection and pooled connections.
    let b_after = cluster(&h, "outbound|80||b");
    assert!(Arc::ptr_eq(&b_before, &b_after), "b's cluster is untouched");
    assert_eq!(b_after.endpoints.iter().map(|e| e.requests.load(Ordering::Relaxed)).collect::<Vec<_>>(), b_requests);
    assert!(b2.health.ejection(weft_proxy::cluster::now_ns()).is_some(), "b2 is still ejected");
    // a: A1 kept with its state, A2 gone, A3 new; the subsets follow the labels.
    let a_after = cluster(&h, "outbound|80||a");
    assert_eq!(addresses(&a_after), [A1, A3]);
    assert!(Arc::ptr_eq(&a_before.endpoints[0], &a_after.endpoints[0]), "A1 keeps its state");
    assert_eq!(a_after.endpoints[0].requests.load(Ordering::Relaxed), a1_requests);
    assert_eq!(addresses(&cluster(&h, "outbound|80|v1|a")), [A1]);
    assert_eq!(addresses(&cluster(&h, "outbound|80|v2|a")), [A3]);
    // What a whole compile of the same documents makes, and what /config_dump shows.
    let (_, whole, diags) = f.docs.build_for(&h.shared.view, &h.shared.role);
    assert!(diags.is_ok());
    for spec in &whole.clusters {
        let ours = rt.specs.iter().find(|s| s.name == spec.name).unwrap();
        assert_eq!(serde_json::to_value(&**ours).unwrap(), serde_json::to_value(spec).unwrap(), "{}", spec.name);
    }
    let a_doc = rt.resources.iter().find(|r| r.metadata.name == "a" && r.kind == "ServiceEntry").unwrap();
    assert!(serde_json::to_string(&**a_doc).unwrap().contains("10.0.0.3"));

    // b keeps serving on its pooled connections; a reaches A3.
    for _ in 0..4 {
        assert_eq!(h.get("b", "/").await.status, 200);
    }
    assert_eq!((net.connects(addr(B1)).len(), net.connects(addr(B2)).len()), b_connects, "no new connection to b");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(h.get("a", "/").await.text().to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [A1, A3]);
}

#[tokio::test(start_paused = true)]
async fn an_endpoints_delta_that_cannot_apply_is_refused_and_the_old_state_serves() {
    let net = upstreams();
    let h = Harness::new(&net, "");
    let mut f = Follower::new();
    start(&h, &mut f);
    let before = h.shared.current.load_full();
    // A STATIC entry's endpoint that is no IP address: refused, nothing swapped.
    let bad = se("a", &[("10.0.0.1", "v1"), ("not-an-ip", "v2")]);
    let why = f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &bad)]).unwrap_err();
    assert!(why.contains("not-an-ip") && why.contains("control-plane ServiceEntry/default/a"), "{why}");
    assert!(Arc::ptr_eq(&before, &h.shared.current.load_full()), "the running config stays");
    assert_eq!(in_place(&h), 0);
    assert_eq!(h.get("a", "/").await.status, 200);
    // A label that is no label value: refused as well.
    let bad = se("a", &[("10.0.0.1", "v1/x")]);
    assert!(f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &bad)]).is_err());
    assert!(Arc::ptr_eq(&before, &h.shared.current.load_full()));

    // After a NACK the documents held are ahead of the runtime: the next delta is
    // compiled whole (it replaces the bad document, so it compiles).
    let good = se("a", &[("10.0.0.3", "v1")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &good)]).unwrap();
    assert_eq!(in_place(&h), 0, "compiled whole after a NACK");
    assert_eq!(addresses(&cluster(&h, "outbound|80||a")), [A3]);
    // Back in step: endpoint deltas go in place again; duplicated endpoints are kept as a
    // whole compile keeps them.
    let dup = se("a", &[("10.0.0.3", "v1"), ("10.0.0.3", "v1")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &dup)]).unwrap();
    assert_eq!(in_place(&h), 1);
    assert_eq!(addresses(&cluster(&h, "outbound|80||a")), [A3, A3]);
    // What is not endpoints alone is compiled whole: a new service, another port.
    let c = se("c", &[("10.0.0.1", "v1")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/c", &c)]).unwrap();
    let ported = raw(&se("a", &[("10.0.0.3", "v1")]).get().replace(r#""number":80"#, r#""number":81"#));
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &ported)]).unwrap();
    assert_eq!(in_place(&h), 1, "compiled whole");
    assert_eq!(h.get("c", "/").await.status, 200);
}

/// The mirror filter's cluster of `host`'s first route.
fn mirror_of(h: &Harness, host: &str) -> Arc<Cluster> {
    let rt = h.shared.current.load();
    let vi = rt.snap.exact_hosts[host];
    rt.chains[vi][0]
        .filters
        .iter()
        .find_map(|f| if let weft_proxy::filters::Filter::Mirror(m) = f { Some(m.default.clone()) } else { None })
        .expect("a mirror filter")
}

#[tokio::test(start_paused = true)]
async fn a_route_mirroring_to_a_changed_cluster_mirrors_to_the_new_one() {
    let net = upstreams();
    let h = Harness::new(&net, "");
    let mut f = Follower::new();
    start(&h, &mut f);
    let vs = raw(
        r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"b","namespace":"default"},"spec":{"hosts":["b"],"http":[{"route":[{"destination":{"host":"b"}}],"mirror":{"host":"a"}}]}}"#,
    );
    f.take(&h, MeshKind::Delta, &[("VirtualService/default/b", &vs)]).unwrap();
    assert_eq!(in_place(&h), 1, "a VirtualService added in place");
    assert!(Arc::ptr_eq(&mirror_of(&h, "b"), &cluster(&h, "outbound|80||a")));
    let chains = h.shared.current.load().chains.clone();
    // a changes in place: b's chain now mirrors to a's new cluster; b's own is untouched.
    let a = se("a", &[("10.0.0.3", "v1")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/a", &a)]).unwrap();
    assert_eq!(in_place(&h), 2);
    assert!(!Arc::ptr_eq(&chains, &h.shared.current.load().chains), "chains made again");
    assert!(Arc::ptr_eq(&mirror_of(&h, "b"), &cluster(&h, "outbound|80||a")), "the mirror follows a's new cluster");
    assert_eq!(addresses(&mirror_of(&h, "b")), [A3]);
    // A change to b (which nothing mirrors to) shares the chains.
    let chains = h.shared.current.load().chains.clone();
    let b = se("b", &[("10.0.1.1", "v1")]);
    f.take(&h, MeshKind::Delta, &[("ServiceEntry/default/b", &b)]).unwrap();
    assert_eq!(in_place(&h), 3);
    assert!(Arc::ptr_eq(&chains, &h.shared.current.load().chains), "chains shared");
    assert_eq!(h.get("b", "/").await.text(), B1);
}
