//! Following a control plane (`weft proxy --control-plane URL --node ID`): the proxy
//! fetches the mesh at start (`POST /v1/mesh`), then long-polls `POST /v1/watch` for
//! what changed past the revision it has, compiles what arrives with the same compiler
//! as files, swaps it in, and reports the outcome — an ACK, or a NACK with the reason
//! (a mesh it cannot compile; the last good one stays) — on its next watch, naming the
//! answer by its nonce. When the control plane is away the proxy keeps serving what it
//! has and retries with a jittered back-off, then resyncs. The messages are
//! `weft_api`'s: nothing here frames them by hand. An `https://` control plane is
//! verified with the mesh root (`--ca-file`); a proxy with an identity presents it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use weft_api::mesh::MAX_ANSWER_BYTES;
use weft_api::{Identity, MeshAnswer, Message, Outcome, WatchRequest};
use weft_tls::WorkloadIdentity;

use crate::incremental::Applied;
use crate::state::Shared;

/// How long one watch waits at the control plane before it answers "nothing new".
const WATCH_WAIT: Duration = Duration::from_secs(25);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Compiles that take longer than this are followed by a pause as long as they took.
const COMPILE_PAUSE_OVER: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a prompt call waits on a kept-alive connection before it is made on a new one.
const PROMPT_ON_POOLED: Duration = Duration::from_secs(1);
/// Kept-alive connections to the control plane are probed by TCP after this long idle
/// (then every 5 s, 3 times): one whose peer is gone is closed, not reused.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
/// How long after a watch is sent an on-demand proxy makes its spare connection ready.
const SPARE_AFTER: Duration = Duration::from_millis(50);

/// The control plane a proxy follows: where, the token it presents, and for an
/// `https://` URL the TLS it speaks (the server verified with the mesh root).
#[derive(Clone)]
pub struct ControlPlane {
    pub authority: String,
    pub token: Option<String>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// Kept-alive connections (shared by clones).
    pool: crate::cp_pool::Pool,
}

impl ControlPlane {
    /// `roots_pem`: the CA file's bundle, needed for an `https://` URL; `identity`: the
    /// workload certificate presented in the handshake, once the proxy has one.
    pub fn new(
        url: &str,
        token: Option<String>,
        roots_pem: Option<&str>,
        identity: Option<Arc<WorkloadIdentity>>,
    ) -> Result<ControlPlane, String> {
        if let Some(t) = &token {
            if t.is_empty() || t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("the control plane token must be 1 to 4096 printable characters".into());
            }
        }
        let target = ApiUrl::parse(url)?;
        let tls = match (target.https, roots_pem) {
            (false, _) => None,
            (true, None) => {
                return Err(format!("--control-plane {url}: an https:// control plane needs its CA: --ca-file (or $WEFT_CA_FILE)"))
            }
            (true, Some(roots)) => {
                let config = weft_tls::config::control_plane_client_config(roots, identity).map_err(|e| format!("--ca-file: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), target.server_name()?))
            }
        };
        Ok(ControlPlane { authority: target.authority, token, tls, pool: Default::default() })
    }

    /// A new HTTP/1.1 connection (TCP, then TLS when the API is HTTPS).
    async fn open(&self) -> Result<crate::cp_pool::Conn, String> {
        let stream = connect(self).await?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        // (Ready once its task has run: the pool keeps ready connections only.)
        tx.ready().await.map_err(|e| e.to_string())?;
        Ok(crate::cp_pool::Conn::new(tx))
    }

    /// Makes sure a connection waits idle, for a call that should not wait for a
    /// handshake (an on-demand ask while the long poll holds the other).
    pub(crate) async fn keep_spare(&self) {
        if !self.pool.has_usable() {
            if let Ok(c) = self.open().await {
                self.pool.put(c);
            }
        }
    }
}

/// A control plane's URL: `http://host[:port]` (a `--insecure` one) or `https://host[:port]`.
pub struct ApiUrl {
    pub https: bool,
    /// host:port (port 80 or 443 when the URL has none).
    pub authority: String,
    /// The host, without an IPv6 address's brackets: what the certificate must name.
    pub host: String,
}

impl ApiUrl {
    pub fn parse(url: &str) -> Result<ApiUrl, String> {
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(format!("{url:?}: an https:// (or http://) URL is needed")),
        };
        let a = rest.split('/').next().unwrap_or("");
        let (host, port) = match a.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => {
                (h, Some(p))
            }
            _ => (a, None),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = port.unwrap_or(if https { "443" } else { "80" });
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Ok(ApiUrl { https, authority: format!("{host}:{port}"), host: bare.to_owned() })
    }

    /// The name the server's certificate is checked against.
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone()).map_err(|e| format!("{:?} cannot name a TLS server: {e}", self.host))
    }
}

/// A connection to the control plane, with TLS when it serves HTTPS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

async fn connect(cp: &ControlPlane) -> Result<Box<dyn Io>, String> {
    let authority = cp.authority.as_str();
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(Duration::from_secs(5)).with_retries(3);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    match &cp.tls {
        None => Ok(Box::new(stream)),
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), stream).await.map_err(|e| format!("TLS with {authority}: {e}"))?;
            Ok(Box::new(tls))
        }
    }
}

/// One HTTP/1.1 POST to the control plane: (status, body), on a kept-alive connection
/// when one waits (tried again on a new one if that fails: the server may have just
/// closed it), which goes back to the pool once its answer is read. The body read is
/// bounded by the largest mesh answer.
pub(crate) async fn call(cp: &ControlPlane, path: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, Bytes), String> {
    call_with(cp, path, body, timeout, true).await
}

/// [`call`]; `prompt`: the control plane answers at once (everything but a long poll),
/// so a kept-alive connection that has not answered within [`PROMPT_ON_POOLED`] is taken
/// for dead (a peer or middlebox gone without a reset) and the call made on a new one.
pub(crate) async fn call_with(
    cp: &ControlPlane,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    prompt: bool,
) -> Result<(u16, Bytes), String> {
    let authority = cp.authority.as_str();
    let body = Bytes::from(body);
    let fut = async {
        if let Some(conn) = cp.pool.take() {
            let attempt = call_on(cp, conn, path, body.clone());
            let answered = if prompt { tokio::time::timeout(PROMPT_ON_POOLED, attempt).await.ok() } else { Some(attempt.await) };
            if let Some(Ok(answer)) = answered {
                return Ok(answer);
            }
        }
        call_on(cp, cp.open().await?, path, body).await
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| Err(format!("no answer from {authority} within {timeout:?}")))
}

/// [`call`] on connection `conn`, kept for the next call when the answer is whole.
async fn call_on(cp: &ControlPlane, mut conn: crate::cp_pool::Conn, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
    let authority = cp.authority.as_str();
    let tx = &mut conn.tx;
    {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-weft-client", "proxy");
        if let Some(t) = &cp.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        tx.ready().await.map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
        // (hyper readies the connection for the next request once this one is done.)
        let _ = tx.ready().await;
        cp.pool.put(conn);
        Ok((parts.status.as_u16(), body))
    }
}

/// What the control plane scopes this proxy's mesh by (its Sidecar): its namespace and labels.
pub fn identity_query(namespace: &str, labels: &std::collections::BTreeMap<String, String>) -> Identity {
    Identity { namespace: namespace.to_owned(), labels: labels.clone() }
}

pub use crate::docs::{Change, Docs, InPlace};

/// Fetches the current mesh once (at start): (revision, documents). The documents keep
/// the answer's nonce ([`Docs::nonce`]), which the first watch's ACK names.
pub async fn fetch(cp: &ControlPlane, identity: &Identity, on_demand: bool, timeout: Duration) -> Result<(u64, Docs), String> {
    // On demand, nothing asked for yet: the mesh's names and its host-less policies.
    let hosts = on_demand.then(Vec::new);
    let req = WatchRequest { identity: Some(identity.clone()), hosts, ..Default::default() };
    let (status, body) = call(cp, "/v1/mesh", req.encode(), timeout).await?;
    if status != 200 {
        return Err(format!("control plane answered {status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    let answer = MeshAnswer::decode(&body).map_err(|e| e.to_string())?;
    let mut docs = Docs::default();
    docs.apply(&answer);
    docs.names = answer.names;
    Ok((answer.revision, docs))
}

/// Compiles and swaps in a mesh from the control plane; Err(reason) keeps the running one.
pub fn install(shared: &'static Shared, revision: u64, docs: &Docs) -> Result<(), String> {
    let (resources, snap, diags) = docs.build_for(&shared.view, &shared.role);
    match shared.install_built(resources, snap, diags) {
        Ok(d) => {
            for w in &d.warnings {
                tracing::warn!("{w}");
            }
            shared.metrics.counters.control_plane_revision.store(revision, Ordering::Relaxed);
            tracing::info!("control plane revision {revision} active");
            Ok(())
        }
        Err(d) => Err(d.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")),
    }
}

/// Applies endpoints and VirtualServices in place; Err(reason) keeps the running
/// runtime; None: the change needs the whole compile (nothing was swapped).
fn update(shared: &'static Shared, revision: u64, change: &crate::docs::InPlace) -> Option<Result<(), String>> {
    match shared.update_in_place(&change.endpoints, &change.routes) {
        Applied::Installed(d) => {
            for w in change.warnings.iter().chain(&d.warnings) {
                tracing::warn!("{w}");
            }
            shared.metrics.counters.control_plane_revision.store(revision, Ordering::Relaxed);
            let (e, r) = (change.endpoints.len(), change.routes.len());
            tracing::debug!("control plane revision {revision} active (endpoints of {e} services, {r} VirtualServices, in place)");
            Some(Ok(()))
        }
        Applied::Refused(d) => Some(Err(d.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))),
        Applied::Whole(why) => {
            tracing::debug!("control plane revision {revision}: compiled whole ({why})");
            None
        }
    }
}

/// Follows the control plane forever, starting from `revision`.
pub async fn run(
    shared: &'static Shared,
    cp: ControlPlane,
    node: String,
    mut revision: u64,
    mut docs: Docs,
    mut pending_ack: Option<Result<u64, (u64, String)>>,
) {
    if revision > 0 {
        // The whole mesh fetched at start.
        let c = &shared.metrics.counters;
        c.control_plane_full.fetch_add(1, Ordering::Relaxed);
        c.control_plane_bytes.fetch_add(docs.received() as u64, Ordering::Relaxed);
    }
    let mut backoff = BACKOFF_MIN;
    let identity = identity_query(shared.metrics.source_namespace(), &shared.node.labels);
    // (The answer the outcome refers to: the fetch at start's, then each watch's.)
    let mut nonce = docs.nonce();
    let discovery = shared.discovery.as_ref();
    if let (Some(d), Some(names)) = (discovery, docs.names.take()) {
        d.installed(0, Some(&names));
        shared.metrics.counters.discovery_names.store(d.names_len() as u64, Ordering::Relaxed);
    }
    // On demand: the generation of hosts the last answer was asked with, and the revision
    // of the names held.
    let mut asked_gen = 0;
    // The hosts that answer was asked with, in the order sent.
    let mut asked_hosts: Vec<String> = Vec::new();
    let mut names_since = if discovery.is_some_and(|d| d.names_len() > 0) { revision } else { 0 };
    if discovery.is_some() {
        tokio::spawn(crate::discovery::drop_idle_forever(shared));
    }
    // Whether the runtime is compiled from the documents held (not after a NACK): only
    // then can a delta of endpoints be applied to it in place.
    let mut in_sync = true;
    loop {
        let (hosts, gen) = match discovery {
            Some(d) => {
                let (h, g) = d.hosts();
                shared.metrics.counters.discovery_hosts.store(h.len() as u64, Ordering::Relaxed);
                (Some(h), g)
            }
            None => (None, 0),
        };
        // A new set of hosts: only hosts added to those held are asked for as such (the
        // answer brings what they add); any other change of the set, its scoped mesh whole.
        let (since, hosts, newly) = match hosts {
            Some(h) if gen != asked_gen => match widened(&asked_hosts, h, revision) {
                Ok((ordered, newly)) => (revision, Some(ordered), Some(newly)),
                Err(h) => (0, Some(h), None),
            },
            h => (revision, h, None),
        };
        let sent_hosts = hosts.clone();
        // Every watch carries the outcome of the last answer (an ACK, or a NACK with its
        // reason): a control plane that restarted learns it from the next one.
        let last = pending_ack.as_ref().map(|o| match o {
            Ok(r) => Outcome::Ack { nonce, revision: *r },
            Err((r, why)) => Outcome::nack(nonce, *r, why),
        });
        let req = WatchRequest {
            node: Some(node.clone()),
            since,
            hosts,
            names_since: discovery.map(|_| names_since),
            newly,
            wait_ms: WATCH_WAIT.as_millis() as u64,
            identity: Some(identity.clone()),
            last,
            cert_not_after: shared
                .identity
                .as_ref()
                .and_then(|i| i.expires_at().duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        };
        // (An ask — a new set of hosts — is answered at once; otherwise this is a long poll.)
        let ask = sent_hosts.is_some() && gen != asked_gen;
        let watch = call_with(&cp, "/v1/watch", req.encode(), WATCH_WAIT + Duration::from_secs(5), ask);
        let answered = match discovery {
            // A host asked for meanwhile: this watch's answer would be for the old set.
            // (Meanwhile a spare connection is made ready, so that the ask need not wait
            // for a handshake: the watch's connection goes with the watch. Made a moment
            // after the call, so that its handshake does not compete with an ask's answer.)
            Some(d) => tokio::select! {
                r = watch => Some(r),
                _ = async {
                    tokio::time::sleep(SPARE_AFTER).await;
                    cp.keep_spare().await;
                    std::future::pending::<()>().await
                } => None,
                _ = d.wake.notified() => None,
            },
            None => Some(watch.await),
        };
        let Some(answered) = answered else { continue };
        match answered {
            Ok((200, body)) => match MeshAnswer::decode(&body) {
                Ok(answer) => {
                    backoff = BACKOFF_MIN;
                    nonce = answer.nonce;
                    let (outcome, took) = take(shared, &mut docs, &answer, revision, in_sync);
                    in_sync = outcome.is_ok();
                    pending_ack = Some(outcome);
                    if let Some(d) = discovery {
                        asked_gen = gen;
                        asked_hosts = sent_hosts.unwrap_or_default();
                        if answer.names.is_some() {
                            names_since = answer.revision;
                        }
                        d.installed(gen, answer.names.as_deref());
                        shared.metrics.counters.discovery_names.store(d.names_len() as u64, Ordering::Relaxed);
                    }
                    // A refused revision is not asked for again; the next one may be good.
                    revision = answer.revision;
                    // A big mesh takes a while to compile: under a stream of changes, spend at
                    // most half the time compiling (the changes meanwhile come in one delta).
                    if took > COMPILE_PAUSE_OVER {
                        tokio::time::sleep(took).await;
                    }
                }
                // An answer that does not decode: nothing in it can be trusted, not even its
                // nonce (so no NACK); asked again after a back-off.
                Err(e) => {
                    tracing::warn!("the control plane's answer: {e}; serving revision {revision}, retrying in {backoff:?}");
                    sleep_backoff(&mut backoff).await;
                }
            },
            Ok((304, _)) => backoff = BACKOFF_MIN,
            Ok((status, body)) => {
                tracing::warn!("control plane answered {status}: {}", String::from_utf8_lossy(&body).trim());
                sleep_backoff(&mut backoff).await;
            }
            Err(e) => {
                tracing::warn!("control plane unreachable ({e}); serving revision {revision}, retrying in {backoff:?}");
                sleep_backoff(&mut backoff).await;
            }
        }
    }
}

/// `hosts` as the hosts `held` (asked for at `revision`) followed by those added, and how
/// many were added; Err(hosts) when one held is gone (dropped as idle) or nothing is held.
fn widened(held: &[String], hosts: Vec<String>, revision: u64) -> Result<(Vec<String>, u32), Vec<String>> {
    let now: std::collections::HashSet<&str> = hosts.iter().map(String::as_str).collect();
    if revision == 0 || held.is_empty() || held.iter().any(|h| !now.contains(h.as_str())) {
        return Err(hosts);
    }
    let was: std::collections::HashSet<&str> = held.iter().map(String::as_str).collect();
    let added: Vec<String> = hosts.iter().filter(|h| !was.contains(h.as_str())).cloned().collect();
    let newly = added.len() as u32;
    Ok((held.iter().cloned().chain(added).collect(), newly))
}

/// Takes an answer: applies it to the documents held (which follow the control plane's
/// revisions, installed or not), counts it, and installs the result — in place when it
/// changed only endpoints and VirtualServices that qualify and the runtime is compiled
/// from the documents held before (`in_sync`), else the whole set compiled; (the
/// outcome to report, how long it took).
pub fn take(
    shared: &'static Shared,
    docs: &mut Docs,
    answer: &MeshAnswer<'_>,
    held: u64,
    in_sync: bool,
) -> (Result<u64, (u64, String)>, Duration) {
    let started = std::time::Instant::now();
    let change = docs.apply(answer);
    let c = &shared.metrics.counters;
    c.control_plane_bytes.fetch_add(answer.bytes as u64, Ordering::Relaxed);
    (if answer.is_delta() { &c.control_plane_deltas } else { &c.control_plane_full }).fetch_add(1, Ordering::Relaxed);
    let rev = answer.revision;
    let in_place = match &change {
        Change::InPlace(c) if in_sync => update(shared, rev, c),
        _ => None,
    };
    let installed = in_place.unwrap_or_else(|| install(shared, rev, docs));
    let outcome = installed.map(|()| rev).map_err(|why| {
        tracing::error!("control plane revision {rev} rejected, keeping revision {held}: {why}");
        c.control_plane_nacks.fetch_add(1, Ordering::Relaxed);
        (rev, why)
    });
    (outcome, started.elapsed())
}

async fn sleep_backoff(backoff: &mut Duration) {
    let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
    tokio::time::sleep(jittered).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

#[cfg(test)]
mod url_tests {
    use super::ApiUrl;

    #[test]
    fn api_urls_give_scheme_authority_and_the_name_to_verify() {
        let u = ApiUrl::parse("https://cp.example:15010/").unwrap();
        assert!(u.https);
        assert_eq!((u.authority.as_str(), u.host.as_str()), ("cp.example:15010", "cp.example"));
        let u = ApiUrl::parse("https://[::1]:15010").unwrap();
        assert_eq!((u.authority.as_str(), u.host.as_str()), ("[::1]:15010", "::1"));
        assert!(u.server_name().is_ok());
        assert_eq!(ApiUrl::parse("https://10.0.0.5").unwrap().authority, "10.0.0.5:443");
        let u = ApiUrl::parse("http://127.0.0.1:15010").unwrap();
        assert!(!u.https);
        assert_eq!(u.authority, "127.0.0.1:15010");
        assert!(ApiUrl::parse("ftp://x").is_err());
        assert!(ApiUrl::parse("https://").is_err());
        assert!(ApiUrl::parse("https://:443").is_err());
    }

    #[test]
    fn an_https_control_plane_needs_a_ca_file() {
        let e = super::ControlPlane::new("https://127.0.0.1:15010", None, None, None).err().unwrap_or_default();
        assert!(e.contains("--ca-file"), "{e}");
        assert!(super::ControlPlane::new("http://127.0.0.1:15010", None, None, None).is_ok());
    }
}
