//! TLS origination (DestinationRule `tls`) against a real HTTPS server: nginx with
//! `ssl`, certificates made here with the openssl CLI. nginx answers with what it saw
//! of the TLS session (`$ssl_protocol`, `$ssl_server_name`, `$ssl_client_s_dn`), so
//! each test asserts what the upstream saw, not what weft says it did.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Certificates: a test CA, a server certificate for `secure.test` and 127.0.0.1, a
/// client certificate (CN weft-client), and another CA that signed none of them.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_str().unwrap().to_owned()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is installed");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn pki() -> Pki {
    let dir = temp_dir();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN={ca}"));
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&["-keyout", &key, "-out", &crt, "-subj", &subj, "-days", "2"]);
        openssl(&dir, &a);
    }
    let leaf = |name: &str, subj: &str, ext: &str| {
        let mut a = vec!["req"];
        a.extend_from_slice(&ec);
        let (key, csr, crt, extf) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(dir.join(&extf), ext).unwrap();
        a.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", subj]);
        openssl(&dir, &a);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    };
    leaf(
        "server",
        "/CN=secure.test",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:secure.test,DNS:alt.test,IP:127.0.0.1\n",
    );
    leaf("client", "/CN=weft-client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    Pki { dir }
}

/// nginx in the foreground (one process), killed on drop. `open` answers over TLS with
/// what it saw; `mtls` also requires a client certificate from the test CA.
struct Nginx {
    child: Child,
    open: SocketAddr,
    mtls: SocketAddr,
    /// HTTP/2 over TLS (ALPN h2), answering with the protocol it spoke.
    h2: SocketAddr,
    /// Two more TLS servers answering `server=a` / `server=b` (passthrough targets).
    a: SocketAddr,
    b: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(pki: &Pki) -> Nginx {
    let (open, mtls, h2, a, b) = (free_addr(), free_addr(), free_addr(), free_addr(), free_addr());
    let d = pki.dir.display();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate {d}/server.crt; ssl_certificate_key {d}/server.key;
  server {{ listen {open} ssl; add_header X-Session-Reused $ssl_session_reused; location / {{ return 200 \"tls=$ssl_protocol sni=$ssl_server_name client=$ssl_client_s_dn\"; }} }}
  server {{ listen {mtls} ssl; ssl_verify_client on; ssl_client_certificate {d}/ca.crt;
    location / {{ return 200 \"tls=$ssl_protocol client=$ssl_client_s_dn\"; }} }}
  server {{ listen {a} ssl; location / {{ return 200 \"server=a sni=$ssl_server_name\"; }} }}
  server {{ listen {b} ssl; location / {{ return 200 \"server=b sni=$ssl_server_name\"; }} }}
  server {{ listen {h2} ssl http2; location / {{ return 200 \"tls=$ssl_protocol proto=$server_protocol\"; }} }}
}}
"
    );
    let path = pki.dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let bin = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| Command::new(b).arg("-v").output().is_ok()).expect("nginx is installed");
    let child = Command::new(bin)
        .args(["-p", &pki.path(""), "-c", path.to_str().unwrap(), "-e", &pki.path("error.log")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let n = Nginx { child, open, mtls, h2, a, b };
    let end = Instant::now() + Duration::from_secs(10);
    while [open, mtls, h2, a, b].iter().any(|a| std::net::TcpStream::connect(a).is_err()) {
        assert!(Instant::now() < end, "nginx did not start: {}", std::fs::read_to_string(pki.dir.join("error.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    n
}

/// A ServiceEntry `secure.test` (one HTTPS port 443) with one endpoint, and a
/// DestinationRule with `tls` (flow YAML).
fn mesh(backend: SocketAddr, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: secure}}\nspec:\n  hosts: [secure.test]\n  resolution: STATIC\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  endpoints: [{{address: {}, ports: {{https: {}}}}}]\n{}",
        backend.ip(),
        backend.port(),
        destination_rule("secure.test", &format!("{{tls: {tls}}}"))
    )
}

#[test]
fn simple_origination_reaches_an_https_server_over_tls_with_sni() {
    let pki = pki();
    let ng = nginx(&pki);
    let ca = pki.path("ca.crt");

    // SNI defaults to the service host, and the certificate is verified for it.
    let p = proxy(&mesh(ng.open, &format!("{{mode: SIMPLE, caCertificates: {ca}}}")));
    let mut c = Client::connect(p.addr());
    for _ in 0..3 {
        let r = c.get("secure.test", "/", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().starts_with("tls=TLSv1.3 sni=secure.test client="), "{}", r.text());
    }
    let opened = p.metric("istio_tcp_connections_opened_total", &["destination_service=\"secure.test\""]);
    assert_eq!(opened, 1.0, "kept-alive requests reuse one TLS connection");

    // A connection per request: the second and later resume the TLS session.
    let p = proxy(&mesh(
        ng.open,
        &format!("{{mode: SIMPLE, caCertificates: {ca}}}, connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}"),
    ));
    let mut c = Client::connect(p.addr());
    let reused: Vec<String> = (0..4).map(|_| c.get("secure.test", "/", &[]).header("x-session-reused").unwrap_or("-").to_owned()).collect();
    assert_eq!(reused, [".", "r", "r", "r"], "session resumption (nginx's $ssl_session_reused)");

    // `sni` is sent as configured (and verified against the certificate).
    let p = proxy(&mesh(ng.open, &format!("{{mode: SIMPLE, caCertificates: {ca}, sni: alt.test}}")));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.text(), "tls=TLSv1.3 sni=alt.test client=");
    // A request with a body goes through the hyper client: over TLS as well.
    let r = Client::connect(p.addr()).request("POST", "secure.test", "/", &[], b"hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("tls=TLSv1.3"), "{}", r.text());
}

#[test]
fn an_http2_cluster_negotiates_h2_over_tls() {
    let pki = pki();
    let ng = nginx(&pki);
    let ca = pki.path("ca.crt");
    let config = mesh(ng.h2, &format!("{{mode: SIMPLE, caCertificates: {ca}}}")).replace("protocol: HTTPS", "protocol: HTTP2");
    let p = proxy(&config);
    let mut c = Client::connect(p.addr());
    for _ in 0..5 {
        let r = c.get("secure.test", "/", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls=TLSv1.3 proto=HTTP/2.0");
    }
    let opened = p.metric("istio_tcp_connections_opened_total", &["destination_service=\"secure.test\""]);
    assert_eq!(opened, 1.0, "one multiplexed TLS connection");
}

#[test]
fn unverifiable_server_certificates_are_503_unless_insecure_skip_verify() {
    let pki = pki();
    let ng = nginx(&pki);

    // A server certificate from a CA that caCertificates does not hold: 503 UF, the reason in the body.
    let other = pki.path("other-ca.crt");
    let p = proxy(&mesh(ng.open, &format!("{{mode: SIMPLE, caCertificates: {other}}}")));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().starts_with("upstream connect error"), "a handshake failure is a connect failure: {}", r.text());
    assert!(r.text().contains("TLS handshake with secure.test failed") && r.text().contains("UnknownIssuer"), "{}", r.text());
    wait_until("the failure is logged", || p.p.log_text().contains("UnknownIssuer"));

    // The same server with insecureSkipVerify: served, and the proxy warned about it.
    let p = proxy(&mesh(ng.open, &format!("{{mode: SIMPLE, caCertificates: {other}, insecureSkipVerify: true}}")));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("tls=TLSv1.3 sni=secure.test"), "{}", r.text());
    wait_until("the warning is logged", || p.p.log_text().contains("insecureSkipVerify"));

    // subjectAltNames: a name the certificate has passes, one it lacks is 503.
    let ca = pki.path("ca.crt");
    let p = proxy(&mesh(ng.open, &format!("{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [alt.test]}}")));
    assert_eq!(get(p.addr(), "secure.test", "/", &[]).status, 200);
    let p = proxy(&mesh(
        ng.open,
        &format!("{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [spiffe://cluster.local/ns/default/sa/other]}}"),
    ));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("include none of subjectAltNames"), "{}", r.text());
}

#[test]
fn mutual_origination_presents_the_client_certificate() {
    let pki = pki();
    let ng = nginx(&pki);
    let (ca, crt, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let p = proxy(&mesh(ng.mtls, &format!("{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {crt}, privateKey: {key}}}")));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls=TLSv1.3 client=CN=weft-client");

    // SIMPLE to the same server: nginx wants a certificate and answers 400 over TLS.
    let p = proxy(&mesh(ng.mtls, &format!("{{mode: SIMPLE, caCertificates: {ca}}}")));
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("No required SSL certificate was sent"), "{}", r.text());
}

/// Istio's egress task: the app sends plain HTTP to port 80; a VirtualService sends
/// port 80 to port 443, where the DestinationRule originates TLS.
#[test]
fn egress_port_80_routed_to_443_originates_tls() {
    let pki = pki();
    let ng = nginx(&pki);
    let ca = pki.path("ca.crt");
    let plain = backend("plain", &[]);
    let config = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.test]
  resolution: STATIC
  ports:
  - {{number: 80, name: http-port, protocol: HTTP}}
  - {{number: 443, name: https-port-for-tls-origination, protocol: HTTPS}}
  endpoints: [{{address: 127.0.0.1, ports: {{http-port: {plain}, https-port-for-tls-origination: {tls}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [secure.test]
  http:
  - match: [{{port: 80}}]
    route: [{{destination: {{host: secure.test, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
",
        plain = plain.addr.port(),
        tls = ng.open.port()
    );
    let p = proxy(&config);
    let r = get(p.addr(), "secure.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls=TLSv1.3 sni=secure.test client=");
    let (rc, out, err) = curl(&["-x", &format!("http://{}", p.addr()), "http://secure.test/"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "tls=TLSv1.3 sni=secure.test client=", "HTTP_PROXY-style request");
}

fn validate(dir: &Path, text: &str) -> (i32, String) {
    std::fs::write(dir.join("mesh.yaml"), text).unwrap();
    let o = Command::new(weft()).current_dir(dir).args(["validate", "-f", "mesh.yaml"]).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn hostile_tls_settings_are_refused_by_validate_with_the_field() {
    let pki = pki();
    let dir = &pki.dir;
    std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(dir.join("big.pem"), vec![b'A'; 10 << 20]).unwrap();
    let at = "127.0.0.1:8443".parse().unwrap();
    let prefix = "mesh.yaml: DestinationRule secure.test: spec.trafficPolicy.tls.";
    let cases: &[(&str, &str)] = &[
        ("{mode: MUTUAL, caCertificates: ca.crt}", "clientCertificate: required for MUTUAL"),
        ("{mode: MUTUAL, clientCertificate: client.crt}", "privateKey: required for MUTUAL"),
        ("{mode: MUTUAL, clientCertificate: missing.crt, privateKey: client.key}", "clientCertificate: cannot read \"missing.crt\""),
        ("{mode: SIMPLE, caCertificates: garbage.pem}", "caCertificates: \"garbage.pem\" is not valid PEM"),
        ("{mode: SIMPLE, caCertificates: client.key}", "caCertificates: \"client.key\" holds no PEM certificate"),
        (
            "{mode: MUTUAL, clientCertificate: client.crt, privateKey: client.crt}",
            "privateKey: \"client.crt\" holds no usable PEM private key",
        ),
        ("{mode: MUTUAL, clientCertificate: client.crt, privateKey: server.key}", "privateKey: does not go with clientCertificate"),
        ("{mode: SIMPLE, caCertificates: /dev/zero}", "caCertificates: \"/dev/zero\" is not a regular file"),
        ("{mode: SIMPLE, caCertificates: big.pem}", "caCertificates: \"big.pem\" is larger than 1024 KiB"),
        ("{mode: SIMPLE, sni: \"a.test\\nHost: evil\"}", "sni: "),
        ("{mode: SIMPLE, credentialName: my-secret}", "credentialName: not supported"),
        ("{mode: ISTIO_MUTUAL, clientCertificate: client.crt}", "clientCertificate: must not be set for ISTIO_MUTUAL"),
        ("{mode: STRICT}", "mode: unknown value \"STRICT\" (expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)"),
    ];
    for (tls, want) in cases {
        let (rc, err) = validate(dir, &mesh(at, tls));
        assert_eq!(rc, 1, "{tls} passed: {err}");
        let want = format!("{prefix}{want}");
        assert!(err.contains(&want), "{tls}:\n want {want}\n got {err}");
    }
    // Port-level and subset-level settings are checked at their own paths.
    let port_level =
        mesh(at, "{mode: DISABLE}").replace("{tls: {mode: DISABLE}}", "{portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL}}]}");
    let (rc, err) = validate(dir, &port_level);
    assert_eq!(rc, 1);
    assert!(err.contains("spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate: required for MUTUAL"), "{err}");
    // A good MUTUAL setting passes.
    let (rc, err) =
        validate(dir, &mesh(at, "{mode: MUTUAL, caCertificates: ca.crt, clientCertificate: client.crt, privateKey: client.key}"));
    assert_eq!(rc, 0, "{err}");
}

/// VirtualService `tls[]`: TLS passthrough by SNI. curl speaks TLS to the proxy's
/// listener; the proxy reads only the ClientHello's SNI and tunnels the bytes, so the
/// certificate curl verifies is nginx's own, and nginx sees curl's SNI.
#[test]
fn tls_routes_pass_tls_through_by_sni() {
    let pki = pki();
    let ng = nginx(&pki);
    let plain = backend("plain", &[]);
    let se = |name: &str, at: SocketAddr| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.internal]\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: {}, ports: {{tls: {}}}}}]\n",
            at.ip(),
            at.port()
        )
    };
    let config = format!(
        "{}{}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: by-sni}}
spec:
  hosts: [\"*.test\"]
  tls:
  - match: [{{sniHosts: [secure.test]}}]
    route: [{{destination: {{host: a.internal}}}}]
  - match: [{{sniHosts: [\"*.test\"]}}]
    route: [{{destination: {{host: b.internal}}}}]
",
        service_entry("plain", &[(plain.addr, "v: x", 1)]),
        se("a", ng.a),
        se("b", ng.b)
    );
    let p = proxy(&config);
    let port = p.addr().port();
    let https = |name: &str| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        curl(&["--cacert", &pki.path("ca.crt"), "--resolve", &resolve, &format!("https://{name}:{port}/")])
    };
    let (rc, out, err) = https("secure.test");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "server=a sni=secure.test");
    let (rc, out, err) = https("alt.test");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "server=b sni=alt.test");
    // No route for the SNI: the connection is closed, nothing is served.
    let (rc, out, _) = https("other.example");
    assert_ne!(rc, 0, "{out}");
    wait_until("the refusal is logged", || p.p.log_text().contains("no tls route for this SNI"));
    // Plain HTTP on the same listener is served as before.
    assert_eq!(get(p.addr(), "plain", "/", &[]).status, 200);
    // Hostile first records: not a ClientHello, or a cut one, are closed without a route.
    for bytes in [&[0x16u8, 3, 1, 0, 5, 2, 0, 0, 1, 0][..], &[0x16, 3, 1, 0x40, 0x01][..]] {
        let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut s, bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let n = std::io::Read::read_to_end(&mut s, &mut buf);
        assert!(buf.is_empty(), "{n:?} {buf:?}");
    }
    assert_eq!(get(p.addr(), "plain", "/", &[]).status, 200, "still serving");
    // A ClientHello fragmented over several handshake records is joined, routed by its
    // SNI and forwarded as it came: nginx completes the handshake with the client.
    let out = fragmented_hello_get(p.addr(), &pki.path("ca.crt"), "secure.test", 200);
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("server=a sni=secure.test"), "{out}");
    // In records of 8 bytes it takes more than 16: closed, nothing served.
    let out = fragmented_hello_get(p.addr(), &pki.path("ca.crt"), "secure.test", 8);
    assert!(out.is_empty(), "{out}");
}

/// A GET over TLS (rustls) to `name` through `addr`, the ClientHello cut into
/// handshake records of `size` bytes; the answer, or nothing when the handshake fails.
fn fragmented_hello_get(addr: SocketAddr, ca: &str, name: &str, size: usize) -> String {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    weft_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), server).unwrap();
    let mut first = Vec::new();
    conn.write_tls(&mut first).unwrap();
    let mut split = Vec::new();
    let mut rest = &first[..];
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        let (rec, r) = rest.split_at(5 + len);
        rest = r;
        for c in rec[5..].chunks(size) {
            split.extend_from_slice(&rec[..3]);
            split.extend_from_slice(&(c.len() as u16).to_be_bytes());
            split.extend_from_slice(c);
        }
    }
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(&split).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    if tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A failed handshake is a connect failure: retried on another endpoint, and counted
/// by outlier detection until the endpoint is ejected. The third endpoint speaks plain
/// HTTP, so every handshake with it fails.
#[test]
fn handshake_failures_are_retried_and_eject_the_endpoint() {
    let pki = pki();
    let ng = nginx(&pki);
    let plain = backend("plain", &[]);
    let ca = pki.path("ca.crt");
    let eps: String =
        [ng.a, ng.b, plain.addr].iter().map(|a| format!("  - {{address: {}, ports: {{https: {}}}}}\n", a.ip(), a.port())).collect();
    let config = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: secure}}\nspec:\n  hosts: [secure.test]\n  resolution: STATIC\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  endpoints:\n{eps}{}",
        destination_rule(
            "secure.test",
            &format!("{{tls: {{mode: SIMPLE, caCertificates: {ca}}}, loadBalancer: {{simple: ROUND_ROBIN}}, outlierDetection: {{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}}}}")
        )
    );
    let p = proxy(&config);
    for i in 0..30 {
        let r = get(p.addr(), "secure.test", "/", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(r.text().starts_with("server="), "{}", r.text());
    }
    assert_eq!(p.metric("weft_outlier_ejections_total", &[]), 1.0);
    assert_eq!(p.metric("weft_upstream_retries_total", &[]), 2.0, "two failed handshakes, each retried once");
}
