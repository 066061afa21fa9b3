//! `weft run --intercept` with real processes: the app runs in a network namespace of
//! its own (made by weft run: a user namespace when not root) whose outbound TCP the
//! kernel's nftables rules send to the sidecar. An app with no proxy settings calls a
//! mesh service and is routed by the mesh (its `Host`); a non-HTTP connection to an
//! address outside the mesh is passed through to where it was going; the app's own
//! loopback is its own; nothing reaches the app but through its sidecar.
//!
//! Needs `ip` (iproute2), `nft` (nftables) and network namespaces: the tests say so and
//! stop when the machine cannot make a namespace at all (a container without the
//! privilege), and fail when it can but weft does not.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

use common::*;

const HELLO: &str = "hello.default.svc.cluster.local";
const CALLER: &str = "caller.default.svc.cluster.local";

/// The caller app: `GET /http?url=U&host=H` fetches U (with Host H) and answers with
/// what came back; `GET /tcp?addr=A:P` sends a line to A:P and answers with the reply;
/// `GET /env` answers its proxy settings.
const CALLER_APP: &str = r#"
import http.server, os, socket, sys, urllib.error, urllib.parse, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        try:
            if u.path == "/http":
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                req = urllib.request.Request(q["url"], headers={"Host": q["host"]} if "host" in q else {})
                with opener.open(req, timeout=5) as r:
                    body = b"%d " % r.status + r.read()
            elif u.path == "/tcp":
                host, port = q["addr"].rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.sendall(b"ping\n")
                    body = s.recv(100)
            elif u.path == "/resolve":
                body = socket.gethostbyname(q["name"]).encode()
            elif u.path == "/env":
                body = repr(sorted(k for k in os.environ if "proxy" in k.lower())).encode()
            else:
                body = b"caller"
            code = 200
        except urllib.error.HTTPError as e:
            body, code = b"%d " % e.code + str(e.headers).encode() + e.read(), 200
        except Exception as e:
            body, code = repr(e).encode(), 502
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether this machine lets us make a network namespace at all (util-linux's unshare,
/// as root or through a user namespace).
fn namespaces_available() -> bool {
    let root = unsafe_euid_is_root();
    let args: &[&str] = if root { &["-n", "true"] } else { &["-r", "-n", "true"] };
    Command::new("unshare").args(args).status().is_ok_and(|s| s.success())
}

fn unsafe_euid_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_args(cp: &Plane, token: &Path, service: &str, port: u16) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--service", service, "--port", &port.to_string(), "--ttl", "3s", "--control-plane", &cp.url()].map(String::from).to_vec();
    args.extend(["--ca-file".into(), cp.ca_file().display().to_string(), "--token-file".into(), token.display().to_string()]);
    args
}

/// The machine's own non-loopback address (traffic to it stays on the machine).
fn own_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A line server: answers each connection's first line with "pong <line>".
fn line_server(ip: IpAddr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(20).flatten() {
            let mut c = c;
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(format!("pong {}", String::from_utf8_lossy(&buf[..n])).as_bytes());
        }
    });
    addr
}

#[test]
fn an_app_with_no_proxy_settings_reaches_the_mesh_through_interception() {
    if !namespaces_available() {
        eprintln!("SKIPPED: this machine cannot make network namespaces (unshare -n fails), so --intercept cannot run here");
        return;
    }
    let cp = plane();
    let hello_token = workload_token(&cp, "default", "hello");
    let caller_token = workload_token(&cp, "default", "caller");
    let client = follower(&cp, "client");
    // hello: a plain `weft run` (HTTP_PROXY), the service the intercepted app calls.
    let hello_port = free_port();
    let mut hello_args = run_args(&cp, &hello_token, "hello", hello_port);
    hello_args.extend(["--", "python3", "-m", "http.server", &hello_port.to_string(), "--bind", "127.0.0.1"].map(String::from));
    let _hello = spawn(&hello_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until("hello through the mesh", || get(client.addr(), HELLO, "/", &[]).status == 200);

    let dir = temp_dir();
    std::fs::write(dir.join("caller.py"), CALLER_APP).unwrap();
    let caller_port = free_port();
    let mut args = run_args(&cp, &caller_token, "caller", caller_port);
    args.push("--intercept".into());
    args.extend(["--", "python3", &dir.join("caller.py").display().to_string(), &caller_port.to_string()].map(String::from));
    let caller = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until("the intercepted caller through the mesh", || get(client.addr(), CALLER, "/", &[]).status == 200);

    // The app's own loopback is its own: its port is not on the machine's.
    assert!(std::net::TcpStream::connect(("127.0.0.1", caller_port)).is_err(), "the app listens in its namespace only");
    let env = get(client.addr(), CALLER, "/env", &[]);
    assert_eq!(env.text(), "[]", "no proxy settings in the app's environment");

    // Mesh services by name, with no proxy settings: the mesh DNS gives a virtual IP
    // (asked for on demand), the interception brings the connection to the sidecar.
    let vip = get(client.addr(), CALLER, "/resolve?name=hello", &[]).text();
    assert!(vip.starts_with("240.240."), "hello's virtual IP: {vip}\n{}", caller.log_text());
    for url in ["http://hello/", "http://hello.default:8080/", "http://hello.default.svc.cluster.local/"] {
        let r = get(client.addr(), CALLER, &format!("/http?url={url}"), &[]);
        assert!(r.text().starts_with("200 ") && r.text().contains("Directory listing"), "{url}: {}", r.text());
    }

    // HTTP to any address, routed by the mesh by its Host: hello's directory listing.
    let r = get(client.addr(), CALLER, "/http?url=http://10.77.0.1:8080/&host=hello", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), caller.log_text());
    assert!(r.text().starts_with("200 ") && r.text().contains("Directory listing"), "{}", r.text());
    // A host the mesh does not know: 404 from the sidecar, as through HTTP_PROXY.
    let r = get(client.addr(), CALLER, "/http?url=http://10.77.0.1:8080/&host=nowhere.example", &[]);
    assert!(r.text().contains("404"), "{}", r.text());

    // Not HTTP, to an address outside the mesh: passed through to where it was going.
    if let Some(ip) = own_address() {
        let server = line_server(ip);
        let r = get(client.addr(), CALLER, &format!("/tcp?addr={server}"), &[]);
        assert_eq!(r.text(), "pong ping\n", "passthrough");
    }
    drop(caller);
}

#[test]
fn intercept_refuses_the_sidecars_ports_for_the_app() {
    if !namespaces_available() {
        eprintln!("SKIPPED: this machine cannot make network namespaces");
        return;
    }
    let cp = plane();
    let token = workload_token(&cp, "default", "caller");
    let mut args = run_args(&cp, &token, "caller", 15053);
    args.extend(["--intercept", "--", "python3", "-m", "http.server", "15053"].map(String::from));
    let out = Command::new(weft()).args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--port 15053: with --intercept, ports 15001 and 15053 are the sidecar's"), "{err}");
    // The namespace's rules send to 127.0.0.1:15001: another outbound listener would get nothing.
    let mut args = run_args(&cp, &token, "caller", free_port());
    args.extend(["--intercept", "--outbound", "127.0.0.1:17500", "--", "python3", "-m", "http.server"].map(String::from));
    let out = Command::new(weft()).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--outbound: with --intercept"), "{err}");
}
