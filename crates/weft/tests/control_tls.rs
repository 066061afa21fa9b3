//! The control plane's API over TLS: a certificate from the mesh CA naming the address it
//! listens on; clients verify it with the mesh root (`--ca-file`, `$WEFT_CA_FILE`).

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn plaintext_http_to_the_tls_api_gets_no_answer_and_the_api_keeps_serving() {
    let cp = plane();
    let mut s = std::net::TcpStream::connect(cp.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head = format!("GET /v1/status HTTP/1.1\r\nhost: cp\r\nconnection: close\r\nauthorization: Bearer {}\r\n\r\n", cp.admin_token());
    let _ = s.write_all(head.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!out.starts_with(b"HTTP/"), "plaintext was answered: {}", String::from_utf8_lossy(&out));
    assert_eq!(plane_raw(&cp, "GET", "/v1/status", b"").0, 200, "served over TLS meanwhile");
    // Nor does the CLI get anywhere with an http:// URL.
    let out = Command::new(weft())
        .args(["history", "--server", &format!("http://{}", cp.addr)])
        .env("WEFT_TOKEN_FILE", cp.admin_token_file())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn a_client_with_another_meshs_root_is_refused_with_a_clear_error() {
    let (cp, other) = (plane(), plane());
    let out = Command::new(weft())
        .args(["history"])
        .env("WEFT_SERVER", cp.url())
        .env("WEFT_CA_FILE", other.ca_file())
        .env("WEFT_TOKEN_FILE", cp.admin_token_file())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(err.contains("certificate") && err.contains("--ca-file"), "{err}");
    // In process: the handshake fails on the certificate.
    let Err(e) = tls_to(cp.addr, &std::fs::read_to_string(other.ca_file()).unwrap()) else {
        panic!("verified with another CA");
    };
    assert!(e.contains("certificate"), "{e}");
    // A proxy with the wrong root does not follow, and says why.
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &cp.url(),
        "--ca-file",
        other.ca_file().to_str().unwrap(),
        "--token-file",
        cp.admin_token_file().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    wait_until("the proxy says the certificate is refused", || p.log_text().contains("certificate"));
}

#[test]
fn an_https_url_without_a_ca_file_names_the_flag() {
    let cp = plane();
    let out = Command::new(weft())
        .args(["history", "--server", &cp.url()])
        .env_remove("WEFT_CA_FILE")
        .env("WEFT_TOKEN_FILE", cp.admin_token_file())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--ca-file (or $WEFT_CA_FILE)"), "{}", text(&out));
    let out = Command::new(weft())
        .args(["proxy", "--control-plane", &cp.url(), "--listen", "127.0.0.1:0"])
        .env_remove("WEFT_CA_FILE")
        .env("WEFT_TOKEN_FILE", cp.admin_token_file())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--ca-file"), "{}", text(&out));
}

#[test]
fn curl_with_the_mesh_root_calls_the_api() {
    let cp = plane();
    let auth = format!("authorization: Bearer {}", cp.admin_token());
    let url = format!("https://{}/v1/status", cp.addr);
    let (rc, body, err) = curl(&["-s", "--cacert", cp.ca_file().to_str().unwrap(), "-H", &auth, &url]);
    assert_eq!(rc, 0, "{err}");
    assert!(body.contains("\"revision\""), "{body}");
    // By name too: the certificate names localhost.
    let url = format!("https://localhost:{}/v1/status", cp.addr.port());
    let (rc, body, err) = curl(&["-s", "--cacert", cp.ca_file().to_str().unwrap(), "-H", &auth, &url]);
    assert_eq!(rc, 0, "{err}");
    assert!(body.contains("\"revision\""), "{body}");
    // Without the root, curl refuses the certificate (60: peer certificate cannot be authenticated).
    let (rc, _, _) = curl(&["-s", "-H", &auth, &format!("https://{}/v1/status", cp.addr)]);
    assert_eq!(rc, 60);
}

#[test]
fn the_served_certificate_names_the_listen_address_localhost_and_api_names() {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let d = dir.to_str().unwrap();
    let p = spawn(&["control-plane", "--data-dir", d, "--listen", &addr.to_string(), "--api-name", "cp.mesh.example"]);
    let cp = Plane { p, addr, dir: dir.clone() };
    let sclient = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile", cp.ca_file().to_str().unwrap(), "-verify_return_error"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let shown = String::from_utf8_lossy(&sclient.stdout).into_owned();
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}\n{}", String::from_utf8_lossy(&sclient.stderr));
    let mut x509 = Command::new("openssl").args(["x509", "-noout", "-text"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    x509.stdin.take().unwrap().write_all(shown.as_bytes()).unwrap();
    let cert = String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).into_owned();
    assert!(cert.contains("IP Address:127.0.0.1"), "{cert}");
    assert!(cert.contains("DNS:localhost") && cert.contains("DNS:cp.mesh.example"), "{cert}");
    assert!(cert.contains("URI:spiffe://cluster.local/ns/weft-system/sa/control-plane"), "{cert}");
    assert!(cp.p.log_text().contains(&format!("listening on https://{addr}")), "{}", cp.p.log_text());
}

#[test]
fn an_insecure_control_plane_stays_plain_http_for_the_cli() {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let p = spawn(&["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string(), "--insecure"]);
    assert!(p.log_text().contains(&format!("listening on http://{addr}")), "{}", p.log_text());
    let out = Command::new(weft())
        .args(["history", "--server", &format!("http://{addr}")])
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_TOKEN_FILE")
        .env_remove("WEFT_CA_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
