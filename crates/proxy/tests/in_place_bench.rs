//! What an endpoint change costs a proxy that follows the whole mesh, at 10,000
//! services of 10 endpoints: the answers encoded as the control plane encodes them and
//! taken as the follower takes them (`follow::take`), timed on this thread. Not run by
//! default (it wants a release build):
//!
//! ```sh
//! cargo test --release -p weft-proxy --test in_place_bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use weft_api::{MeshAnswer, MeshEncoder, MeshKind, RawValue};
use weft_proxy::follow::{take, Docs};
use weft_proxy::testing::*;

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

/// Service `i`'s ServiceEntry (as scripts/cp_scale.py makes them) with `extra` more endpoints.
fn se(i: usize, extra: usize) -> Box<RawValue> {
    let eps: Vec<String> = (0..ENDPOINTS + extra)
        .map(|k| {
            format!(
                r#"{{"address":"10.{}.{}.{}","ports":{{"http":8080}},"labels":{{"version":"v{}"}}}}"#,
                (i >> 8) & 255,
                i & 255,
                k + 1,
                k % 3
            )
        })
        .collect();
    RawValue::from_string(format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"hosts":["svc-{i}.mesh"],"resolution":"STATIC","ports":[{{"number":80,"name":"http","protocol":"HTTP"}}],"endpoints":[{}]}}}}"#,
        eps.join(",")
    ))
    .unwrap()
}

fn answer(revision: u64, kind: MeshKind, docs: &[(usize, Box<RawValue>)]) -> Vec<u8> {
    let mut e = MeshEncoder::new(revision, kind);
    for (i, d) in docs {
        e.put(&format!("ServiceEntry/default/svc-{i}"), d);
    }
    e.finish().answer(revision).to_vec()
}

struct Follower<'a> {
    h: &'a Harness,
    docs: Docs,
    revision: u64,
}

impl Follower<'_> {
    /// Takes an answer holding `docs` (compiled whole unless `in_place`); how long it took.
    fn take(&mut self, docs: &[(usize, Box<RawValue>)], in_place: bool) -> Duration {
        let kind = if self.revision == 0 { MeshKind::Full } else { MeshKind::Delta };
        let bytes = answer(self.revision + 1, kind, docs);
        let started = Instant::now();
        let a = MeshAnswer::decode(&bytes).unwrap();
        let (outcome, _) = take(self.h.shared, &mut self.docs, &a, self.revision, in_place);
        let took = started.elapsed();
        assert!(outcome.is_ok(), "{outcome:?}");
        self.revision += 1;
        took
    }
}

fn pct(xs: &mut [Duration], p: f64) -> f64 {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p / 100.0).round() as usize].as_secs_f64() * 1000.0
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn endpoint_changes_at_10k_services() {
    let net = Network::new();
    let h = Harness::new(&net, "");
    let mut f = Follower { h: &h, docs: Docs::default(), revision: 0 };
    let all: Vec<(usize, Box<RawValue>)> = (0..SERVICES).map(|i| (i, se(i, 0))).collect();
    let t = f.take(&all, true);
    println!("{SERVICES} services x {ENDPOINTS} endpoints: the whole mesh compiled and installed in {:.0} ms", t.as_secs_f64() * 1000.0);

    // One endpoint added to a service, then removed again: before (compiled whole) and now.
    let mut whole: Vec<Duration> = (0..6).map(|n| f.take(&[(n * 7, se(n * 7, n % 2))], false)).collect();
    let in_place = h.metric("weft_control_plane_in_place_updates_total", &[]);
    let mut one: Vec<Duration> = (0..400).map(|n| f.take(&[(n / 2 * 13 % SERVICES, se(n / 2 * 13 % SERVICES, 1 - n % 2))], true)).collect();
    assert_eq!(h.metric("weft_control_plane_in_place_updates_total", &[]) - in_place, 400.0, "all in place");
    println!(
        "one endpoint change, taken: compiled whole p50 {:.0} ms (max {:.0}); in place p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&mut whole, 50.0),
        pct(&mut whole, 100.0),
        pct(&mut one, 50.0),
        pct(&mut one, 99.0),
        pct(&mut one, 100.0)
    );

    // 1,000 changes a second reach a proxy as ~20 deltas of ~50 services (50 ms coalescing):
    // 10 s of them, one after another.
    let mut spent = Duration::ZERO;
    let mut each = Vec::new();
    for d in 0..200 {
        let docs: Vec<(usize, Box<RawValue>)> = (0..50).map(|k| (d * 50 + k, se(d * 50 + k, 1 + d % 2))).collect();
        let t = f.take(&docs, true);
        spent += t;
        each.push(t);
    }
    println!(
        "10,000 endpoint changes in 200 deltas of 50 services: {:.0} ms of one core in all (each delta p50 {:.1} ms, p99 {:.1} ms): {:.3} cores at 1,000 changes/s",
        spent.as_secs_f64() * 1000.0,
        pct(&mut each, 50.0),
        pct(&mut each, 99.0),
        spent.as_secs_f64() / 10.0
    );
}
