//! Control planes sharing a real etcd (Debian's `etcd-server`; `.ci/run` installs it):
//! a registration through one reaches a proxy following the other, TTL leases kept
//! alive through either, concurrent writes through both, and an etcd restart.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A single-member etcd on loopback, killed on drop.
struct Etcd {
    child: Child,
    dir: std::path::PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
}

impl Etcd {
    fn start(dir: &std::path::Path, client: SocketAddr, peer: SocketAddr) -> Etcd {
        let child = Command::new("etcd")
            .args([
                "--name",
                "weft-test",
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://{client}"),
                "--advertise-client-urls",
                &format!("http://{client}"),
                "--listen-peer-urls",
                &format!("http://{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://{peer}"),
                "--initial-cluster",
                &format!("weft-test=http://{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server) must be installed: .ci/run installs it");
        let e = Etcd { child, dir: dir.to_owned(), client, peer };
        wait_until("etcd listens", Duration::from_secs(20), || std::net::TcpStream::connect(client).is_ok());
        e
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Plane {
    _p: Proc,
    url: String,
    /// The admin token (the planes share one signing key, so any plane's tokens work at all).
    token: std::path::PathBuf,
}

/// The mesh CA every control plane of the test shares.
fn ca_dir() -> std::path::PathBuf {
    keys().join("ca")
}

fn root() -> std::path::PathBuf {
    ca_dir().join("root-cert.pem")
}

/// The token key every control plane of the test shares, and the admin token made with it.
fn keys() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| temp_dir().join("keys")).clone()
}

impl Plane {
    fn start(etcd: &str, addr: SocketAddr) -> Plane {
        let l = addr.to_string();
        let key = keys().join("token-key");
        // (A checkpoint every 10 revisions, so that a control plane starting later loads one.)
        let p = spawn(&[
            "control-plane",
            "--store",
            "etcd",
            "--etcd-endpoints",
            etcd,
            "--etcd-prefix",
            "/mesh-a/",
            "--etcd-checkpoint-every",
            "10",
            "--listen",
            &l,
            "--token-key",
            key.to_str().unwrap(),
            // One mesh CA for all of them, as one token key: each serves its API with its
            // own certificate from it, and clients verify any of them with its root.
            "--ca-dir",
            ca_dir().to_str().unwrap(),
        ]);
        let token = keys().join("admin-token");
        wait_until("the admin token is written", Duration::from_secs(10), || token.exists());
        // Listening: the CA is made (by the first) before the next plane starts.
        wait_until("it listens", Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok());
        Plane { _p: p, url: format!("https://{addr}"), token }
    }

    fn weft(&self, args: &[&str]) -> Output {
        Command::new(weft())
            .args(args)
            .env("WEFT_SERVER", &self.url)
            .env("WEFT_CA_FILE", root())
            .env("WEFT_TOKEN_FILE", &self.token)
            .output()
            .unwrap()
    }

    /// curl with the admin token.
    fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let auth = format!("authorization: Bearer {}", std::fs::read_to_string(&self.token).unwrap().trim());
        let root = root();
        curl(&[&["-H", auth.as_str(), "--cacert", root.to_str().unwrap()], args].concat())
    }

    fn registry(&self) -> Vec<String> {
        let (_, body, _) = self.curl(&["-s", &format!("{}/v1/registry", self.url)]);
        let mut v: Vec<String> = body.split("\"address\":\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect();
        v.sort();
        v
    }

    fn history(&self) -> String {
        text(&self.weft(&["history"]))
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn two_control_planes_on_one_etcd_serve_one_mesh_and_recover_from_an_etcd_restart() {
    let etcd = Etcd::start(&temp_dir().join("etcd"), free_addr(), free_addr());
    let (cp1, cp2) = (Plane::start(&etcd.url(), free_addr()), Plane::start(&etcd.url(), free_addr()));
    let token = cp2.token.to_str().unwrap();
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &cp2.url,
        "--ca-file",
        root().to_str().unwrap(),
        "--token-file",
        token,
        "--node",
        "n2",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let p = Proxy { p, cfg: std::path::PathBuf::new() };

    // A registration through one reaches the proxy following the other.
    let a = backend("a", &[]);
    let out = cp1.weft(&["register", "--service", "ratings", "--address", &a.addr.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let took = wait_until("ratings routes via the other control plane", Duration::from_secs(10), || {
        get(p.addr(), "ratings", "/", &[]).status == 200
    });
    eprintln!("registered at cp1 → routed by a proxy of cp2 in {took:?}");

    // Writes through both at once: every one lands, with one history both agree on.
    let addrs: Vec<String> = (0..16).map(|i| format!("127.0.0.2:{}", 20000 + i)).collect();
    std::thread::scope(|s| {
        for (i, addr) in addrs.iter().enumerate() {
            let cp = if i % 2 == 0 { &cp1 } else { &cp2 };
            s.spawn(move || {
                let out = cp.weft(&["register", "--service", "bulk", "--address", addr]);
                assert!(out.status.success(), "{}", text(&out));
            });
        }
    });
    wait_until("both control planes hold all 17 endpoints", Duration::from_secs(10), || {
        cp1.registry().len() == 17 && cp2.registry().len() == 17
    });
    assert_eq!(cp1.history(), cp2.history());
    assert!(cp1.history().lines().any(|l| l.trim_start().starts_with("17 ")), "{}", cp1.history());

    // A single-use bootstrap token offered to both control planes at once gets one
    // certificate, not one from each: the count is in the shared store.
    let mine = weft_tls::SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let csr = weft_tls::WorkloadKey::generate().unwrap().csr(&mine).unwrap();
    let body = serde_json::json!({"csr": csr}).to_string();
    for _ in 0..5 {
        let out = cp1.weft(&["token", "create", "--namespace", "default", "--service-account", "reviews", "--uses", "1"]);
        assert!(out.status.success(), "{}", text(&out));
        let once = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let codes: Vec<String> = std::thread::scope(|s| {
            let tries: Vec<_> = [&cp1, &cp2]
                .map(|cp| {
                    let (once, body) = (&once, &body);
                    s.spawn(move || {
                        let auth = format!("authorization: Bearer {once}");
                        let url = format!("{}/v1/certificate", cp.url);
                        let root = root();
                        let args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", root.to_str().unwrap(), "-H", &auth];
                        curl(&[&args[..], &["--data-binary", body, &url]].concat()).1
                    })
                })
                .into_iter()
                .collect();
            tries.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, ["200", "403"], "one certificate per single-use token across control planes: {codes:?}");
    }
    assert!(cp2.history().contains("certificate for token"), "{}", cp2.history());
    let before_apply = cp1.history();

    // One apply of 300 resources (etcd allows 128 operations in a transaction; one
    // revision is two, whatever its size).
    let many: String = (0..300)
        .map(|i| format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: bulk-{i}}}\nspec:\n  hosts: [bulk-{i}.mesh]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.1.{}.{}, ports: {{http: 8080}}}}]\n", i / 200, i % 200 + 1))
        .collect();
    let f = temp_dir().join("many.yaml");
    std::fs::write(&f, many).unwrap();
    let out = cp1.weft(&["apply", "-f", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("cp2 has the 300", Duration::from_secs(10), || {
        let (_, body, _) = cp2.curl(&["-s", &format!("{}/v1/resources?kind=ServiceEntry", cp2.url)]);
        body.matches("\"name\":\"bulk-").count() == 300
    });

    // A TTL lease kept alive through cp2 stays, though it was registered through cp1.
    let ttl_addr = "127.0.0.3:9000";
    assert!(cp1.weft(&["register", "--service", "leased", "--address", ttl_addr, "--ttl", "2s"]).status.success());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let (_, code, _) = cp2.curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("{}/v1/registry/heartbeat?service=leased&address={ttl_addr}", cp2.url),
        ]);
        assert_eq!(code, "200");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(cp1.registry().contains(&ttl_addr.to_owned()), "heartbeats through cp2 kept it");
    // No more heartbeats: etcd lets the lease go and both remove it.
    wait_until("the lease runs out", Duration::from_secs(10), || {
        !cp1.registry().contains(&ttl_addr.to_owned()) && !cp2.registry().contains(&ttl_addr.to_owned())
    });
    assert!(cp1.history().contains("ttl expired"), "{}", cp1.history());

    // etcd goes away: the proxy keeps serving, writes fail with a clear error.
    let (dir, client, peer) = (etcd.dir.clone(), etcd.client, etcd.peer);
    drop(etcd);
    let mut c = Client::connect(p.addr());
    for _ in 0..100 {
        assert_eq!(c.get("ratings", "/", &[]).status, 200);
    }
    let out = cp1.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("etcd"), "{}", text(&out));

    // etcd is back: both control planes recover, and a registration through either reaches the proxy.
    let _etcd = Etcd::start(&dir, client, peer);
    let b = backend("b", &[]);
    wait_until("cp1 writes again", Duration::from_secs(20), || {
        cp1.weft(&["register", "--service", "ratings", "--address", &b.addr.to_string()]).status.success()
    });
    wait_until("the proxy of cp2 routes to b", Duration::from_secs(10), || spread(p.addr(), "ratings", 20, &[]).contains_key("b"));
    assert!(cp2.weft(&["deregister", "--service", "ratings", "--address", &a.addr.to_string()]).status.success());
    wait_until("cp1 saw the deregistration", Duration::from_secs(10), || !cp1.registry().contains(&a.addr.to_string()));
    wait_until("a is gone from the proxy", Duration::from_secs(10), || spread(p.addr(), "ratings", 20, &[]).len() == 1);
    for _ in 0..50 {
        assert_eq!(c.get("ratings", "/", &[]).status, 200);
    }

    // A new control plane on the same etcd starts with everything.
    let cp3 = Plane::start(&_etcd.url(), free_addr());
    assert_eq!(cp3.registry(), cp1.registry());
    assert_eq!(cp3.history(), cp1.history());
    assert!(cp3.history().starts_with(before_apply.trim_end()), "the history is kept whole");
    let (_, body, _) = cp3.curl(&["-s", &format!("{}/v1/resources?kind=ServiceEntry", cp3.url)]);
    assert_eq!(body.matches("\"name\":\"bulk-").count(), 300, "from the checkpoint and the records after it");
}
