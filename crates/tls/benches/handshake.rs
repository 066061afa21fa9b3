//! CPU cost of mesh mTLS per connection, in memory (no sockets): a full handshake (two
//! certificate verifications, ECDSA P-256 signatures) against a resumed one (a TLS 1.3
//! ticket), and the CA's cost to sign one CSR. `cargo bench -p weft-tls`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, Connection, HandshakeKind, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;
use weft_tls::{client_config, server_config, Ca, ClientAuth, SpiffeId, WorkloadIdentity, WorkloadKey};

fn identity(ca: &Ca, sa: &str) -> Arc<WorkloadIdentity> {
    let id = SpiffeId::new("cluster.local", "default", sa).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let cert = ca.sign_csr(&key.csr(&id).unwrap(), &id, Duration::from_secs(3600)).unwrap();
    Arc::new(WorkloadIdentity::new(id, &key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap())
}

/// Moves every pending TLS record from one side to the other and processes it.
fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> HandshakeKind {
    let name = ServerName::try_from("reviews.default.svc").unwrap();
    let mut c = Connection::Client(ClientConnection::new(client.clone(), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    while c.is_handshaking() || s.is_handshaking() {
        transfer(&mut c, &mut s);
        transfer(&mut s, &mut c);
    }
    transfer(&mut s, &mut c); // session tickets
    c.handshake_kind().unwrap()
}

fn bench(c: &mut Criterion) {
    weft_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
    let server = Arc::new(server_config(identity(&ca, "reviews"), ClientAuth::Required).unwrap());
    let expected = Some(vec![SpiffeId::new("cluster.local", "default", "reviews").unwrap()]);
    let resuming = Arc::new(client_config(identity(&ca, "productpage"), expected).unwrap());
    let mut full = (*resuming).clone();
    full.resumption = Resumption::disabled();
    let full = Arc::new(full);
    assert_eq!(handshake(&full, &server), HandshakeKind::Full);
    handshake(&resuming, &server);
    assert_eq!(handshake(&resuming, &server), HandshakeKind::Resumed);

    let mut g = c.benchmark_group("mtls_handshake");
    g.bench_function("full", |b| b.iter(|| handshake(&full, &server)));
    g.bench_function("resumed", |b| b.iter(|| handshake(&resuming, &server)));
    g.finish();

    let id = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let csr = WorkloadKey::generate().unwrap().csr(&id).unwrap();
    c.bench_function("ca_sign_csr", |b| b.iter(|| ca.sign_csr(&csr, &id, Duration::from_secs(3600)).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
