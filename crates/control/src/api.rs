//! The control plane's HTTP API (JSON over HTTP/1.1), spoken by the `weft` client
//! commands; and `/v1/watch`, a long poll through which proxies follow the mesh. Every
//! body and query is a message of `weft_api`, encoded and decoded there.
//!
//! | method, path | what |
//! |---|---|
//! | `POST /v1/apply` | `ApplyRequest` → `Committed`, or 400 `ErrorAnswer` |
//! | `GET /v1/resources?kind=&name=&namespace=` | stored resources (`Listing` of JSON) |
//! | `DELETE /v1/resources?kind=&name=&namespace=` | deletes one → `Committed` |
//! | `GET /v1/history` | every revision: when, what, by which client (`Listing` of `HistoryEntry`) |
//! | `POST /v1/rollback?to=N` | restores the config as of revision N (a new revision) |
//! | `POST /v1/registry` (`Registration`), `DELETE /v1/registry?service=&address=` | register / deregister |
//! | `POST /v1/registry/heartbeat?service=&address=` | keeps a TTL registration alive |
//! | `GET /v1/registry` | registered endpoints |
//! | `GET /v1/endpoints` | registered endpoints with their TTL left and who ejects them (`Listing` of `EndpointInfo`) |
//! | `GET /v1/recommendations` | each registered service's recommended replica count from its sidecars' reports (`Listing` of `Recommendation`) |
//! | `GET /v1/mesh` | the whole mesh, unscoped (a mesh answer: readable with curl) |
//! | `POST /v1/mesh` | `WatchRequest` → the whole mesh for that proxy at once (a proxy's start) |
//! | `POST /v1/watch` | `WatchRequest` → the mesh's changes since its revision once there are some (a delta, see [`crate::mesh`]), else 304 after its wait; it carries the ACK or NACK of the last answer (see [`crate::push`]) |
//! | `POST /v1/ack` | `AckReport`: an ACK (or NACK) on its own |
//! | `GET /v1/status` | `StatusAnswer`: the proxies' acknowledged revisions, lag, NACKs |
//! | `POST /v1/report` | `Report`: a proxy's traffic counters, for the console (as a watch is authorized) |
//! | `GET /ui`, `/ui/…` | the web console (HTML, see [`crate::console`]) |
//! | `POST /v1/tokens` | `TokenRequest` → `TokenAnswer` (admin role) |
//! | `POST /v1/certificate` | `CertificateRequest` (a CSR) → `CertificateAnswer` (a workload token: its own SPIFFE ID) |
//! | `GET /metrics` | revision, objects, registry size (Prometheus text) |
//! | `GET /debug/pprof/profile?seconds=N`, `GET /debug/pprof/heap` | a CPU profile (pprof), a memory summary ([`weft_profiling`]; admin role) |
//!
//! Every call carries `Authorization: Bearer <token>` and is let in by [`crate::auth`]'s
//! table (roles `read` < `write` < `admin`, or a workload acting for itself), unless the
//! control plane runs `--insecure`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::{watch, Mutex};
use weft_api::{
    AckReport, ApplyRequest, CertificateRequest, Committed, EndpointRef, ErrorAnswer, Listing, Message, Registration, Report,
    ResourceQuery, Rollback, StatusAnswer, TokenAnswer, TokenRequest, WatchRequest,
};

use crate::auth::{Auth, Need, Principal, Refused};

use crate::body::Chunks;
use crate::group::{Pending, RegistryOp};
use crate::plane::{canonical_kind, Plane, PlaneError};
use crate::push::ChosenSidecar;
use crate::store::{Revision, StoreError};

/// Tries of an operation while other control planes sharing the store commit first.
pub(crate) const TRIES: u32 = 10;

/// Runs a plane operation again (up to [`TRIES`] times) while another control plane
/// sharing the store commits first; the store has caught up before each new try.
macro_rules! retrying {
    ($call:expr) => {{
        let mut tries = 1;
        loop {
            match $call {
                Err(e) if e.is_conflict() && tries < $crate::api::TRIES => tries += 1,
                r => break r,
            }
        }
    }};
}

/// The largest request body accepted (a whole directory of YAML fits easily).
pub const MAX_BODY: usize = weft_api::admin::MAX_REQUEST_BYTES;

pub struct Server {
    pub(crate) plane: Mutex<Plane>,
    /// The latest revision, for watchers.
    pub(crate) revision: watch::Sender<u64>,
    pub(crate) proxies: crate::proxies::Tracker,
    /// The revision proxies are told about: follows `revision`, at most once per
    /// push window (changes in between go out together).
    pub(crate) pushed: watch::Sender<u64>,
    /// The mesh as documents, for full answers and deltas.
    pub(crate) index: std::sync::Mutex<crate::mesh::Index>,
    /// Sidecar choices by (config revision, namespace, labels).
    pub(crate) sidecars: std::sync::Mutex<(u64, HashMap<String, ChosenSidecar>)>,
    /// Registry changes queued for the next group commit.
    pub(crate) pending: std::sync::Mutex<Pending>,
    /// Who may call what; none: `--insecure`, everyone may do everything.
    pub(crate) auth: Option<Auth>,
    /// The mesh CA: signs workloads' CSRs for the identity their token names.
    pub(crate) ca: Option<weft_tls::Ca>,
    /// The proxies' traffic reports, for the console.
    pub(crate) reports: crate::console::Reports,
    /// Calls refused, by [`Refused::reason`]: no token, bad token, expired, forbidden.
    refused: [std::sync::atomic::AtomicU64; 4],
    issued: std::sync::atomic::AtomicU64,
    refused_csrs: std::sync::atomic::AtomicU64,
    /// The API's tracing (`--otlp-endpoint`), set once at start.
    pub(crate) tracer: std::sync::OnceLock<crate::api_trace::ApiTracer>,
    /// ZooKeeper's state, for `/metrics` (`--zookeeper`), set once at start.
    pub zookeeper: std::sync::OnceLock<Arc<crate::zookeeper::Stats>>,
    /// API connections accepted (each a TLS handshake when the API is HTTPS).
    pub(crate) connections: std::sync::atomic::AtomicU64,
    /// Who holds the API's connections (set once at start), for `/metrics`.
    pub(crate) admission: std::sync::OnceLock<Arc<crate::admission::Admission>>,
}

pub(crate) type Resp = Response<Chunks>;

pub(crate) fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Chunks::new([body.into()]));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_reply(status: StatusCode, m: &impl Message) -> Resp {
    reply(status, "application/json", m.encode())
}

fn bad(m: impl Into<String>) -> Resp {
    json_reply(StatusCode::BAD_REQUEST, &ErrorAnswer::one(m))
}

fn error(e: PlaneError) -> Resp {
    match e {
        PlaneError::Invalid(errors) => json_reply(StatusCode::BAD_REQUEST, &ErrorAnswer { errors }),
        PlaneError::NotFound(m) => json_reply(StatusCode::NOT_FOUND, &ErrorAnswer::one(m)),
        PlaneError::Store(e @ (StoreError::Etcd(_) | StoreError::Conflict)) => {
            json_reply(StatusCode::SERVICE_UNAVAILABLE, &ErrorAnswer::one(e.to_string()))
        }
        PlaneError::Store(e) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, &ErrorAnswer::one(e.to_string())),
    }
}

fn committed(rev: Option<Revision>, current: u64, warnings: Vec<String>) -> Resp {
    let c = match rev {
        Some(r) => Committed { revision: r.revision, changed: r.changes.into_iter().map(|c| c.key).collect(), warnings },
        None => Committed { revision: current, changed: vec![], warnings },
    };
    json_reply(StatusCode::OK, &c)
}

/// Decodes a request body, or answers 400 with the decoder's reason.
macro_rules! decode {
    ($t:ty, $body:expr) => {
        match <$t>::decode(&$body) {
            Ok(m) => m,
            Err(e) => return bad(e.to_string()),
        }
    };
}

// (After the macros: the submodules use `retrying!`.)
mod certificate;
mod credentials;
mod endpoints;
mod metrics;

impl Server {
    /// A server that lets everyone do everything (`--insecure`, and tests of other things).
    pub fn new(plane: Plane) -> Arc<Server> {
        Server::with_auth(plane, None)
    }

    pub fn with_auth(plane: Plane, auth: Option<Auth>) -> Arc<Server> {
        Server::with_security(plane, auth, None)
    }

    pub fn with_security(plane: Plane, auth: Option<Auth>, ca: Option<weft_tls::Ca>) -> Arc<Server> {
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
            auth,
            ca,
            reports: Default::default(),
            refused: Default::default(),
            issued: Default::default(),
            refused_csrs: Default::default(),
            tracer: Default::default(),
            zookeeper: Default::default(),
            connections: Default::default(),
            admission: Default::default(),
        })
    }

    /// The caller, or why it is not let in: 401 without valid credentials, 403 for a
    /// call its role does not allow (registry calls are checked once their service is known).
    fn admit(&self, req: &Request<Incoming>, peer: Option<weft_tls::SpiffeId>) -> Result<Principal, Refused> {
        let Some(auth) = &self.auth else {
            let client = req.headers().get("x-weft-client").and_then(|v| v.to_str().ok()).unwrap_or("unknown");
            return Ok(Principal::Anonymous(weft_api::truncate(client, 253).to_owned()));
        };
        let (method, path) = (req.method(), req.uri().path());
        let header = req.headers().get(http::header::AUTHORIZATION);
        // Without a token, a workload certificate of this mesh's trust domain names the
        // caller (a proxy after its first certificate: its bootstrap token may have expired).
        let from_cert = match (&peer, &self.ca) {
            (Some(id), Some(ca)) if header.is_none() && id.trust_domain() == ca.trust_domain() => Some(Principal::Workload {
                id: "certificate".into(),
                namespace: id.namespace().to_owned(),
                service_account: id.service_account().to_owned(),
                uses: None,
                exp: None,
            }),
            _ => None,
        };
        let who = match from_cert {
            Some(p) => Ok(p),
            None => auth.authenticate(header, crate::auth::now_s()),
        };
        who.and_then(|who| match crate::auth::need(method, path) {
            Need::Registry => Ok(who),
            need => crate::auth::allow(&who, need, None).map(|_| who),
        })
    }

    fn refuse(&self, e: Refused, method: &Method, path: &str) -> Resp {
        let i = match e {
            Refused::NoToken => 0,
            Refused::BadToken(_) => 1,
            Refused::Expired => 2,
            Refused::Forbidden(_) => 3,
        };
        self.refused[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("refused {method} {}: {e}", weft_api::truncate(path, 128));
        let status = if i == 3 { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        let mut r = json_reply(status, &ErrorAnswer::one(e.to_string()));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"weft\""));
        }
        r
    }

    /// Whether `who` may watch or acknowledge as `node`.
    fn node_allowed(&self, who: &Principal, node: &str) -> Result<(), Refused> {
        if self.proxies.claim(node, &who.owner()) {
            return Ok(());
        }
        Err(Refused::Forbidden(format!("node {:?} is followed by another identity", weft_api::truncate(node, 64))))
    }

    pub(crate) fn published(&self, rev: &Option<Revision>) {
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

    /// One API call; `peer` is the workload certificate the client presented, if any.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: Option<weft_tls::SpiffeId>) -> Result<Resp, Infallible> {
        let span = self.tracer.get().and_then(|t| t.start_span(req.method(), req.uri().path(), req.headers()));
        let resp = self.serve(req, peer).await;
        if let Some(span) = span {
            span.end(resp.status().as_u16());
        }
        Ok(resp)
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>, peer: Option<weft_tls::SpiffeId>) -> Resp {
        // Valid credentials prove the connection (it is no longer closed to make room for
        // others); refused ones (none, bad, expired — not a role's limit) unprove it.
        let ticket = req.extensions().get::<Arc<crate::admission::Ticket>>().cloned();
        if crate::console::is_console(req.uri().path()) {
            if let Some(t) = &ticket {
                self.console_session(t, req.headers());
            }
            return crate::console::handle(&self, req).await;
        }
        let admitted = match self.admit(&req, peer) {
            Ok(who) => self.not_spent(who, req.uri().path()).await,
            Err(e) => Err(e),
        };
        let (who, proves) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                if let (Some(t), false) = (&ticket, matches!(e, Refused::Forbidden(_))) {
                    t.unprove();
                }
                return self.refuse(e, req.method(), req.uri().path());
            }
        };
        if let (Some(t), true) = (ticket, proves) {
            credentials::prove(&t, &who);
        }
        let q = req.uri().query().unwrap_or("").to_owned();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let body = if method == Method::POST {
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                    return if too_big {
                        json_reply(StatusCode::PAYLOAD_TOO_LARGE, &ErrorAnswer::one(format!("request body over {} MiB", MAX_BODY >> 20)))
                    } else {
                        bad(format!("reading the request: {e}"))
                    };
                }
            }
        } else {
            Bytes::new()
        };
        self.route(&method, &path, &q, &who, body).await
    }

    async fn route(&self, method: &Method, path: &str, q: &str, who: &Principal, body: Bytes) -> Resp {
        let client = &who.name();
        match (method.clone(), path) {
            (Method::POST, "/v1/apply") => {
                let a = decode!(ApplyRequest, body);
                let files: Vec<(String, String)> = a.files.into_iter().map(|f| (f.name, f.text)).collect();
                let mut p = self.plane.lock().await;
                let r = retrying!(p.apply(client, &files).await);
                let warnings = r.as_ref().map(|a| a.warnings.clone()).unwrap_or_default();
                self.finish_warned(r.map(|a| a.revision), p.revision(), warnings)
            }
            (Method::GET, "/v1/resources") => {
                let q = ResourceQuery::from_query(q);
                let kind = match q.kind.as_deref().map(|k| canonical_kind(k).ok_or(k)) {
                    Some(Ok(k)) => Some(k),
                    Some(Err(k)) => return bad(format!("unknown kind {k:?}")),
                    None => None,
                };
                let p = self.plane.lock().await;
                let items = p.list(kind, q.name.as_deref(), q.namespace.as_deref());
                if let (Some(name), true) = (&q.name, items.is_empty()) {
                    return json_reply(
                        StatusCode::NOT_FOUND,
                        &ErrorAnswer::one(format!("{} {name} not found", kind.unwrap_or("resource"))),
                    );
                }
                json_reply(StatusCode::OK, &Listing { revision: p.revision(), items })
            }
            (Method::DELETE, "/v1/resources") => {
                let q = ResourceQuery::from_query(q);
                let (Some(kind), Some(name)) = (q.kind, q.name) else { return bad("kind and name are required") };
                let Some(kind) = canonical_kind(&kind) else { return bad(format!("unknown kind {kind:?}")) };
                let mut p = self.plane.lock().await;
                let r = retrying!(p.delete(client, kind, &name, q.namespace.as_deref()).await);
                self.finish(r, p.revision())
            }
            (Method::GET, "/v1/history") => {
                let p = self.plane.lock().await;
                match crate::plane::history(&p).await {
                    Ok(items) => json_reply(StatusCode::OK, &Listing { revision: p.revision(), items }),
                    Err(e) => error(e),
                }
            }
            (Method::POST, "/v1/rollback") => {
                let to = match Rollback::from_query(q) {
                    Ok(r) => r.to,
                    Err(e) => return bad(e.reason),
                };
                let (r, current) = self.rollback(client, to).await;
                self.finish(r, current)
            }
            (Method::POST, "/v1/registry") => {
                let mut reg = decode!(Registration, body);
                match crate::registration::canonical(&reg.service, reg.namespace.as_deref(), who.namespace()) {
                    Ok((service, ns)) => (reg.service, reg.namespace) = (service, Some(ns)),
                    Err(e) => return json_reply(StatusCode::BAD_REQUEST, &ErrorAnswer::one(e)),
                }
                if let Err(e) = crate::auth::allow(who, Need::Registry, Some(&reg.service)) {
                    return self.refuse(e, method, path);
                }
                // In the mesh only when a workload registers itself: its identity is the one
                // its token names, whatever the body says.
                reg.identity = self.identity_of(who);
                self.registry_change(client, RegistryOp::Register(reg)).await
            }
            (Method::POST, "/v1/registry/heartbeat") => {
                let e = match EndpointRef::from_query(q).map_err(|e| e.reason).and_then(|e| canonical_ref(e, who)) {
                    Ok(e) => e,
                    Err(e) => return bad(e),
                };
                if let Err(e) = crate::auth::allow(who, Need::Registry, Some(&e.service)) {
                    return self.refuse(e, method, path);
                }
                if self.plane.lock().await.heartbeat(&e.service, &e.address).await {
                    reply(StatusCode::OK, "application/json", "{}\n")
                } else {
                    json_reply(StatusCode::NOT_FOUND, &ErrorAnswer::one(format!("{} {} is not registered", e.service, e.address)))
                }
            }
            (Method::DELETE, "/v1/registry") => {
                match EndpointRef::from_query(q).map_err(|e| e.reason).and_then(|e| canonical_ref(e, who)) {
                    Ok(e) => match crate::auth::allow(who, Need::Registry, Some(&e.service)) {
                        Ok(()) => self.registry_change(client, RegistryOp::Deregister(e.service, e.address)).await,
                        Err(refused) => self.refuse(refused, method, path),
                    },
                    Err(e) => bad(e),
                }
            }
            (Method::GET, "/v1/registry") => {
                let p = self.plane.lock().await;
                json_reply(StatusCode::OK, &Listing { revision: p.revision(), items: p.registrations() })
            }
            (Method::GET, "/v1/endpoints") => self.endpoints().await,
            (Method::GET, "/v1/recommendations") => self.recommendations().await,
            (Method::GET, "/v1/mesh") => self.answer(&WatchRequest::default()).await,
            (Method::POST, "/v1/mesh") => {
                let w = decode!(WatchRequest, body);
                if let Some(n) = &w.node {
                    if let Err(e) = self.node_allowed(who, n) {
                        return self.refuse(e, method, path);
                    }
                    self.proxies.seen(n, false);
                }
                self.answer(&WatchRequest { since: 0, ..w }).await
            }
            (Method::POST, "/v1/watch") => {
                let w = decode!(WatchRequest, body);
                if let Some(Err(e)) = w.node.as_deref().map(|n| self.node_allowed(who, n)) {
                    return self.refuse(e, method, path);
                }
                self.watch(w).await
            }
            (Method::POST, "/v1/ack") => {
                let a = decode!(AckReport, body);
                if let Err(e) = self.node_allowed(who, &a.node) {
                    return self.refuse(e, method, path);
                }
                if let Some(e) = &a.reason {
                    tracing::warn!("proxy {} refused revision {}: {e}", a.node, a.revision);
                }
                self.proxies.ack(&a.node, a.revision, a.reason.as_deref());
                reply(StatusCode::OK, "application/json", "{}\n")
            }
            (Method::POST, "/v1/report") => {
                let mut r = decode!(Report, body);
                if let Err(e) = self.node_allowed(who, &r.node) {
                    return self.refuse(e, method, path);
                }
                // A workload reports as itself: the source its token names (as a
                // workload token registers only its own service), whatever the body says.
                if let Principal::Workload { namespace, service_account, .. } = who {
                    (r.namespace, r.service) = (namespace.clone(), service_account.clone());
                }
                match self.reports.ingest(r, tokio::time::Instant::now()) {
                    Ok(()) => reply(StatusCode::OK, "application/json", "{}\n"),
                    Err(crate::console::gather::Refusal::Invalid(m)) => bad(m),
                    Err(e) => json_reply(StatusCode::SERVICE_UNAVAILABLE, &ErrorAnswer::one(e.to_string())),
                }
            }
            (Method::GET, "/v1/status") => {
                let latest = self.plane.lock().await.revision();
                let td = self.ca.as_ref().map(|ca| ca.trust_domain().to_owned());
                // A workload's owner is `namespace/service-account`: shown as its SPIFFE ID.
                let identity = |owner: &str| match (owner.split_once('/'), &td) {
                    (Some((ns, sa)), Some(td)) if !owner.starts_with("token ") => format!("spiffe://{td}/ns/{ns}/sa/{sa}"),
                    _ => owner.to_owned(),
                };
                let mut items = self.proxies.status(latest, identity);
                // A workload learns whether the proxies caught up, not who they are or why they refused.
                if matches!(who, Principal::Workload { .. }) {
                    for p in &mut items {
                        (p.node, p.identity, p.nack_reason) = (String::new(), None, None);
                    }
                }
                json_reply(StatusCode::OK, &StatusAnswer { revision: latest, items })
            }
            (Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics_text().await),
            (Method::POST, "/v1/certificate") => {
                let req = decode!(CertificateRequest, body);
                self.certificate(who, &req).await
            }
            (Method::POST, "/v1/tokens") => {
                let t = decode!(TokenRequest, body);
                let Some(auth) = &self.auth else { return bad("this control plane runs --insecure: it issues no tokens") };
                match auth.issue(&t, crate::auth::now_s()) {
                    Ok((token, id, expires)) => {
                        tracing::info!(
                            "{client} created token {id} ({})",
                            t.role.map(|r| r.as_str().to_owned()).unwrap_or_else(|| format!(
                                "workload {}/{}",
                                t.namespace.as_deref().unwrap_or(""),
                                t.service_account.as_deref().unwrap_or("")
                            ))
                        );
                        json_reply(StatusCode::OK, &TokenAnswer { token, id, expires })
                    }
                    Err(e) => bad(e),
                }
            }
            (Method::GET, p) if weft_profiling::is_profiling_path(p) => {
                let a = weft_profiling::serve(p, Some(q)).await;
                reply(a.status, a.content_type, a.body)
            }
            _ => json_reply(StatusCode::NOT_FOUND, &ErrorAnswer::one(format!("no such endpoint: {method} {path}"))),
        }
    }

    /// `POST /v1/rollback`'s rollback (the console's button too): its outcome and the
    /// store's revision after it.
    pub(crate) async fn rollback(&self, client: &str, to: u64) -> (Result<Option<Revision>, PlaneError>, u64) {
        let mut p = self.plane.lock().await;
        let r = retrying!(p.rollback(client, to).await);
        (r, p.revision())
    }

    pub(crate) fn finish(&self, r: Result<Option<Revision>, PlaneError>, current: u64) -> Resp {
        self.finish_warned(r, current, Vec::new())
    }

    /// [`Server::finish`], with the compile's warnings about what was committed.
    pub(crate) fn finish_warned(&self, r: Result<Option<Revision>, PlaneError>, current: u64, warnings: Vec<String>) -> Resp {
        // (A conflict may have caught the store up with other control planes' revisions.)
        self.revision.send_if_modified(|r| std::mem::replace(r, current) != current);
        match r {
            Ok(rev) => {
                self.published(&rev);
                committed(rev, current, warnings)
            }
            Err(e) => error(e),
        }
    }
}

/// A registry call's endpoint with its service as stored ([`crate::registration::canonical`]).
fn canonical_ref(e: EndpointRef, who: &Principal) -> Result<EndpointRef, String> {
    let (service, ns) = crate::registration::canonical(&e.service, e.namespace.as_deref(), who.namespace())?;
    Ok(EndpointRef { service, address: e.address, namespace: Some(ns) })
}
