//! What a proxy shows about its identity and when it renews.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use weft_tls::workload::WorkloadKey;

#[test]
fn the_summary_shows_the_certificate_and_never_the_key() {
    let (_dir, ca) = new_ca();
    let (key, cert) = issue_parts(&ca, "default", "reviews");
    let identity =
        weft_tls::identity::WorkloadIdentity::new(id("default", "reviews"), &key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem)
            .unwrap();
    let summary = identity.summary();
    assert_eq!(summary.sans, vec!["URI:spiffe://cluster.local/ns/default/sa/reviews"]);
    assert_eq!(summary.subject, "");
    assert_eq!(summary.issuer, "O=cluster.local, CN=weft mesh root CA");
    assert_eq!(summary.serial, cert.serial);
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(identity.expires_at()), secs(cert.not_after));

    // Renewal at half-life: the leaf is valid from a minute back for 24 h.
    let life = summary.not_after.duration_since(summary.not_before).unwrap();
    assert_eq!(life, Duration::from_secs(24 * 3600 + 60));
    assert_eq!(identity.renew_at(), summary.not_before + life / 2);

    let shown = format!("{identity:?} {key:?} {summary:?}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
    assert_eq!(format!("{key:?}"), "WorkloadKey(ECDSA P-256, private)");
}

#[test]
fn a_renewal_with_a_new_key_replaces_the_certificate() {
    let (_dir, ca) = new_ca();
    let identity = issue(&ca, "default", "reviews");
    let before = identity.summary();
    let key = WorkloadKey::generate().unwrap();
    let cert = ca.sign_csr(&key.csr(identity.id()).unwrap(), identity.id(), Duration::from_secs(3600)).unwrap();
    identity.install(&key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap();
    assert_ne!(identity.summary().serial, before.serial);
    assert!(identity.expires_at() < before.not_after, "the new one lives 1 h");
}

#[test]
fn installing_the_crypto_provider_twice_is_harmless() {
    weft_tls::install_crypto_provider();
    weft_tls::install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    let _ = rustls::ServerConfig::builder();
}

#[test]
fn the_ca_and_identities_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<weft_tls::Ca>();
    shared::<weft_tls::WorkloadIdentity>();
    shared::<weft_tls::WorkloadKey>();
    shared::<weft_tls::IssuedCert>();
}
