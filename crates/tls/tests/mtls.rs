//! mTLS between two in-process proxies with certificates from the mesh CA: who gets in,
//! who does not, rotation without dropped connections, and resumption.

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_tls::config::{client_config, peer_identity, server_config, ClientAuth};
use weft_tls::x509::summarize;

fn configs(
    client: &Arc<weft_tls::identity::WorkloadIdentity>,
    server: &Arc<weft_tls::identity::WorkloadIdentity>,
    expected: Option<Vec<weft_tls::spiffe::SpiffeId>>,
) -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    (Arc::new(client_config(client.clone(), expected).unwrap()), Arc::new(server_config(server.clone(), ClientAuth::Required).unwrap()))
}

#[tokio::test]
async fn proxies_from_one_ca_connect_and_see_each_others_spiffe_id() {
    let (_dir, ca) = new_ca();
    let productpage = issue(&ca, "default", "productpage");
    let reviews = issue(&ca, "default", "reviews");
    let (c, s) = configs(&productpage, &reviews, Some(vec![id("default", "reviews")]));
    let (client, server) = connected(&c, &s).await.unwrap();
    assert_eq!(peer_identity(client.get_ref().1), Some(id("default", "reviews")));
    assert_eq!(peer_identity(server.get_ref().1), Some(id("default", "productpage")));
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (_dir, ca) = new_ca();
    let (other_dir, other_ca) = new_ca();
    let reviews = issue(&ca, "default", "reviews");
    let s = Arc::new(server_config(reviews, ClientAuth::Required).unwrap());
    let now = SystemTime::now();
    let stranger = raw_client(Some(forge_leaf(other_dir.path(), "attacker", now - HOUR, now + HOUR)));
    let (_, server) = handshake(&stranger, &s).await;
    // Both generated roots are named after the trust domain, so webpki finds the
    // namesake root and rejects the signature; a differently named root gives UnknownIssuer.
    let err = server.unwrap_err().to_string();
    assert!(err.contains("BadSignature") || err.contains("UnknownIssuer"), "{err}");

    // And a whole proxy of another mesh fails on its side too: it does not trust us.
    let foreign = issue(&other_ca, "default", "productpage");
    let c = Arc::new(client_config(foreign, None).unwrap());
    assert!(connected(&c, &s).await.is_err());
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let (dir, ca) = new_ca();
    let s = Arc::new(server_config(issue(&ca, "default", "reviews"), ClientAuth::Required).unwrap());
    let now = SystemTime::now();
    let expired = raw_client(Some(forge_leaf(dir.path(), "ratings", now - 3 * HOUR, now - HOUR)));
    let (_, server) = handshake(&expired, &s).await;
    let err = server.unwrap_err().to_string();
    assert!(err.contains("certificate expired"), "{err}");

    // The same CA's certificate, still valid, is let in: the refusal was the expiry.
    let valid = raw_client(Some(forge_leaf(dir.path(), "ratings", now - HOUR, now + HOUR)));
    let (_, server) = handshake(&valid, &s).await;
    assert_eq!(peer_identity(server.unwrap().get_ref().1), Some(id("default", "ratings")));
}

#[tokio::test]
async fn a_server_outside_the_expected_identities_is_refused() {
    let (_dir, ca) = new_ca();
    let productpage = issue(&ca, "default", "productpage");
    let ratings = issue(&ca, "default", "ratings");
    let expected = Some(vec![id("default", "reviews"), id("prod", "reviews")]);
    let (c, s) = configs(&productpage, &ratings, expected);
    let (client, _) = handshake(&c, &s).await;
    let err = client.unwrap_err().to_string();
    assert!(err.contains("spiffe://cluster.local/ns/default/sa/ratings"), "{err}");
    assert!(err.contains("not one of the expected identities"), "{err}");
}

#[tokio::test]
async fn required_refuses_a_client_without_certificate_and_optional_lets_it_in() {
    let (_dir, ca) = new_ca();
    let reviews = issue(&ca, "default", "reviews");
    let anonymous = raw_client(None);
    let strict = Arc::new(server_config(reviews.clone(), ClientAuth::Required).unwrap());
    let (_, server) = handshake(&anonymous, &strict).await;
    assert!(server.is_err());

    let permissive = Arc::new(server_config(reviews, ClientAuth::Optional).unwrap());
    let (_, server) = handshake(&anonymous, &permissive).await;
    assert_eq!(peer_identity(server.unwrap().get_ref().1), None);
}

#[tokio::test]
async fn optional_client_auth_still_refuses_a_bad_certificate() {
    let (_dir, ca) = new_ca();
    let (other_dir, _other) = new_ca();
    let permissive = Arc::new(server_config(issue(&ca, "default", "reviews"), ClientAuth::Optional).unwrap());
    let now = SystemTime::now();
    let stranger = raw_client(Some(forge_leaf(other_dir.path(), "x", now - HOUR, now + HOUR)));
    let (_, server) = handshake(&stranger, &permissive).await;
    assert!(server.is_err());
}

#[tokio::test]
async fn rotation_presents_the_new_certificate_and_keeps_open_connections() {
    let (_dir, ca) = new_ca();
    let productpage = issue(&ca, "default", "productpage");
    let reviews = issue(&ca, "default", "reviews");
    let (c, s) = configs(&productpage, &reviews, None);
    let old_serial = reviews.summary().serial;

    let (mut first, first_server) = connected(&c, &s).await.unwrap();
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(first_server);
        tokio::io::copy(&mut r, &mut w).await
    });
    assert_eq!(peer_serial(first.get_ref().1), old_serial);

    let (key, cert) = issue_parts(&ca, "default", "reviews");
    reviews.install(&key, &cert.leaf_pem, &cert.chain_pem, &cert.roots_pem).unwrap();
    assert_ne!(reviews.summary().serial, old_serial);

    // A client with a fresh session cache makes a full handshake and sees the new
    // certificate. (One that resumes a session from before the rotation keeps the
    // identity that session was authenticated with, as in Envoy.)
    let fresh = Arc::new(client_config(productpage.clone(), None).unwrap());
    let (second, _second_server) = connected(&fresh, &s).await.unwrap();
    assert_eq!(second.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(peer_serial(second.get_ref().1), reviews.summary().serial);

    // The connection made before the rotation still carries traffic.
    first.write_all(b"still here").await.unwrap();
    first.flush().await.unwrap();
    let mut buf = [0u8; 10];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    drop(first);
    echo.await.unwrap().ok();
}

fn peer_serial(conn: &rustls::CommonState) -> String {
    summarize(&conn.peer_certificates().unwrap()[0]).unwrap().serial
}

#[tokio::test]
async fn a_second_connection_resumes_the_session_and_keeps_the_peer_identity() {
    let (_dir, ca) = new_ca();
    let productpage = issue(&ca, "default", "productpage");
    let reviews = issue(&ca, "default", "reviews");
    let (c, s) = configs(&productpage, &reviews, Some(vec![id("default", "reviews")]));
    let (first, _) = connected(&c, &s).await.unwrap();
    assert_eq!(first.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    let (second, second_server) = connected(&c, &s).await.unwrap();
    assert_eq!(second.get_ref().1.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(second_server.get_ref().1.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(peer_identity(second_server.get_ref().1), Some(id("default", "productpage")));
    assert_eq!(peer_identity(second.get_ref().1), Some(id("default", "reviews")));
}

#[tokio::test]
async fn a_root_added_to_the_bundle_is_trusted_by_the_next_handshake_without_a_new_config() {
    let (_dir, ca) = new_ca();
    let (_new_dir, new_ca) = new_ca();
    let both = format!("{}{}", ca.root_bundle(), new_ca.root_bundle());
    let reviews = issue(&ca, "default", "reviews");
    // A proxy already on the new root, trusting both.
    let (key, cert) = issue_parts(&new_ca, "default", "productpage");
    let productpage =
        Arc::new(weft_tls::identity::WorkloadIdentity::new(id("default", "productpage"), &key, &cert.leaf_pem, "", &both).unwrap());
    let (c, s) = configs(&productpage, &reviews, None);
    assert!(connected(&c, &s).await.is_err(), "reviews does not trust the new root yet");

    reviews.update_roots(&both).unwrap();
    let (_, server) = connected(&c, &s).await.unwrap();
    assert_eq!(peer_identity(server.get_ref().1), Some(id("default", "productpage")));
}
