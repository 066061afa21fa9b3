//! Following a control plane (`weft proxy --control-plane URL --node ID`): the proxy
//! long-polls `/v1/watch` for the mesh past the revision it has, compiles what
//! arrives with the same compiler as files, swaps it in, and acknowledges it
//! (`/v1/ack`); a mesh it cannot compile is refused (NACK, with the reason) and the
//! last good one stays. When the control plane is away the proxy keeps serving what
//! it has and retries with a jittered back-off, then resyncs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::state::Shared;

/// How long one watch waits at the control plane before it answers "nothing new".
const WATCH_WAIT: Duration = Duration::from_secs(25);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Compiles that take longer than this are followed by a pause as long as they took.
const COMPILE_PAUSE_OVER: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `http://host:port` → `host:port`.
pub fn authority(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("--control-plane {url:?}: an http:// URL is needed"))?;
    let a = rest.split('/').next().unwrap_or("");
    if a.is_empty() {
        return Err(format!("--control-plane {url:?}: no host"));
    }
    Ok(if a.contains(':') { a.to_owned() } else { format!("{a}:80") })
}

/// One HTTP/1.1 request to the control plane: (status, headers, body).
async fn call(authority: &str, method: &str, path: &str, timeout: Duration) -> Result<(u16, http::HeaderMap, Bytes), String> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority)
            .header("x-weft-client", "proxy")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status.as_u16(), parts.headers, body))
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| Err(format!("no answer from {authority} within {timeout:?}")))
}

/// Percent-encodes `s` for a query string (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `&namespace=…&labels=k=v,…`: what the control plane scopes this proxy's mesh by (its Sidecar).
pub fn identity_query(namespace: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("&namespace={}&labels={}", query_escape(namespace), query_escape(&labels.join(",")))
}

fn identity(shared: &Shared) -> String {
    identity_query(shared.metrics.source_namespace(), &shared.node.labels)
}

pub use crate::docs::Docs;

fn is_delta(headers: &http::HeaderMap) -> bool {
    headers.get("x-weft-mesh").is_some_and(|v| v == "delta")
}

/// Fetches the current mesh once (at start): (revision, documents).
pub async fn fetch(authority: &str, identity: &str, timeout: Duration) -> Result<(u64, Docs), String> {
    let (status, headers, body) = call(authority, "GET", &format!("/v1/mesh?x=1{identity}"), timeout).await?;
    if status != 200 {
        return Err(format!("control plane answered {status}"));
    }
    let rev = headers.get("x-weft-revision").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut docs = Docs::default();
    docs.apply(&String::from_utf8_lossy(&body), false);
    Ok((rev, docs))
}

/// Compiles and swaps in a mesh from the control plane; Err(reason) keeps the running one.
pub fn install(shared: &'static Shared, revision: u64, docs: &Docs) -> Result<(), String> {
    let (resources, snap, diags) = docs.build();
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

/// Follows the control plane forever, starting from `revision`.
pub async fn run(
    shared: &'static Shared,
    authority: String,
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
    let node_q = query_escape(&node);
    let mut nonce = String::new();
    loop {
        // Every watch carries the outcome of the last answer (an ACK, or a NACK with its
        // reason): a control plane that restarted learns it from the next one.
        let outcome = match &pending_ack {
            Some(Ok(r)) => format!("&nonce={nonce}&ack={r}"),
            Some(Err((r, why))) => format!("&nonce={nonce}&nack={r}&error={}", query_escape(why)),
            None => String::new(),
        };
        let path = format!("/v1/watch?node={node_q}&since={revision}&wait={}{outcome}{}", WATCH_WAIT.as_millis(), identity(shared));
        match call(&authority, "GET", &path, WATCH_WAIT + Duration::from_secs(5)).await {
            Ok((200, headers, body)) => {
                backoff = BACKOFF_MIN;
                nonce = headers.get("x-weft-nonce").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let rev = headers.get("x-weft-revision").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(revision);
                // (Our documents follow the control plane's revisions, installed or not.)
                let delta = is_delta(&headers);
                docs.apply(&String::from_utf8_lossy(&body), delta);
                let c = &shared.metrics.counters;
                c.control_plane_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                (if delta { &c.control_plane_deltas } else { &c.control_plane_full }).fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let outcome = install(shared, rev, &docs);
                let took = started.elapsed();
                pending_ack = Some(match outcome {
                    Ok(()) => Ok(rev),
                    Err(why) => {
                        tracing::error!("control plane revision {rev} rejected, keeping revision {revision}: {why}");
                        shared.metrics.counters.control_plane_nacks.fetch_add(1, Ordering::Relaxed);
                        Err((rev, why))
                    }
                });
                // A refused revision is not asked for again; the next one may be good.
                revision = rev;
                // A big mesh takes a while to compile: under a stream of changes, spend at
                // most half the time compiling (the changes meanwhile come in one delta).
                if took > COMPILE_PAUSE_OVER {
                    tokio::time::sleep(took).await;
                }
            }
            Ok((304, _, _)) => backoff = BACKOFF_MIN,
            Ok((status, _, body)) => {
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

async fn sleep_backoff(backoff: &mut Duration) {
    let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
    tokio::time::sleep(jittered).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}
