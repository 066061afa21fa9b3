//! `jwksUri`: a RequestAuthentication's keys fetched in the background, as Istio's
//! proxies do: at start, then every 20 minutes; plain HTTP or HTTPS (the system's
//! trust store); at most 1 MiB within the rule's `timeout` (default 5 s). A failed
//! fetch, or a JWKS that does not parse, keeps the keys already held (and is logged)
//! and is tried again after a backoff of 1 s doubling to 1 min. Until a first fetch
//! succeeds, tokens of that issuer fail verification (401).
//!
//! The fetches run on a thread of their own (`weft-jwks`), apart from the workers.
//! A [`JwksFetcher`] belongs to the live state of the config that asked for it
//! ([`crate::live::LiveState`]): a reload that keeps the URI keeps the fetcher and its
//! keys; one without it drops the fetcher, which stops its task.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_authz::jwt::{JwksCache, KeySet, RemoteKeys};

/// How often keys are fetched again (Istio's default refresh).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// The largest JWKS read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// One `jwksUri`'s keys and the task that keeps them fresh (stopped on drop).
pub struct JwksFetcher {
    pub timeout: Duration,
    pub cache: Arc<JwksCache>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for JwksFetcher {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl JwksFetcher {
    /// Starts fetching `uri` on the fetchers' own runtime ([`background`]), whatever
    /// runtime, if any, the caller runs on: `weft proxy` compiles its first config
    /// before it starts one.
    pub fn start(uri: &str, timeout: Duration, metrics: &'static weft_telemetry::Metrics) -> Arc<JwksFetcher> {
        let cache = Arc::new(JwksCache::default());
        let task = match (uri.parse::<Uri>(), background()) {
            (Ok(parsed), Some(rt)) => Some(rt.spawn(keep_fresh(parsed, timeout, cache.clone(), metrics)).abort_handle()),
            _ => {
                tracing::error!(uri, "jwksUri cannot be fetched: tokens of its issuer will be refused");
                None
            }
        };
        Arc::new(JwksFetcher { timeout, cache, task })
    }
}

/// One small runtime on a thread of its own (`weft-jwks`) for every fetcher of the
/// process, started at the first `jwksUri`: fetches never run on, or wait for, the
/// workers that serve requests.
fn background() -> Option<&'static tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let handle = rt.handle().clone();
        let run = move || rt.block_on(std::future::pending::<()>());
        std::thread::Builder::new().name("weft-jwks".into()).spawn(run).ok()?;
        Some(handle)
    })
    .as_ref()
}

/// The fetched keys a Jwt filter reads, by URI.
#[derive(Default)]
pub struct RemoteJwks(pub HashMap<String, Arc<JwksCache>>);

impl RemoteKeys for RemoteJwks {
    fn keys(&self, uri: &str) -> Option<Arc<KeySet>> {
        self.0.get(uri).map(|c| c.load())
    }
}

async fn keep_fresh(uri: Uri, timeout: Duration, cache: Arc<JwksCache>, metrics: &'static weft_telemetry::Metrics) {
    let mut retry = FIRST_RETRY;
    loop {
        let fetched = match tokio::time::timeout(timeout, fetch_keys(&uri)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let outcome = fetched.and_then(|body| cache.update(&body).map_err(|e| format!("{e}; the previous keys stay")));
        let wait = match outcome {
            Ok(keys) => {
                metrics.counters.jwks_fetched.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%uri, keys, "jwksUri fetched");
                retry = FIRST_RETRY;
                REFRESH
            }
            Err(e) => {
                metrics.counters.jwks_fetch_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%uri, "jwksUri fetch failed: {e}");
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The JWKS `uri` names: itself, or, for an issuer's OpenID configuration (a rule
/// without `jwks` or `jwksUri`), the `jwks_uri` it names.
async fn fetch_keys(uri: &Uri) -> Result<String, String> {
    if !uri.path().ends_with(weft_authz::jwt::OPENID_CONFIGURATION) {
        return fetch(uri).await;
    }
    let doc = fetch(uri).await.map_err(|e| format!("OpenID configuration: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| format!("OpenID configuration: {e}"))?;
    // OpenID Connect Discovery: the document is the issuer's own (its `issuer` is the URL
    // it was fetched under, less the well-known path).
    let base = uri.to_string();
    let base = base.strip_suffix(weft_authz::jwt::OPENID_CONFIGURATION).unwrap_or(&base).trim_end_matches('/').to_owned();
    let issuer = v.get("issuer").and_then(|i| i.as_str()).unwrap_or("").trim_end_matches('/');
    if issuer != base && Some(issuer) != base.strip_prefix("https://") {
        return Err(format!("the OpenID configuration names issuer {:?}, not {base:?}", weft_api::truncate(issuer, 128)));
    }
    let jwks = v.get("jwks_uri").and_then(|j| j.as_str()).ok_or("the OpenID configuration names no jwks_uri")?;
    let parsed: Uri = jwks.parse().map_err(|_| format!("jwks_uri {:?} is not a URL", weft_api::truncate(jwks, 128)))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!("jwks_uri {:?} is not an http(s) URL", weft_api::truncate(jwks, 128)));
    }
    fetch(&parsed).await.map_err(|e| format!("{jwks}: {e}"))
}

/// One GET of `uri`: the body of a 2xx answer, at most [`MAX_JWKS_BYTES`].
async fn fetch(uri: &Uri) -> Result<String, String> {
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']');
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "weft")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if !https {
        return get(TokioIo::new(tcp), req).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| format!("server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    get(TokioIo::new(tls), req).await
}

async fn get<I>(io: I, req: Request<Empty<Bytes>>) -> Result<String, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    let exchange = async move {
        let resp = tx.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body (at most {MAX_JWKS_BYTES} bytes): {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    };
    // The connection is driven here, not by a task of its own: when the fetcher is
    // stopped, the socket closes with it.
    let drive = async move {
        let _ = conn.await;
        std::future::pending::<Result<String, String>>().await
    };
    tokio::select! {
        r = exchange => r,
        r = drive => r,
    }
}

/// HTTPS with the system's trust store, built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found: an https jwksUri will not verify");
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            Arc::new(config.unwrap_or_else(|_| unreachable_tls()))
        })
        .clone()
}

/// aws-lc-rs supports rustls' default protocol versions; should that ever fail, a
/// config with no roots refuses every server instead of panicking.
fn unreachable_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
}
