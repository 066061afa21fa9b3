//! Who called over mTLS: the peer's SPIFFE ID, read once per connection after the
//! handshake, and what the request path makes of it — the `x-forwarded-client-cert`
//! header the app sees and the metrics' principals.
//!
//! # `x-forwarded-client-cert` on the inbound side
//! Istio's sidecars default to `forwardClientCertDetails: APPEND_FORWARD`, which keeps
//! a client-sent header and appends to it. weft uses `SANITIZE_SET` instead: whatever
//! XFCC a client sent is removed, always (plaintext or mTLS), and a connection with a
//! verified peer gets one element, `By=<this proxy's SPIFFE ID>;URI=<the peer's>`. The
//! app then reads only what this proxy verified: a plaintext caller under PERMISSIVE
//! cannot claim another workload's identity by sending the header itself.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use weft_telemetry::{Metrics, PeerId, PeerLabels};
use weft_tls::SpiffeId;

pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// An mTLS connection's verified peer, shared by its requests (one `Arc` clone each).
#[derive(Debug)]
pub struct Peer {
    pub id: SpiffeId,
    /// The identity as Istio's policies write principals: the SPIFFE ID without
    /// `spiffe://` (`cluster.local/ns/default/sa/sleep`).
    pub principal: Box<str>,
    /// `By=<own>;URI=<peer>`, made once per connection.
    pub xfcc: HeaderValue,
    /// The principals as interned for the metrics.
    pub metrics: PeerId,
}

impl Peer {
    /// The peer `id` of a connection to this proxy, whose own identity is `own`.
    pub fn new(id: SpiffeId, own: &SpiffeId, metrics: &Metrics) -> Option<Arc<Peer>> {
        // SPIFFE IDs are validated DNS names and path segments: always a valid header value.
        let xfcc = HeaderValue::try_from(format!("By={own};URI={id}")).ok()?;
        let labels = PeerLabels { source_principal: id.to_string(), destination_principal: own.to_string() };
        let principal = id.to_string().trim_start_matches("spiffe://").into();
        Some(Arc::new(Peer { id, principal, xfcc, metrics: metrics.peer_id(labels) }))
    }
}

/// SANITIZE_SET: drops every client-sent XFCC field and sets this connection's, if it
/// has a verified peer.
pub fn set_forwarded_client_cert(headers: &mut HeaderMap, peer: Option<&Peer>) {
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    if let Some(p) = peer {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), p.xfcc.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_sent_header_is_replaced_by_the_verified_peer_or_removed() {
        let metrics = Metrics::new("reviews", "default");
        let own = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
        let id = SpiffeId::new("cluster.local", "default", "productpage").unwrap();
        let peer = Peer::new(id, &own, &metrics).unwrap();
        let forged = |h: &mut HeaderMap| {
            h.append(&X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("URI=spiffe://cluster.local/ns/default/sa/admin"));
            h.append(&X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("By=x;URI=y"));
        };
        let mut h = HeaderMap::new();
        forged(&mut h);
        set_forwarded_client_cert(&mut h, Some(&peer));
        let all: Vec<_> = h.get_all(&X_FORWARDED_CLIENT_CERT).iter().collect();
        assert_eq!(all, ["By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/default/sa/productpage"]);
        let mut h = HeaderMap::new();
        forged(&mut h);
        set_forwarded_client_cert(&mut h, None);
        assert!(!h.contains_key(&X_FORWARDED_CLIENT_CERT));
    }
}
