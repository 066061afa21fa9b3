//! ZooKeeper as a discovery source, against a real ZooKeeper (Debian's `zookeeper`
//! package, started here with `java` on its classpath; `scripts/test` installs it): a
//! Curator instance and a Dubbo provider reach a proxy following the control plane,
//! go when their ephemeral nodes go, a malformed node is skipped and counted, a
//! `weft deregister` of ZooKeeper's endpoint is refused, and with ZooKeeper stopped the
//! proxy keeps routing the last known set.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use zookeeper_client::{Acls, Client as Zk, CreateMode};

/// Debian's ZooKeeper jar (its dependencies are on its manifest's class path).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper on a free loopback port (data in a temp dir, no admin
/// server), killed on drop.
struct ZooKeeper {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl ZooKeeper {
    fn start() -> ZooKeeper {
        assert!(
            std::path::Path::new(ZOOKEEPER_JAR).exists(),
            "ZooKeeper must be installed (Debian's zookeeper package): scripts/test installs it"
        );
        let dir = temp_dir().join("zookeeper");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        ZooKeeper::run(dir, free_addr())
    }

    /// ZooKeeper on `dir` (its data kept there) at `addr`, once it accepts connections.
    fn run(dir: std::path::PathBuf, addr: SocketAddr) -> ZooKeeper {
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxSessionTimeout=20000\n",
                dir.join("data").display(),
                addr.port()
            ),
        )
        .unwrap();
        let child = Command::new("java")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .args(["-Xmx128m", "-cp", &format!("/etc/zookeeper/conf:{ZOOKEEPER_JAR}"), "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java (ZooKeeper's JRE) must be installed");
        let zk = ZooKeeper { child, addr, dir };
        let mut ok = false;
        for _ in 0..300 {
            if std::net::TcpStream::connect(addr).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "ZooKeeper did not listen on {addr} within 30 s");
        zk
    }

    /// Stops it (kill -9); returns where to start it again.
    fn stop(self) -> (std::path::PathBuf, SocketAddr) {
        (self.dir.clone(), self.addr)
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ZooKeeper session of the test's, on its own runtime (the session's pings run in
/// the background between calls).
struct Session {
    // (The client first: it is dropped before its runtime.)
    zk: Option<Zk>,
    rt: tokio::runtime::Runtime,
}

impl Session {
    fn open(addr: SocketAddr) -> Session {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let zk = rt.block_on(Zk::connector().with_session_timeout(Duration::from_secs(2)).connect(&addr.to_string())).unwrap();
        Session { zk: Some(zk), rt }
    }

    fn zk(&self) -> &Zk {
        self.zk.as_ref().unwrap()
    }

    /// Creates `path` (and its parents, persistent) holding `data`.
    fn create(&self, path: &str, data: &[u8], mode: CreateMode) {
        let parent = &path[..path.rfind('/').unwrap()];
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        self.rt.block_on(async {
            match self.zk().mkdir(parent, &persistent).await {
                Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => panic!("mkdir {parent}: {e}"),
            }
            self.zk().create(path, data, &mode.with_acls(Acls::anyone_all())).await.unwrap();
        });
    }

    fn delete(&self, path: &str) {
        self.rt.block_on(self.zk().delete(path, None)).unwrap();
    }

    /// Ends the session: ZooKeeper removes its ephemeral nodes.
    fn close(mut self) {
        drop(self.zk.take());
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn zk_plane(zk: &ZooKeeper) -> Plane {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let p = spawn(&[
        "control-plane",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr.to_string(),
        "--zookeeper",
        &zk.addr.to_string(),
        "--zookeeper-root",
        "/services",
    ]);
    wait_until("the control plane listens", || std::net::TcpStream::connect(addr).is_ok());
    Plane { p, addr, dir }
}

fn curator_instance(name: &str, addr: SocketAddr) -> String {
    format!(
        r#"{{"name":"{name}","id":"6b2c-1","address":"{}","port":{},"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[]}}}}"#,
        addr.ip(),
        addr.port()
    )
}

#[test]
fn zookeeper_services_reach_proxies_and_stay_while_zookeeper_is_away() {
    let zk = ZooKeeper::start();
    let cp = zk_plane(&zk);
    let p = follower(&cp, "node-1");
    let (reviews, demo) = (backend("reviews", &[]), backend("demo", &[]));
    wait_until("connected to ZooKeeper", || cp_metric(&cp, "weft_zookeeper_connected") == 1.0);

    // A Curator instance (ephemeral, as Curator registers them) → routed.
    let owner = Session::open(zk.addr);
    owner.create("/services/reviews/6b2c-1", curator_instance("reviews", reviews.addr).as_bytes(), CreateMode::Ephemeral);
    let took = wait_until("reviews routes", || get(p.addr(), "reviews", "/", &[]).backend() == "reviews");
    eprintln!("ZooKeeper node → routed in {took:?}");
    let listed = plane_raw(&cp, "GET", "/v1/registry", b"").1;
    assert!(listed.contains(&reviews.addr.to_string()) && listed.contains(r#""weft.io/source":"zookeeper""#), "{listed}");
    // The CLI names where each endpoint and service is known from.
    let table = text(&cp.weft(&["get", "endpoints"]));
    let row = table.lines().find(|l| l.contains(&reviews.addr.to_string())).unwrap_or_default().to_owned();
    assert!(row.trim_end().ends_with("zookeeper"), "{table}");
    let table = text(&cp.weft(&["get", "services"]));
    assert!(table.lines().any(|l| l.starts_with("reviews") && l.contains("zookeeper")), "{table}");

    // ZooKeeper's endpoint is not the CLI's to replace or remove.
    let out = cp.weft(&["register", "--service", "reviews", "--address", &reviews.addr.to_string(), "--label", "v=cli"]);
    assert!(!out.status.success() && text(&out).contains("ZooKeeper"), "{}", text(&out));
    let out = cp.weft(&["deregister", "--service", "reviews", "--address", &reviews.addr.to_string()]);
    assert!(!out.status.success() && text(&out).contains("ZooKeeper"), "{}", text(&out));

    // The owner's session ends: its ephemeral node goes, and the route with it.
    owner.close();
    wait_until("reviews has no route", || matches!(get(p.addr(), "reviews", "/", &[]).status, 404 | 503));

    // A Dubbo provider URL → routed by its interface's name.
    let tools = Session::open(zk.addr);
    let url = format!(
        "dubbo%3A%2F%2F{}%3A{}%2Fcom.foo.DemoService%3Fapplication%3Ddemo%26interface%3Dcom.foo.DemoService%26version%3D1.0.0",
        demo.addr.ip(),
        demo.addr.port()
    );
    // (Persistent, so that it outlives the ZooKeeper restart below; ephemeral nodes are
    // the Curator instance's part.)
    tools.create(&format!("/dubbo/com.foo.DemoService/providers/{url}"), b"", CreateMode::Persistent);
    wait_until("the Dubbo provider routes", || get(p.addr(), "com-foo-demoservice", "/", &[]).backend() == "demo");

    // Malformed nodes are skipped and counted; what is stored stays.
    let skipped = cp_metric(&cp, "weft_zookeeper_nodes_skipped_total");
    tools.create("/services/broken/1", b"{not json", CreateMode::Persistent);
    tools.create("/services/reviews/bad-port", br#"{"address":"127.0.0.1","port":70000}"#, CreateMode::Persistent);
    wait_until("the bad nodes are counted", || cp_metric(&cp, "weft_zookeeper_nodes_skipped_total") >= skipped + 2.0);
    assert_eq!(get(p.addr(), "com-foo-demoservice", "/", &[]).backend(), "demo");
    tools.delete("/services/reviews/bad-port");

    // ZooKeeper stops: the proxy keeps routing the last known set, and the control
    // plane says ZooKeeper is away.
    tools.create("/services/reviews/6b2c-2", curator_instance("reviews", reviews.addr).as_bytes(), CreateMode::Persistent);
    wait_until("reviews routes again", || get(p.addr(), "reviews", "/", &[]).backend() == "reviews");
    // (Rescans since: a bad node still there is not counted again.)
    assert_eq!(cp_metric(&cp, "weft_zookeeper_nodes_skipped_total"), skipped + 2.0);
    drop(tools);
    let scans = cp_metric(&cp, "weft_zookeeper_scans_total");
    let (dir, addr) = zk.stop();
    wait_until("ZooKeeper is away", || cp_metric(&cp, "weft_zookeeper_connected") == 0.0);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..20 {
        assert_eq!(get(p.addr(), "reviews", "/", &[]).backend(), "reviews");
        assert_eq!(get(p.addr(), "com-foo-demoservice", "/", &[]).backend(), "demo");
    }
    assert!(cp.p.log_text().contains("serving the last known endpoints"), "{}", cp.p.log_text());

    // ZooKeeper back (its data kept): the control plane reconnects, rescans, and
    // follows changes again.
    let zk = ZooKeeper::run(dir, addr);
    let tools = Session::open(zk.addr);
    wait_until("connected again", || cp_metric(&cp, "weft_zookeeper_connected") == 1.0);
    // After the rescan that follows the reconnection: only a watch can see this delete.
    // (zookeeper-client 0.11 does not register persistent watches again on a reconnection:
    // without the control plane's own, the route stayed — 3 CI runs in 4, when the delete
    // came after that rescan.)
    wait_until("rescanned", || cp_metric(&cp, "weft_zookeeper_scans_total") > scans);
    tools.delete("/services/reviews/6b2c-2");
    let gone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("reviews has no route again", || matches!(get(p.addr(), "reviews", "/", &[]).status, 404 | 503))
    }));
    if gone.is_err() {
        panic!(
            "reviews still routed after its node was deleted\nregistry: {}\n--- control plane\n{}\n--- proxy\n{}\n--- proxy /clusters\n{}",
            plane_raw(&cp, "GET", "/v1/registry", b"").1,
            cp.p.log_text(),
            p.p.log_text(),
            p.admin("/clusters")
        );
    }
    assert_eq!(get(p.addr(), "com-foo-demoservice", "/", &[]).backend(), "demo", "{}", cp.p.log_text());
    // Rescanned after the reconnection: the bad node still there is not counted (nor
    // logged) again. (This outage is shorter than the session timeout, so the session
    // survived it; the skipped set is now also kept across sessions, untested here: an
    // expiry takes over 10 s.)
    assert_eq!(cp_metric(&cp, "weft_zookeeper_nodes_skipped_total"), skipped + 2.0);
}
