//! AuthorizationPolicy on the inbound side: the workload's policies ([`weft_authz`])
//! checked against the request's attributes — the caller's mTLS principal, its
//! address, the request's method, normalized path, host, port and headers, and the
//! JWT a RequestAuthentication verified before. A denied request gets Envoy's answer,
//! `403 RBAC: access denied` (gRPC: `PERMISSION_DENIED`), flag `RBAC`; an AUDIT policy
//! that matches is logged and counted; a CUSTOM one sends the request to its external
//! authorizer first ([`crate::ext_authz`]). Evaluation allocates nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::request::Parts;
use http::StatusCode;
use std::collections::BTreeMap;

use weft_authz::policy::Decision;
use weft_authz::spec::ExtAuthzHttp;
use weft_authz::{Attrs, Policies};
use weft_telemetry::ResponseFlags;

use super::{Flow, Local};
use crate::ext_authz;
use crate::request::RequestCtx;

/// gRPC's PERMISSION_DENIED.
const GRPC_PERMISSION_DENIED: u8 = 7;

#[derive(Clone)]
pub struct Authz {
    pub policies: Arc<Policies>,
    /// The workload's address (`destination.ip`, `destination.port`).
    pub destination: SocketAddr,
    /// The external authorizers CUSTOM policies name.
    pub providers: Arc<BTreeMap<String, Arc<ExtAuthzHttp>>>,
}

impl Authz {
    pub fn on_request(&self, cx: &mut RequestCtx, head: &Parts, host: &str) -> Flow {
        let source_ip = cx.conn.remote.ip();
        let jwt = cx.filters.auth.as_ref().and_then(|a| a.jwt.as_ref());
        let attrs = Attrs {
            source_ip: Some(source_ip),
            remote_ip: remote_ip(&head.headers, cx.conn.shared.xff_trusted_hops),
            principal: cx.conn.peer.as_deref().map(|p| &*p.principal),
            request_principal: jwt.map(|j| j.principal.as_str()),
            claims: jwt.map(|j| &j.claims),
            method: head.method.as_str(),
            path: head.uri.path(),
            host,
            port: cx.port,
            headers: &head.headers,
            destination_ip: Some(self.destination.ip()),
            destination_port: self.destination.port(),
            sni: None,
        };
        let check = self.policies.check(&attrs);
        let counters = &cx.conn.shared.metrics.counters;
        if let Some(d) = check.dry_run.filter(|d| *d != Decision::Allow) {
            counters.authz_dry_run_denied.fetch_add(1, Ordering::Relaxed);
            let by = match d {
                Decision::DeniedBy(p) => p,
                _ => "no dry-run ALLOW policy matched",
            };
            tracing::info!(by, method = %head.method, path = head.uri.path(), peer = attrs.principal, "authorization dry run: would be denied");
        }
        if let Some(audit) = check.audit {
            counters.authz_audited.fetch_add(1, Ordering::Relaxed);
            tracing::info!(policy = audit, method = %head.method, path = head.uri.path(), peer = attrs.principal, "authorization audit");
        }
        if let Some(custom) = check.custom {
            // Checked by the provider before the request goes on (config validation
            // makes sure the provider exists; a reload racing it fails closed).
            match custom.provider.as_deref().and_then(|n| self.providers.get(n)) {
                Some(p) => {
                    let pq = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let call = ext_authz::Call::new(p.clone(), &head.method, pq, &head.headers);
                    cx.filters.auth.get_or_insert_with(Default::default).ext_authz = Some(call);
                }
                None => {
                    counters.authz_denied.fetch_add(1, Ordering::Relaxed);
                    return Flow::Reject(Local::new(StatusCode::FORBIDDEN, ResponseFlags::UAEX, "RBAC: access denied"));
                }
            }
        }
        match check.decision {
            Decision::Allow => Flow::Next,
            Decision::DeniedBy(_) | Decision::NotAllowed => {
                counters.authz_denied.fetch_add(1, Ordering::Relaxed);
                let mut local = Local::new(StatusCode::FORBIDDEN, ResponseFlags::RBAC, "RBAC: access denied");
                local.grpc = cx.grpc.then_some(GRPC_PERMISSION_DENIED);
                Flow::Reject(local)
            }
        }
    }
}

/// The original client per `X-Forwarded-For` with `hops` trusted proxies in front
/// (Envoy's `xff_num_trusted_hops`): the `hops`-th address from the right; `None`
/// (the peer's address) when there are none to trust or too few entries.
fn remote_ip(headers: &http::HeaderMap, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let xff = headers.get("x-forwarded-for")?.to_str().ok()?;
    xff.rsplit(',').nth(hops as usize - 1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ip_trusts_only_the_configured_hops() {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", http::HeaderValue::from_static("203.0.113.7, 10.0.0.1"));
        assert_eq!(remote_ip(&h, 0), None);
        assert_eq!(remote_ip(&h, 1), "10.0.0.1".parse().ok());
        assert_eq!(remote_ip(&h, 2), "203.0.113.7".parse().ok());
        assert_eq!(remote_ip(&h, 3), None);
        h.insert("x-forwarded-for", http::HeaderValue::from_static("garbage"));
        assert_eq!(remote_ip(&h, 1), None);
    }
}
