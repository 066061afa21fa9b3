//! A mesh CA and workload identities for the in-process inbound tests.
#![allow(dead_code)]

use std::sync::Arc;

use rustls::ClientConfig;
use weft_tls::{Ca, SpiffeId, WorkloadIdentity, WorkloadKey};

pub const TD: &str = "cluster.local";

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(TD, "default", sa).unwrap()
}

pub fn new_ca() -> (tempfile::TempDir, Ca) {
    weft_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), TD).unwrap();
    (dir, ca)
}

/// An identity for `sa` (namespace `ns`) from `ca`, trusting `extra_roots` besides `ca`'s own.
pub fn issue_in(ca: &Ca, ns: &str, sa: &str, extra_roots: &str) -> Arc<WorkloadIdentity> {
    let id = SpiffeId::new(TD, ns, sa).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let cert = ca.sign_csr(&key.csr(&id).unwrap(), &id, weft_tls::ca::DEFAULT_CERT_TTL).unwrap();
    let roots = format!("{}{extra_roots}", cert.roots_pem);
    Arc::new(WorkloadIdentity::new(id, &key, &cert.leaf_pem, &cert.chain_pem, &roots).unwrap())
}

/// An identity for `sa` in namespace `default`.
pub fn issue(ca: &Ca, sa: &str, extra_roots: &str) -> Arc<WorkloadIdentity> {
    issue_in(ca, "default", sa, extra_roots)
}

/// A mesh client (a caller's outbound side): its certificate, and the server must be a
/// mesh workload; HTTP/1.1.
pub fn mesh_client(identity: &Arc<WorkloadIdentity>) -> Arc<ClientConfig> {
    let mut c = weft_tls::client_config(identity.clone(), None).unwrap();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}
