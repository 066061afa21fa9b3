//! Ingress-gateway test helpers: a `weft gateway` over given documents, the secure
//! ingress task's certificates made with the openssl CLI, curl against it, and raw
//! ClientHellos.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A ServiceEntry for `host` (port `port`, named http) at a local backend.
pub fn service(host: &str, port: u16, backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {}, ports: {{http: {}}}}}]\n",
        backend.ip(),
        backend.port()
    )
}

/// A running `weft gateway` and its listeners.
pub struct Gw {
    pub p: Proc,
    pub https: SocketAddr,
}

impl Gw {
    pub fn http(&self) -> SocketAddr {
        self.p.addr
    }

    /// A metric's sum once it reaches `want` (recorded as the response's last byte
    /// goes out: just after the client has it), or what it is after 5 s.
    pub fn metric(&self, name: &str, labels: &[&str], want: f64) -> f64 {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = Client::connect(self.p.admin.expect("admin"));
            let v = metric_sum(&c.get("admin", "/metrics", &[]).text(), name, labels);
            if v >= want || std::time::Instant::now() >= end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `weft gateway` over `docs` (one file each), labels istio=ingressgateway.
pub fn gateway(docs: &[&str], creds: Option<&Path>) -> Gw {
    let dir = temp_dir();
    let mut args: Vec<String> = vec!["gateway".into()];
    for (i, d) in docs.iter().enumerate() {
        let f = dir.join(format!("{i}.yaml"));
        std::fs::write(&f, d).unwrap();
        args.extend(["--config".into(), f.display().to_string()]);
    }
    args.extend(
        ["--listen", "127.0.0.1:0", "--https", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gateway-labels", "istio=ingressgateway"]
            .map(String::from),
    );
    if let Some(c) = creds {
        args.extend(["--credentials-dir".into(), c.display().to_string()]);
    }
    let p = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let line = p.log_text();
    let https = line
        .split("https on ")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no https address: {line}"));
    Gw { p, https }
}

/// curl's exit code, the status it got (`000` when none) and its stderr.
pub fn curl_status(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    curl(&all)
}

/// The secure ingress task's certificates, made as the task makes them: a CA
/// (`example.com`), server certificates for httpbin and helloworld, and a client
/// certificate. The client's gets `-extfile` (X.509 v3, `clientAuth`): the task's
/// command makes a v1 certificate, which rustls (webpki) refuses from a client.
pub struct Certs {
    pub dir: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl CLI");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

impl Certs {
    pub fn make() -> Certs {
        let dir = temp_dir();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-sha256",
                "-nodes",
                "-days",
                "365",
                "-newkey",
                "rsa:2048",
                "-subj",
                "/O=example Inc./CN=example.com",
                "-keyout",
                "example.com.key",
                "-out",
                "example.com.crt",
            ],
        );
        for name in ["httpbin", "helloworld"] {
            let subj = format!("/CN={name}.example.com/O={name} organization");
            openssl(
                &dir,
                &[
                    "req",
                    "-out",
                    &format!("{name}.example.com.csr"),
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.example.com.key"),
                    "-subj",
                    &subj,
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-sha256",
                    "-days",
                    "365",
                    "-CA",
                    "example.com.crt",
                    "-CAkey",
                    "example.com.key",
                    "-set_serial",
                    "0",
                    "-in",
                    &format!("{name}.example.com.csr"),
                    "-out",
                    &format!("{name}.example.com.crt"),
                ],
            );
        }
        std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-out",
                "client.example.com.csr",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "client.example.com.key",
                "-subj",
                "/CN=client.example.com/O=client organization",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "365",
                "-CA",
                "example.com.crt",
                "-CAkey",
                "example.com.key",
                "-set_serial",
                "1",
                "-in",
                "client.example.com.csr",
                "-out",
                "client.example.com.crt",
                "-extfile",
                "client.ext",
            ],
        );
        Certs { dir }
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// A credentials directory laid out as `kubectl create secret tls NAME` mounted:
    /// `NAME/tls.crt`, `NAME/tls.key` (and `ca.crt` for MUTUAL's `secret generic`).
    pub fn credentials(&self, secrets: &[(&str, &str, bool)]) -> PathBuf {
        let d = temp_dir();
        for (secret, host, ca) in secrets {
            let s = d.join(secret);
            std::fs::create_dir_all(&s).unwrap();
            std::fs::copy(self.dir.join(format!("{host}.crt")), s.join("tls.crt")).unwrap();
            std::fs::copy(self.dir.join(format!("{host}.key")), s.join("tls.key")).unwrap();
            if *ca {
                std::fs::copy(self.dir.join("example.com.crt"), s.join("ca.crt")).unwrap();
            }
        }
        d
    }
}

/// `curl -v -HHost:HOST --resolve HOST:PORT:127.0.0.1 --cacert example.com.crt https://HOST:PORT/PATH`, as the task.
pub fn secure(certs: &Certs, gw: &Gw, host: &str, path: &str, extra: &[&str]) -> (i32, String, String) {
    let port = gw.https.port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let ca = certs.path("example.com.crt");
    let hh = format!("-HHost:{host}");
    let mut args = vec![hh.as_str(), "--resolve", &resolve, "--cacert", &ca];
    args.extend_from_slice(extra);
    args.push(&url);
    curl_status(&args)
}

/// A ClientHello with an SNI of `len` bytes, over as many records as it takes.
pub fn client_hello(sni_len: usize) -> Vec<u8> {
    let name = vec![b'a'; sni_len];
    let mut sni = vec![0u8];
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(&name);
    let mut ext = vec![0, 0];
    ext.extend(((sni.len() + 2) as u16).to_be_bytes());
    ext.extend((sni.len() as u16).to_be_bytes());
    ext.extend(&sni);
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(&ext);
    let mut msg = vec![1];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(&body);
    let mut out = Vec::new();
    for chunk in msg.chunks(16 * 1024) {
        out.extend([0x16, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

/// Whether the gateway closed the connection after `bytes` (rather than hanging or answering).
pub fn closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 512];
    matches!(s.read(&mut buf), Ok(0) | Err(_)) || buf[0] == 0x15
}
