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
//! | `GET /v1/watch?since=N&wait=MS` | the mesh once its revision passes N, else 304 after `wait` |
//! | `GET /metrics` | revision, objects, registry size (Prometheus text) |

use std::collections::HashMap;
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
use crate::store::Revision;

/// The largest request body accepted (a whole directory of YAML fits easily).
pub const MAX_BODY: usize = 8 << 20;

pub struct Server {
    plane: Mutex<Plane>,
    /// The latest revision, for watchers.
    revision: watch::Sender<u64>,
}

type Resp = Response<Full<Bytes>>;

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
        Arc::new(Server { plane: Mutex::new(plane), revision })
    }

    fn published(&self, rev: &Option<Revision>) {
        if let Some(r) = rev {
            self.revision.send_replace(r.revision);
        }
    }

    /// Removes expired registrations as their TTLs run out; runs forever.
    pub async fn expire_loop(self: Arc<Self>) {
        loop {
            let wait = self.plane.lock().await.next_expiry().unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            let rev = self.plane.lock().await.expire();
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
                let r = p.apply(client, &files);
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
                let r = p.delete(client, kind, name, q.get("namespace").map(String::as_str));
                self.finish(r, p.revision())
            }
            (Method::GET, "/v1/history") => {
                let p = self.plane.lock().await;
                match crate::plane::history(&p) {
                    Ok(h) => json_reply(StatusCode::OK, &json!({"revision": p.revision(), "items": h})),
                    Err(e) => error(e),
                }
            }
            (Method::POST, "/v1/rollback") => {
                let Some(to) = q.get("to").and_then(|t| t.parse::<u64>().ok()) else { return bad("to=REVISION is required".into()) };
                let mut p = self.plane.lock().await;
                let r = p.rollback(client, to);
                self.finish(r, p.revision())
            }
            (Method::POST, "/v1/registry") => {
                let reg: Registration = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => return bad(format!("registration: {e}")),
                };
                let mut p = self.plane.lock().await;
                let r = p.register(client, reg);
                self.finish(r, p.revision())
            }
            (Method::POST, "/v1/registry/heartbeat") => {
                let (Some(s), Some(a)) = (q.get("service"), q.get("address")) else {
                    return bad("service and address are required".into());
                };
                if self.plane.lock().await.heartbeat(s, a) {
                    json_reply(StatusCode::OK, &json!({}))
                } else {
                    json_reply(StatusCode::NOT_FOUND, &json!({"errors": [format!("{s} {a} is not registered")]}))
                }
            }
            (Method::DELETE, "/v1/registry") => {
                let (Some(s), Some(a)) = (q.get("service"), q.get("address")) else {
                    return bad("service and address are required".into());
                };
                let mut p = self.plane.lock().await;
                let r = p.deregister(client, s, a);
                self.finish(r, p.revision())
            }
            (Method::GET, "/v1/registry") => {
                let p = self.plane.lock().await;
                json_reply(StatusCode::OK, &json!({"revision": p.revision(), "items": p.registrations()}))
            }
            (Method::GET, "/v1/mesh") => self.mesh().await,
            (Method::GET, "/v1/watch") => {
                let since = q.get("since").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                let wait = Duration::from_millis(q.get("wait").and_then(|s| s.parse().ok()).unwrap_or(30_000).min(300_000));
                let mut rx = self.revision.subscribe();
                let passed = tokio::time::timeout(wait, async move { rx.wait_for(|r| *r > since).await.map(|_| ()) }).await;
                match passed {
                    Ok(Ok(_)) => self.mesh().await,
                    _ => reply(StatusCode::NOT_MODIFIED, "text/plain", ""),
                }
            }
            (Method::GET, "/metrics") => {
                let p = self.plane.lock().await;
                let text = format!(
                    "# HELP weft_control_revision The store's latest revision.\n# TYPE weft_control_revision gauge\nweft_control_revision {}\n\
                     # HELP weft_control_resources Config resources stored.\n# TYPE weft_control_resources gauge\nweft_control_resources {}\n\
                     # HELP weft_control_registered_endpoints Endpoints in the registry.\n# TYPE weft_control_registered_endpoints gauge\nweft_control_registered_endpoints {}\n\
                     # HELP weft_control_watchers Proxies waiting on /v1/watch.\n# TYPE weft_control_watchers gauge\nweft_control_watchers {}\n",
                    p.revision(),
                    p.list(None, None, None).len(),
                    p.registrations().len(),
                    self.revision.receiver_count(),
                );
                reply(StatusCode::OK, "text/plain; version=0.0.4", text)
            }
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"errors": [format!("no such endpoint: {method} {path}")]})),
        }
    }

    fn finish(&self, r: Result<Option<Revision>, PlaneError>, current: u64) -> Resp {
        match r {
            Ok(rev) => {
                self.published(&rev);
                committed(rev, current)
            }
            Err(e) => error(e),
        }
    }

    async fn mesh(&self) -> Resp {
        let p = self.plane.lock().await;
        match p.mesh_yaml() {
            Ok(y) => {
                let mut r = reply(StatusCode::OK, "application/yaml", y);
                r.headers_mut().insert("x-weft-revision", http::HeaderValue::from(p.revision()));
                r
            }
            Err(e) => error(e),
        }
    }
}
