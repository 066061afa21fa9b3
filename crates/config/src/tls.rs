//! DestinationRule `tls` compiled into what the proxy needs to originate TLS: a rustls
//! `ClientConfig` built once per cluster, here, when the config is compiled.
//!
//! The files (`clientCertificate`, `privateKey`, `caCertificates`) are read and parsed
//! at compile time, not per connection: a missing file, garbage PEM, a key that does
//! not match its certificate or a file over [`MAX_PEM_BYTES`] is a config error with
//! the field's path — `weft validate` reports it and a proxy NACKs the push, keeping
//! its last good config — instead of a 503 on every request. Paths are read by the
//! process that compiles (relative ones from its working directory), so they must
//! exist where the proxy runs, as in Istio where they are paths in the sidecar.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::istio::{ClientTlsSettings, TlsModeSetting};
use crate::snapshot::UpstreamProtocol;

/// Certificate and key files larger than this are refused (a PEM chain is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Client session cache entries per cluster (TLS 1.3 tickets and 1.2 sessions).
const SESSION_CACHE: usize = 256;

/// The TLS a cluster's connections originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsMode {
    Simple,
    Mutual,
    /// The mesh's mTLS with the proxy's workload certificate. Compiled here; the
    /// certificate comes from the identity provider at run time (see the proxy's
    /// transport), and without one such a cluster fails closed.
    IstioMutual,
}

/// A cluster's compiled `tls` (absent for `DISABLE`).
#[derive(Clone, serde::Serialize)]
pub struct UpstreamTls {
    pub mode: TlsMode,
    /// `sni`, parsed: the name sent in the ClientHello and verified in the certificate.
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    /// The files it was built from, for `/config_dump` (never their contents).
    pub ca_certificates: Option<String>,
    pub client_certificate: Option<String>,
    /// The cluster's service host when it is a DNS name: the SNI when `sni` is unset
    /// and the endpoint is an IP address.
    pub host_name: Option<String>,
    /// Built once here, shared by every connection of the cluster (with its session
    /// cache). `None` for `ISTIO_MUTUAL`, and for a setting that failed to compile
    /// (already reported as an error): connections then fail closed with `error`.
    #[serde(skip)]
    pub client_config: Option<Arc<ClientConfig>>,
    /// For the mesh's mTLS over HTTP/2: the same config offering only `http/1.1`, for
    /// upgrades (WebSocket), which HTTP/1.1 carries and an h2 connection cannot.
    #[serde(skip)]
    pub upgrade_client_config: Option<Arc<ClientConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A hash of the settings and the files' contents: two `UpstreamTls` are equal
    /// when it matches, so a reload with unchanged TLS keeps the endpoints' pools.
    #[serde(skip)]
    fingerprint: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode)
            .field("sni", &self.sni)
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// The mesh's mTLS to a peer sidecar (auto mTLS, or `ISTIO_MUTUAL` filled in): the
    /// peer must prove one of `subject_alt_names` (any mesh identity when empty); the
    /// proxy adds the client config built from its workload certificate.
    pub fn istio_mutual(subject_alt_names: Vec<String>, protocol: UpstreamProtocol) -> UpstreamTls {
        let mut fp = Fingerprint::default();
        fp.add(format!("ISTIO_MUTUAL|{subject_alt_names:?}|{protocol:?}").as_bytes());
        UpstreamTls {
            mode: TlsMode::IstioMutual,
            sni: None,
            subject_alt_names,
            insecure_skip_verify: false,
            ca_certificates: None,
            client_certificate: None,
            host_name: None,
            client_config: None,
            upgrade_client_config: None,
            error: None,
            fingerprint: fp.0,
        }
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        self.fingerprint == o.fingerprint && self.mode == o.mode && self.error == o.error && self.host_name == o.host_name
    }
}

/// One problem in a `tls` block: the field under `tls` (empty for the block) and the message.
pub type TlsError = (&'static str, String);

/// Compiles `tls` for a cluster of `host` speaking `protocol` (which picks the ALPN
/// offered). `Ok(None)` for `DISABLE`.
pub fn compile(t: &ClientTlsSettings, host: &str, protocol: UpstreamProtocol) -> Result<Option<UpstreamTls>, Vec<TlsError>> {
    let mut errs = Vec::new();
    let mode = match t.mode {
        TlsModeSetting::Disable => return Ok(None),
        TlsModeSetting::Simple => TlsMode::Simple,
        TlsModeSetting::Mutual => TlsMode::Mutual,
        TlsModeSetting::IstioMutual => TlsMode::IstioMutual,
    };
    if t.credential_name.is_some() {
        errs.push((
            "credentialName",
            "not supported: weft reads no Kubernetes secrets; give clientCertificate, privateKey and caCertificates as files".into(),
        ));
    }
    if t.ca_crl.is_some() {
        errs.push(("caCrl", "not supported (certificate revocation lists)".into()));
    }
    let sni = t.sni.as_deref().and_then(|s| match server_name(s) {
        Some(_) => Some(s.to_owned()),
        None => {
            errs.push(("sni", format!("{s:?} is not a valid DNS name or IP address")));
            None
        }
    });
    for (i, san) in t.subject_alt_names.iter().enumerate() {
        if san.is_empty() || san.len() > 1024 || san.chars().any(|c| c.is_control() || c.is_whitespace()) {
            errs.push(("subjectAltNames", format!("entry {i}, {san:?}, is not a valid subject alternative name")));
        }
    }
    let mut fp = Fingerprint::default();
    fp.add(format!("{:?}|{:?}|{:?}|{:?}|{protocol:?}", t.mode, t.sni, t.subject_alt_names, t.insecure_skip_verify).as_bytes());
    if mode == TlsMode::IstioMutual {
        for (field, set) in
            [("clientCertificate", &t.client_certificate), ("privateKey", &t.private_key), ("caCertificates", &t.ca_certificates)]
        {
            if set.is_some() {
                errs.push((field, "must not be set for ISTIO_MUTUAL (the mesh's workload certificate and root are used)".into()));
            }
        }
    }
    let roots = match (&t.ca_certificates, mode) {
        (Some(path), TlsMode::Simple | TlsMode::Mutual) => read_certs(path, &mut fp).map_err(|e| errs.push(("caCertificates", e))).ok(),
        _ => None,
    };
    let client = match mode {
        TlsMode::Mutual => {
            let cert = match &t.client_certificate {
                Some(p) => read_certs(p, &mut fp).map_err(|e| errs.push(("clientCertificate", e))).ok(),
                None => {
                    errs.push(("clientCertificate", "required for MUTUAL".into()));
                    None
                }
            };
            let key = match &t.private_key {
                Some(p) => read_key(p, &mut fp).map_err(|e| errs.push(("privateKey", e))).ok(),
                None => {
                    errs.push(("privateKey", "required for MUTUAL".into()));
                    None
                }
            };
            cert.zip(key)
        }
        _ => {
            for (field, set) in [("clientCertificate", &t.client_certificate), ("privateKey", &t.private_key)] {
                if set.is_some() && mode == TlsMode::Simple {
                    errs.push((field, "only used with mode MUTUAL".into()));
                }
            }
            None
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let insecure = t.insecure_skip_verify == Some(true);
    let client_config = match mode {
        TlsMode::IstioMutual => None,
        _ => Some(Arc::new(client_config(roots, client, &t.subject_alt_names, insecure, protocol).map_err(|e| vec![e])?)),
    };
    Ok(Some(UpstreamTls {
        mode,
        sni,
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: insecure,
        ca_certificates: t.ca_certificates.clone(),
        client_certificate: t.client_certificate.clone(),
        host_name: server_name(host).filter(|n| matches!(n, ServerName::DnsName(_))).map(|_| host.to_owned()),
        client_config,
        upgrade_client_config: None,
        error: None,
        fingerprint: fp.0,
    }))
}

impl UpstreamTls {
    /// A cluster whose `tls` did not compile (the error is reported and the config
    /// rejected): were it ever used, its connections fail instead of going out plain.
    pub fn failed(mode: TlsMode, error: String) -> Self {
        UpstreamTls {
            mode,
            sni: None,
            subject_alt_names: Vec::new(),
            insecure_skip_verify: false,
            ca_certificates: None,
            client_certificate: None,
            host_name: None,
            client_config: None,
            upgrade_client_config: None,
            fingerprint: 0,
            error: Some(error),
        }
    }
}

/// A name rustls accepts for SNI and verification (no NUL, newline or space passes).
pub fn server_name(s: &str) -> Option<ServerName<'static>> {
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    ServerName::try_from(s.to_owned()).ok()
}

#[derive(Default)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    fn add(&mut self, bytes: &[u8]) {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.0.hash(&mut h);
        bytes.hash(&mut h);
        self.0 = h.finish();
    }
}

fn read_bounded(path: &str, fp: &mut Fingerprint) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // A FIFO or a device would block the compile (or never end): regular files only.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path:?} is not a regular file"));
    }
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_BYTES + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{path:?} is larger than {} KiB; a PEM certificate or key file is a few KiB", MAX_PEM_BYTES / 1024));
    }
    fp.add(&buf);
    Ok(buf)
}

pub(crate) fn read_certs(path: &str, fp: &mut Fingerprint) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_bounded(path, fp)?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| format!("{path:?} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c).map_err(|e| format!("{path:?} holds a certificate that does not parse: {e}"))?;
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &str, fp: &mut Fingerprint) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_bounded(path, fp)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{path:?} holds no usable PEM private key: {e}"))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// The system's trust store (rustls-native-certs: `/etc/ssl/certs` and `SSL_CERT_FILE`
/// / `SSL_CERT_DIR` on Linux), loaded once per process. A mesh proxy runs on hosts
/// whose operators keep that store current; a compiled-in list (webpki-roots) would
/// need a weft release to drop a distrusted CA and could not trust a company CA.
fn system_roots() -> Arc<RootCertStore> {
    static R: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    R.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system CA certificates found: tls without caCertificates will trust no server");
        }
        Arc::new(store)
    })
    .clone()
}

fn client_config(
    roots: Option<Vec<CertificateDer<'static>>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    sans: &[String],
    insecure: bool,
    protocol: UpstreamProtocol,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(NoVerify(provider.clone()))
    } else {
        let store = match roots {
            Some(certs) => {
                let mut s = RootCertStore::empty();
                for c in certs {
                    s.add(c).map_err(|e| ("caCertificates", format!("not a usable CA certificate: {e}")))?;
                }
                Arc::new(s)
            }
            None => system_roots(),
        };
        let inner = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
            .build()
            .map_err(|e| ("caCertificates", format!("no usable CA certificate: {e}")))?;
        if sans.is_empty() {
            inner
        } else {
            Arc::new(SanVerifier { inner, sans: sans.to_vec() })
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client {
        Some((chain, key)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| ("privateKey", format!("does not go with clientCertificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        // The protocol follows each request; offering one would bind the connection to it.
        UpstreamProtocol::Client => Vec::new(),
    };
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE);
    Ok(cfg)
}

/// `subjectAltNames`: the chain is verified against the roots as usual, and then the
/// certificate must carry one of the names (DNS, IP or URI SANs, e.g. a SPIFFE ID)
/// instead of the SNI name, as Envoy does.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<WebPkiServerVerifier>,
    sans: Vec<String>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        // webpki checks the chain first and the name last: a name error means the chain is good.
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_) | Err(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
            }
            Err(e) => return Err(e),
        }
        let names = cert_sans(end_entity);
        if self.sans.iter().any(|want| names.iter().any(|have| have.eq_ignore_ascii_case(want))) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!("server certificate's SANs {names:?} include none of subjectAltNames {:?}", self.sans)))
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The DNS, URI and IP subject alternative names of a certificate.
fn cert_sans(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) => Some((*s).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `insecureSkipVerify: true`: any certificate is accepted (the handshake's signatures
/// are still checked, so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
