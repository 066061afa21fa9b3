//! Pushing the mesh to proxies: `POST /v1/watch` (a long poll that answers once the
//! revision passes the proxy's, with a delta) and `POST /v1/mesh` (the whole mesh at
//! once), both asked with a `weft_api::WatchRequest` and answered with a mesh answer
//! whose nonce the proxy's next outcome names. Pushes are coalesced: the first change
//! goes out at once, later ones at most every [`PUSH_WINDOW`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use weft_api::{ErrorAnswer, MeshBody, Outcome, WatchRequest};

use crate::api::{json_reply, Resp, Server};
use crate::body::Chunks;

/// Sidecar choices kept per config revision (by namespace and labels, as proxies send
/// them): past it they are chosen again as asked. (Unbounded, 100 made-up identities of
/// 2,200 labels each grew the control plane by ~55 MB.)
const MAX_SIDECAR_CHOICES: usize = 1_000;

/// At 1,000 changes a second a proxy gets 20 deltas, not 1,000 (Istio debounces for
/// 100 ms).
const PUSH_WINDOW: Duration = Duration::from_millis(50);

/// The longest a watch may wait.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The Sidecar (its key and spec) that scopes a proxy, if any.
pub type ChosenSidecar = Option<(String, weft_config::istio::Sidecar)>;

impl Server {
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

    /// `POST /v1/watch`: takes the outcome the request carries, then answers once the
    /// revision passes the proxy's `since` (or 304 after its wait).
    pub(crate) async fn watch(&self, w: WatchRequest) -> Resp {
        // Marks the proxy no longer watching when this ends however it ends: a client gone
        // mid-wait drops this future, and a proxy left "connected" forever held back every
        // `weft run`'s wait for acknowledgements (and could fill the table).
        let _end = w.node.as_deref().map(|node| WatchEnd { proxies: &self.proxies, node });
        if let Some(n) = &w.node {
            self.proxies.seen(n, true);
            self.proxies.certificate(n, w.cert_not_after);
            if let Some(o) = &w.last {
                self.outcome(n, o);
            }
        }
        let mut rx = self.pushed.subscribe();
        let mut since = w.since;
        let until = tokio::time::Instant::now() + Duration::from_millis(w.wait_ms).min(MAX_WAIT);
        // Hosts newly asked for are answered at once (a request waits for them), even with
        // nothing to bring.
        let widening = w.newly.is_some_and(|n| n > 0);
        let mut widened = widening;
        loop {
            // (The borrow `wait_for` gives is dropped at once: it holds a lock.)
            if !std::mem::take(&mut widened) {
                let passed = tokio::time::timeout_at(until, async { rx.wait_for(|r| *r > since).await.map(|_| ()) }).await;
                if !matches!(passed, Ok(Ok(()))) {
                    return crate::api::reply(StatusCode::NOT_MODIFIED, "text/plain", bytes::Bytes::new());
                }
            }
            let Some(body) = self.mesh_body(&w).await else {
                return json_reply(StatusCode::INTERNAL_SERVER_ERROR, &ErrorAnswer::one("mesh index poisoned"));
            };
            // On demand, a change to nothing the proxy asked for costs it nothing: no
            // answer; it holds the new revision as it is (acknowledged for it).
            if let (true, Some(node)) = (body.is_empty_delta() && w.hosts.is_some() && !widening, &w.node) {
                self.proxies.ack(node, body.revision(), None);
                since = body.revision();
                continue;
            }
            return self.reply(&w, body);
        }
    }

    /// An ACK or NACK of the answer the proxy names by nonce, as xDS does.
    fn outcome(&self, node: &str, o: &Outcome) {
        if !self.proxies.current_nonce(node, o.nonce()) {
            return;
        }
        if let Some(e) = o.reason() {
            tracing::warn!("proxy {node} refused revision {}: {e}", o.revision());
        }
        self.proxies.ack(node, o.revision(), o.reason());
    }

    /// The mesh for `w` now: changed since `w.since` (0: all), scoped by its identity,
    /// with a fresh nonce.
    pub(crate) async fn answer(&self, w: &WatchRequest) -> Resp {
        let Some(body) = self.mesh_body(w).await else {
            return json_reply(StatusCode::INTERNAL_SERVER_ERROR, &ErrorAnswer::one("mesh index poisoned"));
        };
        self.reply(w, body)
    }

    fn reply(&self, w: &WatchRequest, body: MeshBody) -> Resp {
        let enc = body.answer(self.proxies.next_nonce(w.node.as_deref()));
        let mut r = Response::new(Chunks::new([enc.head, enc.body]));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        r
    }

    /// The answer for `w`'s proxy at its revision (0: none) with its identity (scoped by
    /// its Sidecar) and, on demand, its hosts, but its nonce: computed once per revision
    /// and scope.
    async fn mesh_body(&self, w: &WatchRequest) -> Option<MeshBody> {
        let (identity, since) = (w.identity.as_ref(), w.since);
        let p = self.plane.lock().await;
        let mut idx = self.index.lock().ok()?;
        idx.sync(&p);
        let sidecar = identity.and_then(|id| {
            let config_rev = idx.config_revision();
            let key = format!("{}?{:?}", id.namespace, id.labels);
            let mut cache = self.sidecars.lock().ok()?;
            // (Keyed by what proxies send: bounded, as the scopes are.)
            if cache.0 != config_rev || cache.1.len() >= MAX_SIDECAR_CHOICES {
                *cache = (config_rev, HashMap::new());
            }
            let chosen = cache.1.entry(key).or_insert_with(|| p.sidecar_for(&id.namespace, &id.labels)).clone();
            chosen.map(|(k, sc)| (k, id.namespace.clone(), sc))
        });
        drop(p);
        let namespace = identity.map_or("default", |i| i.namespace.as_str()).to_owned();
        let mut scope_of = |hosts: Option<&[String]>| match (&sidecar, hosts) {
            (Some((k, ns, sc)), hosts) => idx.scope(k, ns, Some(sc.clone()), hosts),
            (None, Some(hosts)) => idx.scope("", &namespace, None, Some(hosts)),
            (None, None) => String::new(),
        };
        // Hosts added to those held: the scope held, to answer with what they bring. (Made
        // first: making a scope may clear the cache, and the one asked for must be there.)
        let held = match (&w.hosts, w.newly) {
            (Some(hosts), Some(n)) if n > 0 && since > 0 => Some(scope_of(Some(&hosts[..hosts.len().saturating_sub(n as usize)]))),
            _ => None,
        };
        let scope = scope_of(w.hosts.as_deref());
        let names_since = w.names_since.unwrap_or(0);
        Some(match (&w.hosts, held) {
            (Some(_), Some(held)) => idx.answer_widened(since, &scope, &held, names_since),
            (Some(_), None) => idx.answer_on_demand(since, &scope, names_since),
            (None, _) => idx.answer(since, &scope),
        })
    }
}

/// Ends a proxy's watch in the table when dropped (see [`Server::watch`]).
struct WatchEnd<'a> {
    proxies: &'a crate::proxies::Tracker,
    node: &'a str,
}

impl Drop for WatchEnd<'_> {
    fn drop(&mut self) {
        self.proxies.seen(self.node, false);
    }
}
