//! What an attacker or a careless operator can hand the CA and the proxy: each refused
//! with an error that says why, never a panic and never a certificate.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::*;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use weft_tls::ca::{Ca, CaError, DEFAULT_CERT_TTL, MAX_CERT_TTL, MIN_CERT_TTL};
use weft_tls::identity::{IdentityError, WorkloadIdentity};
use weft_tls::workload::WorkloadKey;

fn csr_with_sans(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

#[test]
fn a_csr_for_another_identity_is_refused() {
    let (_dir, ca) = new_ca();
    let csr = WorkloadKey::generate().unwrap().csr(&id("default", "reviews")).unwrap();
    let err = ca.sign_csr(&csr, &id("default", "ratings"), DEFAULT_CERT_TTL).unwrap_err();
    assert!(matches!(err, CaError::IdentityMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sa/reviews"), "{err}");
}

#[test]
fn a_csr_with_two_uri_sans_or_an_extra_dns_san_is_refused() {
    let (_dir, ca) = new_ca();
    let me = id("default", "reviews");
    let two = csr_with_sans(vec![uri(&me.to_string()), uri("spiffe://cluster.local/ns/kube-system/sa/admin")]);
    assert!(matches!(ca.sign_csr(&two, &me, DEFAULT_CERT_TTL), Err(CaError::IdentityMismatch { .. })));
    let dns = csr_with_sans(vec![uri(&me.to_string()), SanType::DnsName("evil.example".try_into().unwrap())]);
    assert!(matches!(ca.sign_csr(&dns, &me, DEFAULT_CERT_TTL), Err(CaError::IdentityMismatch { .. })));
    let none = csr_with_sans(vec![]);
    assert!(matches!(ca.sign_csr(&none, &me, DEFAULT_CERT_TTL), Err(CaError::IdentityMismatch { .. })));
}

#[test]
fn a_csr_with_a_thousand_sans_is_refused_and_the_error_stays_short() {
    let (_dir, ca) = new_ca();
    let me = id("default", "reviews");
    let sans = (0..1000).map(|i| SanType::DnsName(format!("h{i}.example").try_into().unwrap())).collect();
    let err = ca.sign_csr(&csr_with_sans(sans), &me, DEFAULT_CERT_TTL).unwrap_err();
    assert!(err.to_string().len() < 1000, "{}", err.to_string().len());
}

#[test]
fn garbage_oversize_and_tampered_csrs_are_refused() {
    let (_dir, ca) = new_ca();
    let me = id("default", "reviews");
    for garbage in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert!(matches!(ca.sign_csr(garbage, &me, DEFAULT_CERT_TTL), Err(CaError::BadCsr(_))), "{garbage:?}");
    }
    let huge = "A".repeat(1 << 20);
    assert!(matches!(ca.sign_csr(&huge, &me, DEFAULT_CERT_TTL), Err(CaError::CsrTooLarge { .. })));

    // A CSR whose body was altered after signing (here: its identity) fails its signature.
    let csr = WorkloadKey::generate().unwrap().csr(&me).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(csr.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let needle = b"reviews";
    let at = der.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut tampered = der.clone();
    tampered[at..at + 7].copy_from_slice(b"ratings");
    let tampered_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", tampered));
    let err = ca.sign_csr(&tampered_pem, &id("default", "ratings"), DEFAULT_CERT_TTL).unwrap_err();
    assert!(err.to_string().contains("Invalid CSR signature"), "{err}");
}

#[test]
fn lifetimes_outside_ten_minutes_to_thirty_days_are_refused() {
    let (_dir, ca) = new_ca();
    let me = id("default", "reviews");
    let csr = WorkloadKey::generate().unwrap().csr(&me).unwrap();
    for ttl in [Duration::ZERO, Duration::from_secs(60), MAX_CERT_TTL + Duration::from_secs(1)] {
        assert!(matches!(ca.sign_csr(&csr, &me, ttl), Err(CaError::TtlOutOfRange { .. })), "{ttl:?}");
    }
    assert!(ca.sign_csr(&csr, &me, MIN_CERT_TTL).is_ok());
    assert!(ca.sign_csr(&csr, &me, MAX_CERT_TTL).is_ok());
}

#[test]
fn a_csr_for_another_trust_domain_is_refused() {
    let (_dir, ca) = new_ca();
    let other = weft_tls::spiffe::SpiffeId::new("evil.example", "default", "reviews").unwrap();
    let csr = WorkloadKey::generate().unwrap().csr(&other).unwrap();
    assert!(matches!(ca.sign_csr(&csr, &other, DEFAULT_CERT_TTL), Err(CaError::ForeignTrustDomain { .. })));
}

#[test]
fn a_ca_directory_with_a_key_that_does_not_match_is_refused() {
    let (dir, _ca) = new_ca();
    fs::write(dir.path().join("ca-key.pem"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = Ca::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch), "{err}");
}

#[test]
fn a_ca_certificate_that_is_not_a_ca_is_refused() {
    let (dir, _ca) = new_ca();
    let now = SystemTime::now();
    let (leaf, key) = forge_leaf(dir.path(), "reviews", now - HOUR, now + HOUR);
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf[0].to_vec()));
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec()));
    fs::write(dir.path().join("ca-cert.pem"), &leaf_pem).unwrap();
    fs::write(dir.path().join("ca-key.pem"), key_pem).unwrap();
    fs::write(dir.path().join("cert-chain.pem"), &leaf_pem).unwrap();
    let err = Ca::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::NotCa { what: "ca-cert.pem" }), "{err}");
}

#[test]
fn an_expired_ca_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = to_offset(SystemTime::now() - 48 * HOUR);
    params.not_after = to_offset(SystemTime::now() - HOUR);
    let cert = params.self_signed(&key).unwrap().pem();
    for name in ["root-cert.pem", "ca-cert.pem"] {
        fs::write(dir.path().join(name), &cert).unwrap();
    }
    fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
    let err = Ca::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::Expired { .. }), "{err}");
}

#[test]
fn an_incomplete_or_garbled_ca_directory_is_refused_and_left_alone() {
    let (dir, _ca) = new_ca();
    fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let err = Ca::load_or_create(dir.path(), TD).unwrap_err();
    assert!(err.to_string().contains("missing ca-key.pem"), "{err}");
    assert!(!dir.path().join("ca-key.pem").exists(), "nothing was generated over it");

    let (dir, _ca) = new_ca();
    fs::write(dir.path().join("root-cert.pem"), "not a certificate\n").unwrap();
    assert!(Ca::load_or_create(dir.path(), TD).is_err());

    // An issuing certificate that does not chain to the bundle's roots.
    let (dir, _ca) = new_ca();
    let (_other_dir, other) = new_ca();
    fs::write(dir.path().join("root-cert.pem"), other.root_bundle()).unwrap();
    let err = Ca::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::Untrusted(_)), "{err}");

    // A chain that does not start with the issuing certificate.
    let (dir, _ca) = new_ca();
    fs::write(dir.path().join("cert-chain.pem"), other.root_bundle()).unwrap();
    assert!(matches!(Ca::load_or_create(dir.path(), TD), Err(CaError::ChainOrder)));

    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Ca::load_or_create(dir.path(), "Cluster.Local"), Err(CaError::TrustDomain(_))));
}

#[test]
fn install_refuses_a_wrong_identity_a_wrong_key_and_an_untrusted_chain() {
    let (_dir, ca) = new_ca();
    let (other_dir, other_ca) = new_ca();
    let reviews = issue(&ca, "default", "reviews");
    let serial = reviews.summary().serial;

    let (key, ratings) = issue_parts(&ca, "default", "ratings");
    let err = reviews.install(&key, &ratings.leaf_pem, &ratings.chain_pem, &ratings.roots_pem).unwrap_err();
    assert!(matches!(err, IdentityError::WrongIdentity { .. }), "{err}");

    let (_key, cert) = issue_parts(&ca, "default", "reviews");
    let stranger_key = WorkloadKey::generate().unwrap();
    let err = reviews.install(&stranger_key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch), "{err}");

    let (key, cert) = issue_parts(&ca, "default", "reviews");
    let err = reviews.install(&key, &cert.leaf_pem, "", other_ca.root_bundle()).unwrap_err();
    assert!(matches!(err, IdentityError::Untrusted(_)), "{err}");
    let err = reviews.update_roots(other_ca.root_bundle()).unwrap_err();
    assert!(matches!(err, IdentityError::Untrusted(_)), "{err}");

    for garbage in ["", "junk", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"] {
        assert!(reviews.install(&key, garbage, "", &cert.roots_pem).is_err());
        assert!(reviews.install(&key, &cert.leaf_pem, "", garbage).is_err());
    }
    assert_eq!(reviews.summary().serial, serial, "every refusal kept the current certificate");
    drop(other_dir);
}

#[test]
fn install_refuses_an_expired_certificate() {
    let (dir, ca) = new_ca();
    let now = SystemTime::now();
    let (leaf, key) = forge_leaf(dir.path(), "reviews", now - 3 * HOUR, now - HOUR);
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf[0].to_vec()));
    // The forged leaf has its own key; the identity check on expiry comes before the key's.
    let _ = key;
    let workload_key = WorkloadKey::generate().unwrap();
    let err = WorkloadIdentity::new(id("default", "reviews"), &workload_key, &leaf_pem, "", ca.root_bundle()).unwrap_err();
    assert!(matches!(err, IdentityError::Expired { .. }), "{err}");
}
