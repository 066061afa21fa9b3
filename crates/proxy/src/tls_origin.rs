//! TLS origination (DestinationRule `tls` `SIMPLE` / `MUTUAL`): TCP, then a rustls
//! client handshake with the cluster's compiled `ClientConfig` (shared through an
//! `Arc`, with its session cache, by every connection of the cluster).
//!
//! The name sent as SNI and verified in the server's certificate (unless
//! `subjectAltNames` says which names to accept) is, in order: `sni`; the endpoint's
//! host name when it is resolved by DNS (the egress case: `resolution: DNS` to
//! `api.example.com`); the cluster's service host when it is a DNS name (a
//! ServiceEntry host with IP endpoints); else the endpoint's IP address, which sends
//! no SNI and is verified against the certificate's IP SANs. This is the name a
//! client of the service would use, which is what Istio's auto-SNI picks from the
//! request's `Host` in the common case where `Host` is the service host.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use weft_config::{PoolSettings, TlsMode, UpstreamTls};

use crate::cluster::Target;
use crate::error::UpstreamError;
use crate::transport::{tcp_only, Conn, Transport};

pub(crate) async fn connect(transport: &Transport, target: &Target, s: &PoolSettings, tls: &UpstreamTls) -> Result<Conn, UpstreamError> {
    let Some(cfg) = &tls.client_config else {
        return Err(UpstreamError::Connect(match (tls.mode, &tls.error) {
            // The seam for mesh identity: once the proxy holds a workload certificate,
            // its mTLS config is used here. Without one, fail closed — never plaintext.
            (TlsMode::IstioMutual, _) => "no workload certificate: ISTIO_MUTUAL needs mesh identity".to_owned(),
            (_, Some(e)) => format!("tls settings did not compile: {e}"),
            (_, None) => "tls settings did not compile".to_owned(),
        }));
    };
    if !matches!(transport, Transport::Tcp | Transport::AppNetns(_)) {
        return Err(UpstreamError::Connect("TLS origination runs over TCP only".into()));
    }
    let name = server_name(tls, target);
    let started = tokio::time::Instant::now();
    let tcp = match tokio::time::timeout(s.connect_timeout, tcp_only(target, s)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
        Err(_) => return Err(UpstreamError::Connect(format!("connect timeout after {:?}", s.connect_timeout))),
    };
    // `connectTimeout` bounds the TCP connect and the handshake together.
    let left = s.connect_timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, handshake(cfg.clone(), name.clone(), tcp)).await {
        Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            let e = format!("TLS handshake with {} failed: {e}", show(&name));
            if log_now() {
                tracing::warn!("{e}");
            }
            Err(UpstreamError::Connect(e))
        }
        Err(_) => Err(UpstreamError::Connect(format!("TLS handshake with {} timed out after {:?}", show(&name), s.connect_timeout))),
    }
}

async fn handshake(
    cfg: std::sync::Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await
}

/// At most one handshake-failure line a second per process: a server with a bad
/// certificate fails every request, and the body and access log carry each one.
fn log_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    LAST.swap(now, Ordering::Relaxed) != now
}

fn show(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "?".to_owned(),
    }
}

/// See the module doc. Names were checked when the config compiled; one that still
/// does not parse falls through to the next choice.
fn server_name(tls: &UpstreamTls, target: &Target) -> ServerName<'static> {
    let parse = |s: &str| weft_config::tls::server_name(s);
    if let Some(n) = tls.sni.as_deref().and_then(parse) {
        return n;
    }
    if let Target::Name(host, _) = target {
        if let Some(n @ ServerName::DnsName(_)) = parse(host) {
            return n;
        }
    }
    if let Some(n) = tls.host_name.as_deref().and_then(parse) {
        return n;
    }
    match target {
        Target::Addr(a) => ServerName::IpAddress(a.ip().into()),
        // A name rustls refuses (not DNS, not IP): nothing verifies for 0.0.0.0, so it fails closed.
        Target::Name(host, _) => parse(host).unwrap_or(ServerName::IpAddress(std::net::IpAddr::from([0, 0, 0, 0]).into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(sni: Option<&str>, host: Option<&str>) -> UpstreamTls {
        let mut t = UpstreamTls::failed(TlsMode::Simple, String::new());
        t.sni = sni.map(str::to_owned);
        t.host_name = host.map(str::to_owned);
        t
    }

    #[test]
    fn sni_is_the_setting_then_the_dns_name_then_the_service_host_then_the_ip() {
        let ip = Target::Addr("127.0.0.1:443".parse().unwrap());
        let dns = Target::Name("api.example.com".into(), 443);
        assert_eq!(show(&server_name(&tls(Some("set.example"), Some("svc.example")), &dns)), "set.example");
        assert_eq!(show(&server_name(&tls(None, Some("svc.example")), &dns)), "api.example.com");
        assert_eq!(show(&server_name(&tls(None, Some("svc.example")), &ip)), "svc.example");
        assert_eq!(show(&server_name(&tls(None, None), &ip)), "127.0.0.1");
    }

    #[tokio::test]
    async fn istio_mutual_without_identity_fails_closed() {
        let mut t = tls(None, None);
        t.mode = TlsMode::IstioMutual;
        t.error = None;
        let s = PoolSettings { tls: Some(t), ..Default::default() };
        let e = Transport::Tcp.connect(&Target::Addr("127.0.0.1:9".parse().unwrap()), &s).await.err().unwrap();
        assert_eq!(e.to_string(), "upstream connect error: no workload certificate: ISTIO_MUTUAL needs mesh identity");
    }
}
