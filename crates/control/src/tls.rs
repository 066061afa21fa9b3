//! The API over TLS: a serving certificate from the mesh CA, named by the address the
//! control plane listens on (plus `localhost`, the hostname and `--api-name`s), and the
//! handshake of each accepted connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The serving certificate's lifetime; a new one is issued at each start.
const CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A client that has not finished its handshake within this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An acceptor presenting a fresh certificate from `ca` for `listen` and `extra` names.
pub(crate) fn acceptor(ca: &weft_tls::Ca, listen: SocketAddr, extra: &[String]) -> Result<TlsAcceptor, String> {
    let names = names(listen, hostname().as_deref(), extra);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cert = ca
        .issue_server_cert(&refs, CERT_TTL)
        .map_err(|e| format!("the API's certificate for {}: {e} (check --api-name)", names.join(", ")))?;
    let config =
        weft_tls::config::control_plane_server_config(&cert, ca.root_bundle()).map_err(|e| format!("the API's TLS config: {e}"))?;
    let days = cert.not_after.duration_since(std::time::SystemTime::now()).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    tracing::info!("API certificate (serial {}) for {}, valid {days} days", cert.serial, names.join(", "));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The names the certificate carries: the listen address (loopback ones for a wildcard
/// address, whose other names only the operator knows: `--api-name`), `localhost`, the
/// hostname when it is a DNS name, then `extra`; without repeats.
pub(crate) fn names(listen: SocketAddr, hostname: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = match listen.ip().is_unspecified() {
        true => vec!["127.0.0.1".into(), "::1".into()],
        false => vec![listen.ip().to_string()],
    };
    names.push("localhost".into());
    names.extend(hostname.filter(|h| is_dns_name(h)).map(str::to_ascii_lowercase));
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The TLS side of an accepted connection; None when the client failed or stalled the
/// handshake (plaintext HTTP, another CA, silence): the connection is dropped.
pub(crate) async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake with {peer:?}: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake with {peer:?}: none within {HANDSHAKE_TIMEOUT:?}");
            None
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty())
}

/// Letters, digits and hyphens in dot-separated labels: what a certificate may name.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_listen_address_localhost_and_the_hostname() {
        let n = names("10.0.0.5:15010".parse().unwrap(), Some("Node-1"), &["cp.example".into(), "localhost".into()]);
        assert_eq!(n, ["10.0.0.5", "localhost", "node-1", "cp.example"]);
    }

    #[test]
    fn a_wildcard_address_is_named_by_loopback() {
        let n = names("0.0.0.0:15010".parse().unwrap(), None, &[]);
        assert_eq!(n, ["127.0.0.1", "::1", "localhost"]);
    }

    #[test]
    fn a_hostname_that_is_no_dns_name_is_left_out() {
        let n = names("127.0.0.1:1".parse().unwrap(), Some("bad_host"), &[]);
        assert_eq!(n, ["127.0.0.1", "localhost"]);
    }
}
