//! A Gateway server's `tls` compiled into the rustls `ServerConfig` its connections are
//! terminated with, files read and checked at compile time (a missing or malformed
//! certificate is a config error naming the field, never a failed handshake later).
//!
//! `credentialName: NAME` is read from the gateway's `--credentials-dir` as a
//! Kubernetes TLS secret mounted there would lay it out: `<dir>/NAME/tls.crt` and
//! `<dir>/NAME/tls.key`, and for MUTUAL the client CA in `<dir>/NAME/ca.crt` (or, as
//! Istio also accepts, `<dir>/NAME-cacert/ca.crt`). `serverCertificate`, `privateKey`
//! and `caCertificates` are file paths, as in Istio's file-mounted gateways.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::GatewayRole;
use crate::istio::{ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::tls::{provider, read_certs, read_key, Fingerprint};

/// A problem: the field under `tls` and the message.
type Problem = (&'static str, String);

/// The server's rustls config, or every problem found.
pub(super) fn config(t: &ServerTlsSettings, role: &GatewayRole) -> Result<Arc<ServerConfig>, Vec<Problem>> {
    let mut errs = unsupported(t);
    let mutual = matches!(t.mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    let files = match files(t, role, mutual) {
        Ok(f) => Some(f),
        Err(e) => {
            errs.push(e);
            None
        }
    };
    let versions = versions(t).map_err(|e| errs.push(e)).ok();
    let (Some(files), Some(versions), true) = (files, versions, errs.is_empty()) else { return Err(errs) };
    let mut fp = Fingerprint::default();
    let chain = read_certs(&files.cert.1, &mut fp).map_err(|e| vec![(files.cert.0, e)])?;
    let key = read_key(&files.key.1, &mut fp).map_err(|e| vec![(files.key.0, e)])?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| vec![("minProtocolVersion", e.to_string())])?;
    let builder = match &files.ca {
        Some((field, path)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(path, &mut fp).map_err(|e| vec![(*field, e)])? {
                roots.add(c).map_err(|e| vec![(*field, format!("{path:?} is not a usable CA certificate: {e}"))])?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if t.mode == ServerTlsMode::OptionalMutual { v.allow_unauthenticated() } else { v };
            builder.with_client_cert_verifier(v.build().map_err(|e| vec![(*field, e.to_string())])?)
        }
        None => builder.with_no_client_auth(),
    };
    let certified =
        certified_key(chain, key).map_err(|e| vec![(files.key.0, format!("{:?} with {:?}: {e}", files.key.1, files.cert.1))])?;
    let mut config = builder.with_cert_resolver(Arc::new(Single(Arc::new(certified))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate and its key, checked to belong together. (Not rustls'
/// `with_single_cert`: its check parses the certificate with webpki, which refuses
/// X.509 v1 certificates — what `openssl x509 -req` makes, as Istio's secure ingress
/// task does — though the server never verifies its own certificate.)
fn certified_key(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, String> {
    let signing = provider().key_provider.load_private_key(key).map_err(|e| format!("unusable private key: {e}"))?;
    let leaf = chain.first().ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("the certificate does not parse: {e}"))?;
    if signing.public_key().is_some_and(|spki| spki.as_ref() != cert.tbs_certificate.subject_pki.raw) {
        return Err("the private key does not go with the certificate".into());
    }
    Ok(CertifiedKey::new(chain, signing))
}

/// Every handshake gets the one certificate (the server was chosen by SNI already).
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl ResolvesServerCert for Single {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The files a server's certificate, key and client CA are read from, each with the
/// field that named it.
struct Files {
    cert: (&'static str, String),
    key: (&'static str, String),
    ca: Option<(&'static str, String)>,
}

fn files(t: &ServerTlsSettings, role: &GatewayRole, mutual: bool) -> Result<Files, Problem> {
    let Some(name) = &t.credential_name else {
        let need = |field: &'static str, v: &Option<String>| v.clone().map(|p| (field, p)).ok_or((field, "missing field".to_owned()));
        let ca = match mutual {
            true => Some(need("caCertificates", &t.ca_certificates)?),
            false => None,
        };
        return Ok(Files { cert: need("serverCertificate", &t.server_certificate)?, key: need("privateKey", &t.private_key)?, ca });
    };
    let field = "credentialName";
    let Some(dir) = &role.credentials_dir else {
        return Err((field, format!("{name:?} needs --credentials-dir (read as DIR/{name}/tls.crt, tls.key, ca.crt)")));
    };
    // (Checked a DNS-1123 subdomain by the Gateway's validation: no `/` or `..`.)
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let secret = dir.join(name);
    if !secret.is_dir() {
        return Err((field, format!("no credential {name:?}: {} is not a directory holding tls.crt and tls.key", secret.display())));
    }
    let ca = match mutual {
        false => None,
        true => {
            let own = secret.join("ca.crt");
            let separate = dir.join(format!("{name}-cacert")).join("ca.crt");
            match (own.exists(), separate.exists()) {
                (true, _) => Some((field, path(own))),
                (false, true) => Some((field, path(separate))),
                (false, false) => {
                    return Err((field, format!("MUTUAL needs the client CA: neither {} nor {} exists", own.display(), separate.display())))
                }
            }
        }
    };
    Ok(Files { cert: (field, path(secret.join("tls.crt"))), key: (field, path(secret.join("tls.key"))), ca })
}

/// `minProtocolVersion` / `maxProtocolVersion` as rustls' versions (1.2 and 1.3; an
/// older minimum means 1.2, the oldest rustls speaks).
fn versions(t: &ServerTlsSettings) -> Result<&'static [&'static rustls::SupportedProtocolVersion], Problem> {
    use rustls::version::{TLS12, TLS13};
    static BOTH: [&rustls::SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&TLS13];
    static ONLY_12: [&rustls::SupportedProtocolVersion; 1] = [&TLS12];
    let min13 = t.min_protocol_version == Some(TlsProtocol::V1_3);
    match t.max_protocol_version {
        Some(TlsProtocol::V1_0 | TlsProtocol::V1_1) => {
            Err(("maxProtocolVersion", "TLS 1.0 and 1.1 are not supported (rustls speaks TLS 1.2 and 1.3)".into()))
        }
        Some(TlsProtocol::V1_2) if min13 => Err(("minProtocolVersion", "is above maxProtocolVersion".into())),
        Some(TlsProtocol::V1_2) => Ok(&ONLY_12),
        _ if min13 => Ok(&ONLY_13),
        _ => Ok(&BOTH),
    }
}

/// Istio fields weft's gateway does not implement: refused, naming them.
fn unsupported(t: &ServerTlsSettings) -> Vec<Problem> {
    [
        ("credentialNames", !t.credential_names.is_empty()),
        ("tlsCertificates", !t.tls_certificates.is_empty()),
        ("caCrl", t.ca_crl.is_some()),
        ("subjectAltNames", !t.subject_alt_names.is_empty()),
        ("verifyCertificateSpki", !t.verify_certificate_spki.is_empty()),
        ("verifyCertificateHash", !t.verify_certificate_hash.is_empty()),
        ("cipherSuites", !t.cipher_suites.is_empty()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(f, _)| (f, "not supported by weft's gateway".to_owned()))
    .collect()
}
