//! CPU cost of verifying a JWT with its key already held (an inline `jwks`, or a
//! `jwksUri` fetched before): RS256 (RSA 2048) and ES256 (P-256), the whole of
//! `Authenticator::verify` — parse, rule by `iss`, signature, `exp`, `aud` — for a
//! token seen before (its signature remembered by the key set) and one seen first.
//! `cargo bench -p weft-authz --bench jwt`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use weft_authz::jwt::testing::{jwks, TestKey};
use weft_authz::jwt::{compile, Authenticator};
use weft_authz::spec::{JwtRule, RequestAuthentication};

const ISS: &str = "testing@secure.istio.io";
const NOW: u64 = 1_795_900_000;

fn authenticator(key: &TestKey) -> Authenticator {
    let rule = JwtRule { issuer: ISS.into(), audiences: vec!["httpbin".into()], jwks: Some(jwks(&[key])), ..Default::default() };
    compile(&RequestAuthentication { jwt_rules: vec![rule], ..Default::default() }).expect("compiles")
}

fn verify(c: &mut Criterion) {
    for key in [TestKey::rsa("rsa"), TestKey::es256("ec")] {
        let authn = authenticator(&key);
        let claims = json!({"iss": ISS, "sub": ISS, "aud": "httpbin", "exp": NOW + 3600, "groups": ["group1", "group2"]});
        let token = key.sign(&claims);
        assert!(authn.verify(&token, NOW, &()).is_ok());
        // A token seen before: its signature is remembered by the key set.
        c.bench_function(&format!("verify {} (seen before)", key.default_alg()), |b| b.iter(|| authn.verify(&token, NOW, &()).is_ok()));
        // A token never seen: the signature is verified (fresh keys each batch of one).
        c.bench_function(&format!("verify {} (first time)", key.default_alg()), |b| {
            b.iter_batched(|| authenticator(&key), |a| a.verify(&token, NOW, &()).is_ok(), criterion::BatchSize::LargeInput)
        });
    }
}

criterion_group!(benches, verify);
criterion_main!(benches);
