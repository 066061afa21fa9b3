//! Pick cost with 100 endpoints: `cargo bench -p weft-balance`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use weft_balance::*;

fn now() -> u64 {
    1
}

fn bench(c: &mut Criterion) {
    let n = 100;
    let ids: Vec<String> = (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250)).collect();
    let equal = vec![1u32; n];
    let weighted: Vec<u32> = (0..n as u32).map(|i| 1 + i % 5).collect();
    let loads: Vec<EndpointLoad> = (0..n).map(|_| EndpointLoad::default()).collect();
    let ctx = |h| PickCtx { hash: Some(h), loads: &loads };
    let cases = [
        ("round_robin", Balancer::RoundRobin(RoundRobin::new(&equal))),
        ("round_robin_weighted", Balancer::RoundRobin(RoundRobin::new(&weighted))),
        ("random_weighted", Balancer::Random(WeightedRandom::new(&weighted))),
        ("p2c_least_request", Balancer::LeastRequest(LeastRequest::new(&equal))),
        ("p2c_least_request_weighted", Balancer::LeastRequest(LeastRequest::new(&weighted))),
        ("peak_ewma", Balancer::PeakEwma(PeakEwma::new(&equal, now))),
        ("ring_hash_1024", Balancer::RingHash(RingHash::new(&ids, &equal, 1024))),
        ("maglev_65537", Balancer::Maglev(Maglev::new(&ids, &equal, 65537))),
    ];
    let mut g = c.benchmark_group("pick_100_endpoints");
    for (name, b) in &cases {
        let mut k = 0u64;
        g.bench_function(*name, |bch| {
            bch.iter(|| {
                k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(b.pick(&ctx(black_box(k))))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
