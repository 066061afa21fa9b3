//! The control plane's API over TLS: a proxy is known by its certificate, a CLI user
//! without one still connects (and authenticates with a token), a stranger is refused.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_tls::config::{control_plane_client_config, control_plane_server_config, peer_identity};

async fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, name: &str) -> Result<Option<weft_tls::SpiffeId>, String> {
    let (c, s) = connected_to(client, server, name).await;
    match (c, s) {
        (Ok(_), Ok(s)) => Ok(peer_identity(s.get_ref().1)),
        (c, s) => Err(format!("client: {:?}; server: {:?}", c.err(), s.err())),
    }
}

async fn connected_to(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    name: &str,
) -> (
    std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
    std::io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::join!(TlsConnector::from(client.clone()).connect(name, c), TlsAcceptor::from(server.clone()).accept(s))
}

#[tokio::test]
async fn proxies_are_known_by_certificate_cli_users_connect_without_one() {
    let (_dir, ca) = new_ca();
    let cert = ca.issue_server_cert(&["127.0.0.1", "localhost"], Duration::from_secs(3600)).unwrap();
    let server = Arc::new(control_plane_server_config(&cert, ca.root_bundle()).unwrap());

    let proxy = Arc::new(control_plane_client_config(ca.root_bundle(), Some(issue(&ca, "default", "reviews"))).unwrap());
    assert_eq!(connect(&proxy, &server, "127.0.0.1").await.unwrap(), Some(id("default", "reviews")));

    let cli = Arc::new(control_plane_client_config(ca.root_bundle(), None).unwrap());
    assert_eq!(connect(&cli, &server, "localhost").await.unwrap(), None);

    // The CLI checks the name it dialled: a control plane certificate for other names fails.
    assert!(connect(&cli, &server, "control.example").await.is_err());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_and_a_client_with_another_root_refuses_the_server() {
    let (_dir, ca) = new_ca();
    let (other_dir, other_ca) = new_ca();
    let cert = ca.issue_server_cert(&["localhost"], Duration::from_secs(3600)).unwrap();
    let server = Arc::new(control_plane_server_config(&cert, ca.root_bundle()).unwrap());

    let now = SystemTime::now();
    let stranger = raw_client(Some(forge_leaf(other_dir.path(), "reviews", now - HOUR, now + HOUR)));
    let (_, s) = connected_to(&stranger, &server, "localhost").await;
    assert!(s.is_err());

    let misconfigured = Arc::new(control_plane_client_config(other_ca.root_bundle(), None).unwrap());
    assert!(connect(&misconfigured, &server, "localhost").await.is_err());
}
