//! The authorization check per request: a workload with 100 policies of 10 rules each
//! (ALLOW and DENY, each rule naming principals, methods, paths and a header
//! condition) and a request that none matches but a last ALLOW: with callers named
//! exactly (the principal index finds the few policies that name the caller), and
//! with principal patterns that take the caller in every rule (every field of every
//! rule is looked at). `cargo bench -p weft-authz --bench check`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use weft_authz::policy::{compile, Decision};
use weft_authz::spec::AuthorizationPolicy;
use weft_authz::{Attrs, Policies};

/// 100 policies of 10 rules, half DENY, half ALLOW, each rule with `principals` from
/// `principal(p, r)`, methods, paths (exact, prefix and template) and a header
/// condition; then one ALLOW for `/checkout` last.
fn policies(principal: impl Fn(usize, usize) -> Vec<String>) -> Policies {
    let all = (0..100).map(|p| {
        let action = if p % 2 == 0 { "DENY" } else { "ALLOW" };
        let rules: Vec<_> = (0..10)
            .map(|r| {
                json!({
                    "from": [{"source": {"principals": principal(p, r)}}],
                    "to": [{"operation": {"methods": ["GET", "POST"], "paths": [format!("/api/v{r}/*"), format!("/p{p}/{{*}}/items"), "/checkout".to_owned()]}}],
                    "when": [{"key": "request.headers[x-tenant]", "values": [format!("tenant-{p}-{r}")]}]
                })
            })
            .collect();
        let spec: AuthorizationPolicy = serde_json::from_value(json!({"action": action, "rules": rules})).unwrap();
        Arc::new(compile(&format!("ns/p{p}"), &spec).unwrap())
    });
    let last: AuthorizationPolicy = serde_json::from_value(json!({"rules": [{"to": [{"operation": {"paths": ["/checkout"]}}]}]})).unwrap();
    Policies::from_compiled(all.chain([Arc::new(compile("ns/last", &last).unwrap())]))
}

fn bench(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("someone-else"));
    headers.insert("user-agent", http::HeaderValue::from_static("bench"));
    let attrs = Attrs {
        source_ip: "10.0.0.7".parse().ok(),
        remote_ip: None,
        principal: Some("cluster.local/ns/shop/sa/frontend"),
        request_principal: None,
        claims: None,
        method: "GET",
        path: "/checkout",
        host: "cart.shop.svc.cluster.local",
        port: None,
        headers: &headers,
        destination_ip: "10.0.0.9".parse().ok(),
        destination_port: 8080,
        sni: None,
    };
    // Callers named exactly (as Istio's examples write them): the request's principal
    // is named by a rule of 4 of the 100 policies, whose header then does not match.
    let named = |p: usize, r: usize| {
        if r == 3 && p.is_multiple_of(25) {
            "cluster.local/ns/shop/sa/frontend".to_owned()
        } else {
            format!("cluster.local/ns/x/sa/{p}")
        }
    };
    let exact =
        policies(|p, r| vec![format!("cluster.local/ns/ns{p}/sa/sa{r}"), format!("cluster.local/ns/ns{p}/sa/other{r}"), named(p, r)]);
    assert_eq!(exact.check(&attrs).decision, Decision::Allow);
    c.bench_function("check: 100 policies x 10 rules, exact principals", |b| b.iter(|| black_box(exact.check(black_box(&attrs)))));
    // The worst case: every rule takes the caller by a pattern, so every field of every
    // rule is looked at.
    let patterns = policies(|p, r| {
        vec![format!("cluster.local/ns/ns{p}/sa/sa{r}"), format!("cluster.local/ns/team{p}/*"), "cluster.local/ns/shop/*".to_owned()]
    });
    assert_eq!(patterns.check(&attrs).decision, Decision::Allow);
    c.bench_function("check: 100 policies x 10 rules, principal patterns (worst case)", |b| {
        b.iter(|| black_box(patterns.check(black_box(&attrs))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
