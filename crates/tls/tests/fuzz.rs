//! Property-based fuzzing of every parser of untrusted input in this crate: SPIFFE IDs,
//! CSRs (the CA's network input), and certificates and PEM (what a proxy installs or a
//! peer presents). Whatever comes in, the answer is a value or an error — never a panic —
//! and the CA never signs an identity other than the expected one. A short run is part
//! of `cargo test`; `scripts/fuzz.sh` can run them with `PROPTEST_CASES` in the millions.

mod common;

use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use weft_tls::ca::{Ca, DEFAULT_CERT_TTL};
use weft_tls::spiffe::SpiffeId;
use weft_tls::workload::WorkloadKey;
use weft_tls::x509::{spiffe_id_of, summarize};

/// The case count: `PROPTEST_CASES` when set (the long run), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Ca,
    csr_der: Vec<u8>,
    leaf_der: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (dir, ca) = new_ca();
        let csr = WorkloadKey::generate().unwrap().csr(&id("default", "reviews")).unwrap();
        let (_key, cert) = issue_parts(&ca, "default", "reviews");
        Fixture { _dir: dir, ca, csr_der: der_of(&csr), leaf_der: der_of(&cert.leaf_pem) }
    })
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

fn to_pem(label: &str, der: Vec<u8>) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

/// A few byte edits and maybe a truncation: enough to hit every field of a small DER.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (prop::collection::vec((0..len, any::<u8>()), 1..6), prop::option::of(0..len)).prop_map(move |(edits, cut)| {
        let mut bytes = seed.clone();
        for (at, b) in edits {
            bytes[at] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        bytes
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_tls_spiffe_parse(s in "\\PC{0,100}|spiffe://[a-zA-Z0-9._%/-]{0,40}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
            let all = format!("{}{}{}", id.trust_domain(), id.namespace(), id.service_account());
            prop_assert!(all.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        }
    }

    #[test]
    fn fuzz_tls_csr_mutated(der in mutated(fixture().csr_der.clone())) {
        let f = fixture();
        for expected in [id("default", "reviews"), id("default", "ratings")] {
            if let Ok(cert) = f.ca.sign_csr(&to_pem("CERTIFICATE REQUEST", der.clone()), &expected, DEFAULT_CERT_TTL) {
                prop_assert_eq!(spiffe_id_of(&der_of(&cert.leaf_pem)).unwrap(), expected);
            }
        }
    }

    #[test]
    fn fuzz_tls_csr_text(text in "\\PC{0,300}|-----BEGIN CERTIFICATE REQUEST-----\n[A-Za-z0-9+/=\n]{0,300}\n-----END CERTIFICATE REQUEST-----\n") {
        prop_assert!(fixture().ca.sign_csr(&text, &id("default", "reviews"), DEFAULT_CERT_TTL).is_err());
    }

    #[test]
    fn fuzz_tls_certificate_mutated(der in mutated(fixture().leaf_der.clone())) {
        let _ = summarize(&der);
        if let Ok(found) = spiffe_id_of(&der) {
            prop_assert!(found.to_string().starts_with("spiffe://"));
        }
        // A proxy handed the mutated leaf either refuses it or installs its own identity.
        let f = fixture();
        let key = WorkloadKey::generate().unwrap();
        let pem = to_pem("CERTIFICATE", der);
        let installed = weft_tls::identity::WorkloadIdentity::new(id("default", "reviews"), &key, &pem, "", f.ca.root_bundle());
        prop_assert!(installed.is_err(), "a mutated leaf for another key must never install");
    }
}
