//! The control plane's serving certificate: verified by a plain TLS client with the mesh
//! root, by name and by IP, and by openssl.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_tls::ca::CaError;

#[tokio::test]
async fn a_plain_tls_client_with_the_mesh_root_verifies_the_control_plane_by_name_and_ip() {
    let (dir, ca) = new_ca();
    let cert = ca.issue_server_cert(&["localhost", "weft-control.example", "127.0.0.1"], Duration::from_secs(3600)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(ca.root_bundle().as_bytes()) {
        roots.add(root.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client, server) = (Arc::new(client), Arc::new(server));
    for (name, ok) in [("localhost", true), ("127.0.0.1", true), ("weft-control.example", true), ("other.example", false)] {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name).unwrap();
        let (c, _s) =
            tokio::join!(TlsConnector::from(client.clone()).connect(name.clone(), c), TlsAcceptor::from(server.clone()).accept(s));
        assert_eq!(c.is_ok(), ok, "{name:?}: {:?}", c.err());
    }

    std::fs::write(dir.path().join("server.pem"), &cert.cert_chain_pem).unwrap();
    let out = std::process::Command::new("/usr/bin/openssl")
        .args(["verify", "-purpose", "sslserver", "-verify_ip", "127.0.0.1", "-CAfile", "root-cert.pem", "server.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn server_names_that_are_neither_dns_names_nor_ips_are_refused() {
    let (_dir, ca) = new_ca();
    let hour = Duration::from_secs(3600);
    for bad in ["", "bad name", "a..b", "-x.example", "x\n.example", "*.example"] {
        assert!(matches!(ca.issue_server_cert(&[bad], hour), Err(CaError::BadServerName(_))), "{bad:?}");
    }
    assert!(matches!(ca.issue_server_cert(&[], hour), Err(CaError::BadServerName(_))));
}
