//! What a policy sees of a request: a borrowed view, built per request by the proxy
//! without allocating.

use std::net::IpAddr;

use http::HeaderMap;
use serde_json::Value;

/// What a RequestAuthentication made of a request's JWT: its principal (`iss/sub`) and
/// its claims, for the policies to read.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    pub principal: String,
    pub claims: Value,
}

/// A request's attributes, as Istio's policy keys name them.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    /// The peer's address on this connection (`source.ip`, `ipBlocks`).
    pub source_ip: Option<IpAddr>,
    /// The original client's address (`remote.ip`, `remoteIpBlocks`): from
    /// `X-Forwarded-For` per the proxy's trusted hops, else the peer's.
    pub remote_ip: Option<IpAddr>,
    /// The mTLS peer's identity as Istio writes principals: the SPIFFE ID without
    /// `spiffe://` (`cluster.local/ns/default/sa/sleep`). `None`: plaintext — the
    /// principal is unknown, not empty (see [`crate::policy`] on fail-safe matching).
    pub principal: Option<&'a str>,
    /// The verified JWT's `iss/sub` (`None`: no token, a known state).
    pub request_principal: Option<&'a str>,
    /// The verified JWT's claims (`None`: no token).
    pub claims: Option<&'a Value>,
    pub method: &'a str,
    /// The path as routed (normalized), without the query.
    pub path: &'a str,
    /// The request's host (`:authority` / `Host`), lower case, without the port.
    pub host: &'a str,
    /// The port the client named in `:authority` / `Host`, if any.
    pub port: Option<u16>,
    pub headers: &'a HeaderMap,
    /// The address and port the request arrived at (`destination.ip`, `destination.port`).
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    /// The TLS server name the client sent (`connection.sni`).
    pub sni: Option<&'a str>,
}

impl<'a> Attrs<'a> {
    /// The namespace in the peer's principal (`.../ns/<namespace>/sa/...`).
    pub fn source_namespace(&self) -> Option<&'a str> {
        let p = self.principal?;
        let rest = &p[p.find("/ns/")? + 4..];
        Some(rest.split('/').next().unwrap_or(rest))
    }

    /// A claim by path (`["groups"]`, or nested `["a", "b"]`).
    pub fn claim<S: AsRef<str>>(&self, path: &[S]) -> Option<&'a Value> {
        let mut v = self.claims?;
        for key in path {
            v = v.get(key.as_ref())?;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_comes_from_the_principal() {
        let h = HeaderMap::new();
        let mut a = Attrs {
            source_ip: None,
            remote_ip: None,
            principal: Some("cluster.local/ns/foo/sa/sleep"),
            request_principal: None,
            claims: None,
            method: "GET",
            path: "/",
            host: "h",
            port: None,
            headers: &h,
            destination_ip: None,
            destination_port: 80,
            sni: None,
        };
        assert_eq!(a.source_namespace(), Some("foo"));
        a.principal = Some("cluster.local/sa/x");
        assert_eq!(a.source_namespace(), None);
        a.principal = None;
        assert_eq!(a.source_namespace(), None);
    }
}
