//! The control plane's HTTP API (JSON over HTTP/1.1), spoken by the `weft` client
//! commands; and `/v1/watch`, a long poll through which proxies follow the mesh.
//!
//! | method, path | what |
//! |---|---|
//! | `POST /v1/apply` | `{"files": [{"name", "text"}]}` → `{"revision", "changed"}` or 400 `{"errors"}` |
//! | `GET /v1/resources?kind=&name=&namespace=` | stored resources (JSON) |
//! | `DELETE /v1/resources?kind=&name=&namespace=` | deletes one → `{"revision"}` |
//! | `GET /v1/history` | every revision: when, what, by which client |
//! | `POST /v1/rollback?to=N` | restores the config as of revision N (a new revision) |
//! | `POST /v1/registry`, `DELETE /v1/registry?service=&address=` | register / deregister |
//! | `POST /v1/registry/heartbeat?service=&address=` | keeps a TTL registration alive |
//! | `GET /v1/registry` | registered endpoints |
//! | `GET /v1/mesh` | the whole mesh as YAML (`x-weft-revision`) |
//! | `GET /v1/watch?node=ID&since=N&wait=MS[&nonce=X&ack=N \| &nack=N&error=WHY]` | the mesh's changes since N once there are some (a delta, see [`crate::mesh`]), else 304 after `wait`; carries the ACK or NACK of the last answer (`x-weft-nonce` X) |
//! | `POST /v1/ack?node=ID&revision=N[&error=WHY]` | an ACK (or NACK) on its own |
//! | `GET /v1/status` | the proxies: acknowledged revision, lag, connected, NACKs |
//! | `GET /metrics` | revision, objects, registry size (Prometheus text) |

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};

use crate::plane::{canonical_kind, Plane, PlaneError, Registration};
use crate::store::{Revision, StoreError};

/// Tries of an operation while other control planes sharing the store commit first.
const TRIES: u32 = 10;

/// Runs a plane operation again (up to [`TRIES`] times) while another control plane
/// sharing the store commits first; the store has caught up before each new try.
macro_rules! retrying {
    ($call:expr) => {{
        let mut tries = 1;
        loop {
            match $call {
                Err(PlaneError::Store(StoreError::Conflict)) if tries < TRIES => tries += 1,
                r => break r,
            }
        }
    }};
}

/// The largest request body accepted (a whole directory of YAML fits easily).
pub const MAX_BODY: usize = 8 << 20;

pub struct Server {
    plane: Mutex<Plane>,
    /// The latest revision, for watchers.
    revision: watch::Sender<u64>,
    proxies: crate::proxies::Tracker,
    /// The revision proxies are told about: follows `revision`, at most once per
    /// [`PUSH_WINDOW`] (changes in between go out together).
    pushed: watch::Sender<u64>,
    /// The mesh as documents, for full answers and deltas.
    index: std::sync::Mutex<crate::mesh::Index>,
    /// Sidecar choices by (config revision, namespace, labels).
    sidecars: std::sync::Mutex<(u64, HashMap<String, ChosenSidecar>)>,
    /// Registry changes queued for the next group commit.
    pending: std::sync::Mutex<Pending>,
}

/// Pushes to proxies are coalesced: the first change goes out at once, later ones at
/// most this often (Istio debounces for 100 ms). At 1,000 changes a second a proxy
/// gets 20 deltas, not 1,000.
const PUSH_WINDOW: Duration = Duration::from_millis(50);

/// Registry changes committed together at most (on etcd, two operations or so each in
/// one transaction; etcd allows 128 by default).
const MAX_BATCH: usize = 40;

type Resp = Response<Full<Bytes>>;

enum RegistryOp {
    Register(Registration),
    /// (service, address)
    Deregister(String, String),
}

type Outcome = (Result<Option<Revision>, PlaneError>, u64);

/// Registry changes waiting for the plane, with where their outcome goes.
type Pending = Vec<(String, RegistryOp, tokio::sync::oneshot::Sender<Outcome>)>;

/// The Sidecar (its key and spec) that scopes a proxy, if any.
type ChosenSidecar = Option<(String, weft_config::istio::Sidecar)>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Resp {
    reply(status, "application/json", v.to_string() + "\n")
}

fn error(e: PlaneError) -> Resp {
    match e {
        PlaneError::Invalid(errors) => json_reply(StatusCode::BAD_REQUEST, &json!({ "errors": errors })),
        PlaneError::NotFound(m) => json_reply(StatusCode::NOT_FOUND, &json!({ "errors": [m] })),
        PlaneError::Store(e @ (StoreError::Etcd(_) | StoreError::Conflict)) => {
            json_reply(StatusCode::SERVICE_UNAVAILABLE, &json!({ "errors": [e.to_string()] }))
        }
        PlaneError::Store(e) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "errors": [e.to_string()] })),
    }
}

fn committed(rev: Option<Revision>, current: u64) -> Resp {
    match rev {
        Some(r) => {
            json_reply(StatusCode::OK, &json!({"revision": r.revision, "changed": r.changes.iter().map(|c| &c.key).collect::<Vec<_>>()}))
        }
        None => json_reply(StatusCode::OK, &json!({"revision": current, "changed": []})),
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri().query().unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), percent_decode(v))).collect()
}

/// A proxy's `namespace` and `labels` (`k=v,k2=v2`) from its query, when it gave them.
fn proxy_of(q: &HashMap<String, String>) -> Option<(String, BTreeMap<String, String>)> {
    let ns = q.get("namespace")?.clone();
    let labels = q
        .get("labels")
        .map(|l| l.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default();
    Some((ns, labels))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Server {
    pub fn new(plane: Plane) -> Arc<Server> {
        let (revision, _) = watch::channel(plane.revision());
        let (pushed, _) = watch::channel(plane.revision());
        Arc::new(Server {
            plane: Mutex::new(plane),
            revision,
            pushed,
            proxies: Default::default(),
            index: Default::default(),
            sidecars: Default::default(),
            pending: Default::default(),
        })
    }

    /// A registration or deregistration, group-committed: whoever takes the plane
    /// commits every change queued by then, each its own revision, with one fsync.
    /// (1,000 changes a second, each fsync'd alone, queued behind each other.)
    async fn registry_change(&self, client: &str, op: RegistryOp) -> Resp {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        if let Ok(mut q) = self.pending.lock() {
            q.push((client.to_owned(), op, tx));
        }
        loop {
            {
                let mut p = self.plane.lock().await;
                self.commit_batch(&mut p).await;
            }
            // Done by us or by whoever held the plane before; else ours is further back
            // in the queue than one batch: take the next.
            match rx.try_recv() {
                Ok((r, current)) => return self.finish(r, current),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => continue,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return json_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({"errors": ["the change was dropped"]}))
                }
            }
        }
    }

    /// Commits up to [`MAX_BATCH`] queued registry changes as one group (again, from
    /// the top, when another control plane on the same etcd committed first). The
    /// plane stays locked meanwhile, so the group's own changes wait, not others.
    async fn commit_batch(&self, p: &mut Plane) {
        let batch: Pending = self
            .pending
            .lock()
            .map(|mut q| {
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            })
            .unwrap_or_default();
        if batch.is_empty() {
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        for attempt in 1..=TRIES {
            results.clear();
            p.store_mut().defer();
            for (client, op, _) in &batch {
                results.push(match op {
                    RegistryOp::Register(reg) => p.register(client, reg.clone()).await,
                    RegistryOp::Deregister(s, a) => p.deregister(client, s, a).await,
                });
            }
            match p.store_mut().flush().await {
                Ok(()) => break,
                // (At once: the store has just caught up, the sooner the better.)
                Err(StoreError::Conflict) if attempt < TRIES => continue,
                Err(e) => {
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(PlaneError::Store(e.same()));
                    }
                    break;
                }
            }
        }
        let current = p.revision();
        for ((_, _, tx), r) in batch.into_iter().zip(results) {
            let _ = tx.send((r, current));
        }
    }

    /// Tells watching proxies of new revisions, coalescing them by [`PUSH_WINDOW`]; runs forever.
    pub async fn push_loop(self: Arc<Self>) {
        let mut rx = self.revision.subscribe();
        loop {
            if rx.changed().await.is_err() {
                return;
            }
            let r = *rx.borrow_and_update();
            self.pushed.send_replace(r);
            tokio::time::sleep(PUSH_WINDOW).await;
        }
    }

    fn published(&self, rev: &Option<Revision>) {
        if let Some(r) = rev {
            self.proxies.committed(r);
            self.revision.send_replace(r.revision);
        }
    }

    /// Follows a store shared through etcd: applies what other control planes commit,
    /// removes registrations whose lease ran out, reloads after etcd was away.
    pub async fn follow_remote(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<crate::etcd::Remote>) {
        use crate::etcd::Remote;
        while let Some(msg) = rx.recv().await {
            let mut p = self.plane.lock().await;
            let result = match msg {
                Remote::Revision(rev) => {
                    let store = p.store_mut();
                    if !store.apply_remote(&rev) {
                        store.catch_up().await.map_err(PlaneError::from)
                    } else {
                        self.proxies.committed(&rev);
                        Ok(())
                    }
                }
                Remote::Expired(key) => retrying!(p.expire_leases(vec![key.clone()], None).await).map(|_| ()),
                Remote::Snapshot(snap) => {
                    let alive = snap.alive.clone();
                    p.store_mut().replace(snap);
                    tracing::info!("etcd is back: reloaded at revision {}", p.revision());
                    retrying!(p.expire_dead_leases(&alive).await).map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::warn!("following etcd: {e}");
            }
            let rev = p.revision();
            drop(p);
            self.revision.send_if_modified(|r| std::mem::replace(r, rev) != rev);
        }
    }

    /// Removes expired registrations as their TTLs run out; runs forever.
    pub async fn expire_loop(self: Arc<Self>) {
        loop {
            let wait = self.plane.lock().await.next_expiry().unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            let rev = self.plane.lock().await.expire().await;
            match rev {
                Ok(r) => self.published(&r),
                Err(e) => tracing::error!("expiring registrations: {e}"),
            }
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let client = req.headers().get("x-weft-client").and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_owned();
        let q = query(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let body = if method == Method::POST {
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                    return Ok(if too_big {
                        json_reply(StatusCode::PAYLOAD_TOO_LARGE, &json!({"errors": [format!("request body over {} MiB", MAX_BODY >> 20)]}))
                    } else {
                        json_reply(StatusCode::BAD_REQUEST, &json!({"errors": [format!("reading the request: {e}")]}))
                    });
                }
            }
        } else {
            Bytes::new()
        };
        Ok(self.route(&method, &path, &q, &client, body).await)
    }

    async fn route(&self, method: &Method, path: &str, q: &HashMap<String, String>, client: &str, body: Bytes) -> Resp {
        let bad = |m: String| json_reply(StatusCode::BAD_REQUEST, &json!({ "errors": [m] }));
        match (method.clone(), path) {
            (Method::POST, "/v1/apply") => {
                let files: Vec<(String, String)> = match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => v["files"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|f| (f["name"].as_str().unwrap_or("-").to_owned(), f["text"].as_str().unwrap_or("").to_owned()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    Err(e) => return bad(format!("body is not JSON: {e}")),
                };
                if files.is_empty() {
                    return bad("no files to apply".into());
                }
                let mut p = self.plane.lock().await;
                let r = retrying!(p.apply(client, &files).await);
                self.finish(r, p.revision())
            }
            (Method::GET, "/v1/resources") => {
                let kind = match q.get("kind").map(|k| canonical_kind(k).ok_or(k)) {
                    Some(Ok(k)) => Some(k),
                    Some(Err(k)) => return bad(format!("unknown kind {k:?}")),
                    None => None,
                };
                let p = self.plane.lock().await;
                let items = p.list(kind, q.get("name").map(String::as_str), q.get("namespace").map(String::as_str));
                if q.contains_key("name") && items.is_empty() {
                    return json_reply(
                        StatusCode::NOT_FOUND,
                        &json!({"errors": [format!("{} {} not found", kind.unwrap_or("resource"), q["name"])]}),
                    );
                }
                json_reply(StatusCode::OK, &json!({"revision": p.revision(), "items": items}))
            }
            (Method::DELETE, "/v1/resources") => {
                let (Some(kind), Some(name)) = (q.get("kind"), q.get("name")) else { return bad("kind and name are required".into()) };
                let Some(kind) = canonical_kind(kind) else { return bad(format!("unknown kind {kind:?}")) };
                let mut p = self.plane.lock().await;
                let r = retrying!(p.delete(client, kind, name, q.get("namespace").map(String::as_str)).await);
                self.finish(r, p.revision())
            }
            (Method::GET, "/v1/history") => {
                let p = self.plane.lock().await;
                match crate::plane::history(&p).await {
                    Ok(h) => json_reply(StatusCode::OK, &json!({"revision": p.revision(), "items": h})),
                    Err(e) => error(e),
                }
            }
            (Method::POST, "/v1/rollback") => {
                let Some(to) = q.get("to").and_then(|t| t.parse::<u64>().ok()) else { return bad("to=REVISION is required".into()) };
                let mut p = self.plane.lock().await;
                let r = retrying!(p.rollback(client, to).await);
                self.finish(r, p.revision())
            }
            (Method::POST, "/v1/registry") => {
                let reg: Registration = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => return bad(format!("registration: {e}")),
                };
                self.registry_change(client, RegistryOp::Register(reg)).await
            }
            (Method::POST, "/v1/registry/heartbeat") => {
                let (Some(s), Some(a)) = (q.get("service"), q.get("address")) else {
                    return bad("service and address are required".into());
                };
                if self.plane.lock().await.heartbeat(s, a).await {
                    json_reply(StatusCode::OK, &json!({}))
                } else {
                    json_reply(StatusCode::NOT_FOUND, &json!({"errors": [format!("{s} {a} is not registered")]}))
                }
            }
            (Method::DELETE, "/v1/registry") => {
                let (Some(s), Some(a)) = (q.get("service"), q.get("address")) else {
                    return bad("service and address are required".into());
                };
                self.registry_change(client, RegistryOp::Deregister(s.clone(), a.clone())).await
            }
            (Method::GET, "/v1/registry") => {
                let p = self.plane.lock().await;
                json_reply(StatusCode::OK, &json!({"revision": p.revision(), "items": p.registrations()}))
            }
            (Method::GET, "/v1/mesh") => self.mesh(proxy_of(q), 0).await,
            (Method::POST, "/v1/ack") => {
                let (Some(node), Some(rev)) = (q.get("node"), q.get("revision").and_then(|r| r.parse::<u64>().ok())) else {
                    return bad("node and revision are required".into());
                };
                if let Some(e) = q.get("error") {
                    tracing::warn!("proxy {node} refused revision {rev}: {e}");
                }
                self.proxies.ack(node, rev, q.get("error"));
                json_reply(StatusCode::OK, &json!({}))
            }
            (Method::GET, "/v1/status") => {
                let latest = self.plane.lock().await.revision();
                let items = self.proxies.status(latest);
                json_reply(StatusCode::OK, &json!({"revision": latest, "items": items}))
            }
            (Method::GET, "/v1/watch") => {
                let node = q.get("node").cloned();
                if let Some(n) = &node {
                    self.proxies.seen(n, true);
                    // The watch carries the ACK (or NACK) of the answer it names by nonce, as xDS does.
                    let outcome = q.get("ack").map(|r| (r, None)).or_else(|| q.get("nack").map(|r| (r, q.get("error"))));
                    if let Some((rev, error)) = outcome.and_then(|(r, e)| Some((r.parse::<u64>().ok()?, e))) {
                        if self.proxies.current_nonce(n, q.get("nonce")) {
                            if let Some(e) = error {
                                tracing::warn!("proxy {n} refused revision {rev}: {e}");
                            }
                            self.proxies.ack(n, rev, error);
                        }
                    }
                }
                let mut r = self.watch(q).await;
                if let Some(n) = &node {
                    self.proxies.seen(n, false);
                    if r.status() == StatusCode::OK {
                        r.headers_mut().insert("x-weft-nonce", http::HeaderValue::from(self.proxies.next_nonce(n)));
                    }
                }
                r
            }
            (Method::GET, "/metrics") => {
                let p = self.plane.lock().await;
                let text = format!(
                    "# HELP weft_control_revision The store's latest revision.\n# TYPE weft_control_revision gauge\nweft_control_revision {}\n\
                     # HELP weft_control_resources Config resources stored.\n# TYPE weft_control_resources gauge\nweft_control_resources {}\n\
                     # HELP weft_control_registered_endpoints Endpoints in the registry.\n# TYPE weft_control_registered_endpoints gauge\nweft_control_registered_endpoints {}\n\
                     # HELP weft_control_proxies_connected Proxies waiting on /v1/watch.\n# TYPE weft_control_proxies_connected gauge\nweft_control_proxies_connected {}\n",
                    p.revision(),
                    p.list(None, None, None).len(),
                    p.registrations().len(),
                    self.pushed.receiver_count(),
                );
                let text = text + &self.proxies.metrics();
                reply(StatusCode::OK, "text/plain; version=0.0.4", text)
            }
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"errors": [format!("no such endpoint: {method} {path}")]})),
        }
    }

    /// The mesh once the revision passes `since`, or 304 after `wait`.
    async fn watch(&self, q: &HashMap<String, String>) -> Resp {
        let since = q.get("since").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let wait = Duration::from_millis(q.get("wait").and_then(|s| s.parse().ok()).unwrap_or(30_000).min(300_000));
        let mut rx = self.pushed.subscribe();
        let passed = tokio::time::timeout(wait, async move { rx.wait_for(|r| *r > since).await.map(|_| ()) }).await;
        match passed {
            Ok(Ok(_)) => self.mesh(proxy_of(q), since).await,
            _ => reply(StatusCode::NOT_MODIFIED, "text/plain", ""),
        }
    }

    fn finish(&self, r: Result<Option<Revision>, PlaneError>, current: u64) -> Resp {
        // (A conflict may have caught the store up with other control planes' revisions.)
        self.revision.send_if_modified(|r| std::mem::replace(r, current) != current);
        match r {
            Ok(rev) => {
                self.published(&rev);
                committed(rev, current)
            }
            Err(e) => error(e),
        }
    }

    /// The mesh for a proxy at revision `since` (0: none) in `namespace` with `labels`
    /// (scoped by its Sidecar): the documents changed since, or all of them.
    async fn mesh(&self, proxy: Option<(String, BTreeMap<String, String>)>, since: u64) -> Resp {
        let p = self.plane.lock().await;
        let Ok(mut idx) = self.index.lock() else {
            return json_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({"errors": ["mesh index poisoned"]}));
        };
        idx.sync(&p);
        let sidecar = proxy.and_then(|(ns, labels)| {
            let config_rev = idx.config_revision();
            let key = format!("{ns}?{labels:?}");
            let mut cache = self.sidecars.lock().ok()?;
            if cache.0 != config_rev {
                *cache = (config_rev, HashMap::new());
            }
            let chosen = cache.1.entry(key).or_insert_with(|| p.sidecar_for(&ns, &labels)).clone();
            chosen.map(|(k, sc)| (k, ns, sc))
        });
        drop(p);
        let scope = sidecar.map(|(k, ns, sc)| idx.scope(&k, &ns, sc)).unwrap_or_default();
        let (body, delta) = idx.answer(since, &scope);
        let rev = idx.revision();
        drop(idx);
        let mut r = reply(StatusCode::OK, "application/yaml", body);
        r.headers_mut().insert("x-weft-revision", http::HeaderValue::from(rev));
        r.headers_mut().insert("x-weft-mesh", http::HeaderValue::from_static(if delta { "delta" } else { "full" }));
        r
    }
}
