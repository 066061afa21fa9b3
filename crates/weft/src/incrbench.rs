//! `weft x bench-incremental`: what an endpoint change costs a proxy that follows the
//! whole mesh, without sockets: `--services` ServiceEntries of `--endpoints` endpoints
//! (as scripts/cp_scale.py makes them) encoded as the control plane encodes answers and
//! taken as a following proxy takes them (`weft_proxy::follow::take`), timed on this
//! thread — one endpoint change compiled whole (as before updates in place) and in
//! place, and 10 s worth of `--rate` changes a second in deltas of `rate / 20` services
//! (the control plane coalesces pushes every 50 ms).

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
    /// Takes an answer holding `docs` (compiled whole unless `in_place`); how long it took.
    fn take(&mut self, docs: &[(usize, Box<RawValue>)], in_place: bool) -> Result<Duration, String> {
        let kind = if self.revision == 0 { MeshKind::Full } else { MeshKind::Delta };
        let mut e = MeshEncoder::new(self.revision + 1, kind);
        for (i, d) in docs {
            e.put(&format!("ServiceEntry/default/svc-{i}"), d);
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
    Ok(())
}
