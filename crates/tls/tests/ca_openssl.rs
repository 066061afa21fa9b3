//! The CA as an operator meets it: files on disk in Istio's layout, certificates that
//! `openssl` verifies, operator-supplied roots and intermediates used as they are.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use weft_tls::ca::{Ca, IssuedCert};
use weft_tls::config::{client_config, peer_identity, server_config, ClientAuth};
use weft_tls::identity::WorkloadIdentity;

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/openssl").args(args).current_dir(dir).output().expect("run openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?} failed: {text}");
    text
}

fn write_leaf(dir: &Path, cert: &IssuedCert) {
    fs::write(dir.join("leaf.pem"), &cert.leaf_pem).unwrap();
    fs::write(dir.join("issued-chain.pem"), &cert.chain_pem).unwrap();
}

fn assert_openssl_accepts_leaf(dir: &Path) {
    for purpose in ["sslserver", "sslclient"] {
        let out = openssl(
            dir,
            &["verify", "-x509_strict", "-purpose", purpose, "-CAfile", "root-cert.pem", "-untrusted", "cert-chain.pem", "leaf.pem"],
        );
        assert!(out.contains("leaf.pem: OK"), "{out}");
    }
    let text = openssl(dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("URI:spiffe://cluster.local/ns/default/sa/reviews"), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
    assert!(text.contains("Digital Signature, Key Encipherment"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
}

#[test]
fn a_generated_root_writes_istios_files_and_issues_certs_openssl_verifies() {
    let (dir, ca) = new_ca();
    for name in ["root-cert.pem", "ca-cert.pem", "ca-key.pem", "cert-chain.pem"] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    let mode = fs::metadata(dir.path().join("ca-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (_key, cert) = issue_parts(&ca, "default", "reviews");
    write_leaf(dir.path(), &cert);
    assert_openssl_accepts_leaf(dir.path());
    assert_eq!(cert.chain_pem, "", "the root signs directly: no intermediates");
    let lifetime = cert.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(lifetime > Duration::from_secs(24 * 3600 - 60) && lifetime <= Duration::from_secs(24 * 3600));

    let root = openssl(dir.path(), &["x509", "-in", "root-cert.pem", "-noout", "-text", "-enddate"]);
    assert!(root.contains("CA:TRUE"), "{root}");
    assert!(root.contains("ASN1 OID: prime256v1"), "{root}");

    // A restart loads the same CA instead of generating another.
    let again = Ca::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(again.root_bundle(), ca.root_bundle());
}

const OPENSSL_CNF: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nO = example\n\
CN = Example Root CA\n[v3_root]\nbasicConstraints = critical,CA:TRUE\n\
keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n[v3_intermediate]\n\
basicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\n\
subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";

/// An operator's root (kept offline: its key is not in the CA directory) and an
/// intermediate for this cluster, made with openssl as a PKI team would. The intermediate
/// key is SEC1 (`EC PRIVATE KEY`), as `openssl ecparam` writes it.
fn operator_ca(dir: &Path, offline: &Path) {
    fs::write(offline.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    let o = |args: &[&str]| openssl(offline, args);
    o(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "root-key.pem"]);
    o(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-config",
        "openssl.cnf",
        "-extensions",
        "v3_root",
        "-days",
        "3650",
        "-out",
        "root-cert.pem",
    ]);
    o(&["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ca-key.pem"]);
    o(&["req", "-new", "-key", "ca-key.pem", "-subj", "/O=example/CN=Intermediate CA cluster-1", "-out", "ca.csr"]);
    o(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "730",
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "v3_intermediate",
        "-out",
        "ca-cert.pem",
    ]);
    for name in ["root-cert.pem", "ca-cert.pem", "ca-key.pem"] {
        fs::copy(offline.join(name), dir.join(name)).unwrap();
    }
    let chain = fs::read_to_string(dir.join("ca-cert.pem")).unwrap() + &fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn an_operator_root_and_intermediate_are_used_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let offline = tempfile::tempdir().unwrap();
    operator_ca(dir.path(), offline.path());
    let before = snapshot(dir.path());
    let ca = Ca::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(snapshot(dir.path()), before, "operator files are never rewritten");

    let (_key, cert) = issue_parts(&ca, "default", "reviews");
    write_leaf(dir.path(), &cert);
    assert_openssl_accepts_leaf(dir.path());
    // The chain a proxy sends is the intermediate: openssl verifies with it alone too.
    let out = openssl(dir.path(), &["verify", "-CAfile", "root-cert.pem", "-untrusted", "issued-chain.pem", "leaf.pem"]);
    assert!(out.contains("leaf.pem: OK"), "{out}");
    let chain_text = openssl(dir.path(), &["x509", "-in", "issued-chain.pem", "-noout", "-subject"]);
    assert!(chain_text.contains("Intermediate CA cluster-1"), "{chain_text}");
}

#[tokio::test]
async fn proxies_with_certificates_from_an_intermediate_connect() {
    let dir = tempfile::tempdir().unwrap();
    let offline = tempfile::tempdir().unwrap();
    operator_ca(dir.path(), offline.path());
    let ca = Ca::load_or_create(dir.path(), TD).unwrap();
    let productpage = issue(&ca, "default", "productpage");
    let reviews = issue(&ca, "default", "reviews");
    let c = Arc::new(client_config(productpage, Some(vec![id("default", "reviews")])).unwrap());
    let s = Arc::new(server_config(reviews, ClientAuth::Required).unwrap());
    let (client, server) = connected(&c, &s).await.unwrap();
    assert_eq!(peer_identity(server.get_ref().1), Some(id("default", "productpage")));
    assert_eq!(client.get_ref().1.peer_certificates().unwrap().len(), 2, "leaf + intermediate");
}

#[test]
fn a_new_root_added_to_the_bundle_is_trusted_alongside_the_old_one() {
    let (dir, ca) = new_ca();
    let (new_dir, new_ca) = new_ca();
    let bundle = format!("{}{}", ca.root_bundle(), new_ca.root_bundle());
    let mut rotated_files = fs::read_to_string(dir.path().join("root-cert.pem")).unwrap();
    rotated_files.push_str(new_ca.root_bundle());
    fs::write(dir.path().join("root-cert.pem"), rotated_files).unwrap();
    let ca = Ca::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(ca.root_bundle(), bundle);

    // A proxy whose bundle holds both roots accepts a certificate from the new root.
    let (key, cert) = issue_parts(&new_ca, "default", "reviews");
    let identity = WorkloadIdentity::new(id("default", "reviews"), &key, &cert.leaf_pem, "", &bundle);
    assert!(identity.is_ok(), "{identity:?}");
    drop(new_dir);
}
