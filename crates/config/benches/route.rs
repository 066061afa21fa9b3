//! Route matching over a VirtualService of 50 routes: `cargo bench -p weft-config`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use weft_config::matcher::RequestView;

fn config() -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 127.0.0.1}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n",
    );
    for i in 0..49 {
        let m = match i % 4 {
            0 => format!("{{uri: {{prefix: /api/v{i}/}}}}"),
            1 => format!("{{uri: {{exact: /exact/{i}}}, method: {{exact: GET}}}}"),
            2 => format!("{{headers: {{x-tenant: {{exact: t{i}}}}}}}"),
            _ => format!("{{uri: {{regex: \"/items/{i}/[0-9]+\"}}}}"),
        };
        s.push_str(&format!("  - match: [{m}]\n    route: [{{destination: {{host: svc}}}}]\n"));
    }
    s.push_str("  - route: [{destination: {host: svc}}]\n");
    s
}

fn bench(c: &mut Criterion) {
    let (_, snap, diags) = weft_config::build_str("bench.yaml", &config());
    assert!(diags.is_ok(), "{diags}");
    let vh = snap.vhost("svc").unwrap();
    assert_eq!(vh.routes.len(), 50);
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "nobody".parse().unwrap());
    headers.insert("user-agent", "bench".parse().unwrap());
    let mut g = c.benchmark_group("route_match_50");
    for (name, path) in [("first_route", "/api/v0/x"), ("middle_route", "/exact/25"), ("fallthrough_to_last", "/nothing/here")] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let v = RequestView {
                    method: "GET",
                    path: black_box(path),
                    query: None,
                    authority: "svc",
                    scheme: "http",
                    port: 80,
                    headers: &headers,
                };
                black_box(vh.route(&v).map(|r| r.name.len()))
            })
        });
    }
    g.bench_function("host_lookup", |b| b.iter(|| black_box(snap.vhost(black_box("svc")).is_some())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
