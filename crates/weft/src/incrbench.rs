//! `weft x bench-incremental`: what an endpoint change costs a proxy that follows the
//! whole mesh, without sockets: `--services` ServiceEntries of `--endpoints` endpoints
//! (as scripts/cp_scale.py makes them) encoded as the control plane encodes answers and
//! taken as a following proxy takes them (`weft_proxy::follow::take`), timed on this
//! thread — one endpoint change compiled whole (as before updates in place) and in
//! place, 10 s worth of `--rate` changes a second in deltas of `rate / 20` services
//! (the control plane coalesces pushes every 50 ms), then with `--virtual-services`
//! VirtualServices (and DestinationRules with subsets) for the first services, one
//! VirtualService change compiled whole and in place.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft_api::{MeshAnswer, MeshEncoder, MeshKind, RawValue};
use weft_proxy::follow::{take, Docs};
use weft_proxy::state::{ConfigSource, Shared};

#[derive(clap::Args)]
pub struct IncrBenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Endpoint changes a second for the sustained part.
    #[arg(long, default_value_t = 1000)]
    pub rate: usize,
    /// VirtualServices (each with a DestinationRule) for the VirtualService part.
    #[arg(long, default_value_t = 1000)]
    pub virtual_services: usize,
}

/// Service `i`'s DestinationRule: a subset per version.
fn dr(i: usize) -> Box<RawValue> {
    let text = format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"host":"svc-{i}.mesh","subsets":[{{"name":"v0","labels":{{"version":"v0"}}}},{{"name":"v1","labels":{{"version":"v1"}}}}]}}}}"#
    );
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Service `i`'s VirtualService: `/canary` to v1, the rest split between v0 and v1.
fn vs(i: usize, canary_weight: u32) -> Box<RawValue> {
    let text = format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"hosts":["svc-{i}.mesh"],"http":[{{"match":[{{"uri":{{"prefix":"/canary"}}}}],"route":[{{"destination":{{"host":"svc-{i}.mesh","subset":"v1"}}}}]}},{{"route":[{{"destination":{{"host":"svc-{i}.mesh","subset":"v0"}},"weight":{}}},{{"destination":{{"host":"svc-{i}.mesh","subset":"v1"}},"weight":{canary_weight}}}]}}]}}}}"#,
        100 - canary_weight
    );
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Service `i`'s ServiceEntry with `n` endpoints.
fn se(i: usize, n: usize) -> Box<RawValue> {
    let eps: Vec<String> = (0..n)
        .map(|k| {
            let (a, b, c) = ((i >> 8) & 255, i & 255, k + 1);
            format!(r#"{{"address":"10.{a}.{b}.{c}","ports":{{"http":8080}},"labels":{{"version":"v{}"}}}}"#, k % 3)
        })
        .collect();
    let text = format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"hosts":["svc-{i}.mesh"],"resolution":"STATIC","ports":[{{"number":80,"name":"http","protocol":"HTTP"}}],"endpoints":[{}]}}}}"#,
        eps.join(",")
    );
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

struct Follower {
    shared: &'static Shared,
    docs: Docs,
    revision: u64,
}

impl Follower {
    /// Takes an answer holding ServiceEntries `docs` (compiled whole unless `in_place`);
    /// how long it took.
    fn take(&mut self, docs: &[(usize, Box<RawValue>)], in_place: bool) -> Result<Duration, String> {
        let keyed: Vec<(String, &RawValue)> = docs.iter().map(|(i, d)| (format!("ServiceEntry/default/svc-{i}"), &**d)).collect();
        self.take_keyed(&keyed, in_place)
    }

    /// [`Follower::take`] of documents by key.
    fn take_keyed(&mut self, docs: &[(String, &RawValue)], in_place: bool) -> Result<Duration, String> {
        let kind = if self.revision == 0 { MeshKind::Full } else { MeshKind::Delta };
        let mut e = MeshEncoder::new(self.revision + 1, kind);
        for (k, d) in docs {
            e.put(k, d);
        }
        let bytes = e.finish().answer(self.revision + 1).to_vec();
        let started = Instant::now();
        let a = MeshAnswer::decode(&bytes).map_err(|e| e.to_string())?;
        let (outcome, _) = take(self.shared, &mut self.docs, &a, self.revision, in_place);
        let took = started.elapsed();
        outcome.map_err(|(_, why)| why)?;
        self.revision += 1;
        Ok(took)
    }
}

fn ms(xs: &mut [Duration], p: f64) -> f64 {
    xs.sort();
    xs.get(((xs.len().max(1) - 1) as f64 * p / 100.0).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub fn run(a: IncrBenchArgs) -> ExitCode {
    match bench(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft x bench-incremental: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(a: &IncrBenchArgs) -> Result<(), String> {
    let (resources, snap, _) = weft_config::build_str("bench", "");
    let opts = weft_proxy::ProxyOptions::default();
    let shared = weft_proxy::build_shared(resources, snap, ConfigSource::ControlPlane("bench".into()), &opts, Default::default());
    let mut f = Follower { shared, docs: Docs::default(), revision: 0 };
    let (n, e) = (a.services.max(1), a.endpoints);
    let all: Vec<(usize, Box<RawValue>)> = (0..n).map(|i| (i, se(i, e))).collect();
    let t = f.take(&all, true)?;
    println!("{n} services x {e} endpoints: the whole mesh compiled and installed in {:.0} ms", t.as_secs_f64() * 1000.0);
    // One endpoint added to a service, then removed again: compiled whole, and in place.
    let one = |k: usize| (k / 2 * 13 % n, se(k / 2 * 13 % n, e + 1 - k % 2));
    let mut whole = (0..6).map(|k| f.take(&[one(k)], false)).collect::<Result<Vec<_>, _>>()?;
    let in_place = || shared.metrics.counters.control_plane_in_place.load(std::sync::atomic::Ordering::Relaxed);
    let before = in_place();
    let mut each = (0..400).map(|k| f.take(&[one(k)], true)).collect::<Result<Vec<_>, _>>()?;
    if in_place() - before != 400 {
        return Err(format!("only {} of 400 changes went in place", in_place() - before));
    }
    println!(
        "one endpoint change, decoded to swapped in: compiled whole p50 {:.0} ms (max {:.0}); in place p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&mut whole, 50.0),
        ms(&mut whole, 100.0),
        ms(&mut each, 50.0),
        ms(&mut each, 99.0),
        ms(&mut each, 100.0)
    );
    // 10 s of `rate` changes a second: 200 deltas of rate/20 services each.
    let per = (a.rate / 20).clamp(1, n);
    let (mut spent, mut deltas) = (Duration::ZERO, Vec::new());
    for d in 0..200 {
        let docs: Vec<(usize, Box<RawValue>)> = (0..per).map(|k| ((d * per + k) % n, se((d * per + k) % n, e + 1 + d % 2))).collect();
        let t = f.take(&docs, true)?;
        spent += t;
        deltas.push(t);
    }
    println!(
        "{} endpoint changes/s for 10 s as 200 deltas of {per} services: {:.2} s of one core ({:.3} cores), each delta p50 {:.1} ms, p99 {:.1} ms",
        a.rate,
        spent.as_secs_f64(),
        spent.as_secs_f64() / 10.0,
        ms(&mut deltas, 50.0),
        ms(&mut deltas, 99.0)
    );
    bench_virtual_services(&mut f, a.virtual_services.min(n))
}

/// One VirtualService change, compiled whole and in place, with `count` VirtualServices
/// (and DestinationRules) for the first services.
fn bench_virtual_services(f: &mut Follower, count: usize) -> Result<(), String> {
    if count == 0 {
        return Ok(());
    }
    let docs: Vec<(String, Box<RawValue>)> = (0..count)
        .flat_map(|i| [(format!("DestinationRule/default/svc-{i}"), dr(i)), (format!("VirtualService/default/svc-{i}"), vs(i, 10))])
        .collect();
    let keyed: Vec<(String, &RawValue)> = docs.iter().map(|(k, d)| (k.clone(), &**d)).collect();
    let t = f.take_keyed(&keyed, false)?;
    println!("{count} VirtualServices and DestinationRules added, compiled whole in {:.0} ms", t.as_secs_f64() * 1000.0);
    // One VirtualService's split moved, then moved back: compiled whole, and in place.
    let one = |k: usize| {
        let i = k * 7 % count;
        (format!("VirtualService/default/svc-{i}"), vs(i, if k.is_multiple_of(2) { 50 } else { 10 }))
    };
    let shared = f.shared;
    let routes_in_place = || shared.metrics.counters.control_plane_routes_in_place.load(std::sync::atomic::Ordering::Relaxed);
    let mut take_one = |k: usize, in_place: bool| {
        let (key, doc) = one(k);
        f.take_keyed(&[(key, &*doc)], in_place)
    };
    let mut whole = (0..6).map(|k| take_one(k, false)).collect::<Result<Vec<_>, _>>()?;
    let before = routes_in_place();
    let mut each = (0..200).map(|k| take_one(k, true)).collect::<Result<Vec<_>, _>>()?;
    if routes_in_place() - before != 200 {
        return Err(format!("only {} of 200 VirtualService changes went in place", routes_in_place() - before));
    }
    println!(
        "one VirtualService change, decoded to swapped in: compiled whole p50 {:.0} ms (max {:.0}); in place p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&mut whole, 50.0),
        ms(&mut whole, 100.0),
        ms(&mut each, 50.0),
        ms(&mut each, 99.0),
        ms(&mut each, 100.0)
    );
    Ok(())
}
