//! `weft run`'s side of the registry: the app's inbound address registered with a TTL,
//! kept alive by heartbeats, removed first on the way out — and the wait until the
//! proxies following the control plane have acknowledged the removal, so that none still
//! sends to an address about to close.

use std::time::{Duration, Instant};

use weft_api::{Committed, EndpointRef, Message, Registration, StatusAnswer};

use crate::ctl::{call, ServerArg};

/// The endpoint `weft run` keeps registered.
#[derive(Clone)]
pub struct Endpoint {
    pub server: ServerArg,
    pub registration: Registration,
}

impl Endpoint {
    fn reference(&self) -> EndpointRef {
        let r = &self.registration;
        EndpointRef { service: r.service.clone(), address: r.address.clone(), namespace: r.namespace.clone() }
    }

    /// Registers (or registers again); the revision it made.
    pub fn register(&self) -> Result<u64, String> {
        committed(call(&self.server, "POST", "/v1/registry", Some(self.registration.encode())))
    }

    /// Keeps the registration alive; `Ok(false)` when the control plane no longer has it
    /// (it expired while the control plane was away): register again.
    pub fn heartbeat(&self) -> Result<bool, String> {
        let q = self.reference().to_query();
        match call(&self.server, "POST", &format!("/v1/registry/heartbeat?{q}"), None)? {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (code, body) => Err(format!("heartbeat: {code} {}", String::from_utf8_lossy(&body).trim())),
        }
    }

    /// Removes the registration; the revision that removed it.
    pub fn deregister(&self) -> Result<u64, String> {
        let q = self.reference().to_query();
        committed(call(&self.server, "DELETE", &format!("/v1/registry?{q}"), None))
    }

    /// Waits (at most `limit`) until every proxy the token can see following the control
    /// plane has acknowledged `revision`; whether they all did.
    pub fn wait_acknowledged(&self, revision: u64, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let done = match call(&self.server, "GET", "/v1/status", None) {
                Ok((200, body)) => StatusAnswer::decode(&body).is_ok_and(|s| s.items.iter().all(|p| !p.connected || p.acked >= revision)),
                _ => false,
            };
            if done || Instant::now() >= end {
                return done;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a registration's error is the control plane refusing it (a 4xx: no use trying
/// again) rather than the control plane being away.
pub fn refused(e: &str) -> bool {
    e.strip_prefix("the control plane answered 4").is_some()
}

fn committed(r: Result<(u16, Vec<u8>), String>) -> Result<u64, String> {
    match r? {
        (200, body) => Committed::decode(&body).map(|c| c.revision).map_err(|e| e.to_string()),
        (code, body) => Err(format!("the control plane answered {code}: {}", String::from_utf8_lossy(&body).trim())),
    }
}
