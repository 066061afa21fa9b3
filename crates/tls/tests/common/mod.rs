//! Shared test helpers: a CA in a temporary directory, identities issued by it, and TLS
//! handshakes between in-process peers over `tokio::io::duplex`.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use weft_tls::ca::{Ca, DEFAULT_CERT_TTL};
use weft_tls::identity::WorkloadIdentity;
use weft_tls::spiffe::SpiffeId;
use weft_tls::workload::WorkloadKey;

pub const TD: &str = "cluster.local";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

/// A CA generated into a fresh temporary directory (kept alive by the returned guard).
pub fn new_ca() -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), TD).unwrap();
    (dir, ca)
}

/// The proxy side of issuance: a fresh key, a CSR, the CA's answer, installed.
pub fn issue(ca: &Ca, ns: &str, sa: &str) -> Arc<WorkloadIdentity> {
    let (key, cert) = issue_parts(ca, ns, sa);
    Arc::new(WorkloadIdentity::new(id(ns, sa), &key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap())
}

pub fn issue_parts(ca: &Ca, ns: &str, sa: &str) -> (WorkloadKey, weft_tls::ca::IssuedCert) {
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr(&id(ns, sa)).unwrap();
    let cert = ca.sign_csr(&csr, &id(ns, sa), DEFAULT_CERT_TTL).unwrap();
    (key, cert)
}

pub type Handshake = (std::io::Result<client::TlsStream<DuplexStream>>, std::io::Result<server::TlsStream<DuplexStream>>);

/// Runs one TLS handshake between a client and a server config, in process.
pub async fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Handshake {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("reviews.default.svc").unwrap();
    let connector = TlsConnector::from(client.clone());
    let acceptor = TlsAcceptor::from(server.clone());
    tokio::join!(connector.connect(name, c), acceptor.accept(s))
}

/// A handshake both sides completed, with one byte of application data each way so that
/// the client has taken in the server's session tickets and a refusal that TLS 1.3 reports
/// only after the client's Finished (a rejected client certificate) shows on the client.
pub async fn connected(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> Result<(client::TlsStream<DuplexStream>, server::TlsStream<DuplexStream>), String> {
    let (c, s) = handshake(client, server).await;
    let (mut c, mut s) = match (c, s) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => return Err(format!("client: {:?}; server: {:?}", c.err().map(|e| e.to_string()), s.err().map(|e| e.to_string()))),
    };
    let mut buf = [0u8; 1];
    let (a, b) = tokio::join!(
        async {
            s.write_all(b"s").await?;
            s.flush().await?;
            s.read_exact(&mut buf).await
        },
        async {
            let mut cbuf = [0u8; 1];
            c.write_all(b"c").await?;
            c.flush().await?;
            c.read_exact(&mut cbuf).await
        }
    );
    a.and(b).map_err(|e| e.to_string())?;
    Ok((c, s))
}

/// A test client verifier that accepts any server, so a test can reach the point where
/// the server judges the client's certificate.
#[derive(Debug)]
pub struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A plain rustls client that presents `cert` (or nothing) and trusts any server.
pub fn raw_client(cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer));
    Arc::new(match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// A leaf for `sa` signed directly with the CA files in `ca_dir`, with any validity
/// (the CA itself refuses lifetimes outside its bounds, so expired certs are made here).
pub fn forge_leaf(
    ca_dir: &Path,
    sa: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap();
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, rcgen::KeyPair::from_pem(&ca_key).unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id("default", sa).to_string().try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (vec![cert.der().clone()], key_der)
}

pub fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

pub const HOUR: Duration = Duration::from_secs(3600);
