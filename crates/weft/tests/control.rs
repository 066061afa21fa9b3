//! The control plane through its real CLI: apply, get, delete, history, rollback,
//! register with TTLs, durability across `kill -9`, and bad input.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, ports: {http: 9001}}]\n";

fn dr(lb: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n")
}

#[test]
fn apply_get_delete_with_validation_and_history() {
    let cp = plane();
    let out = cp.apply("mesh.yaml", &(SE.to_owned() + &dr("ROUND_ROBIN")));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revision 1 (2 changed)"), "{}", text(&out));
    let got = cp.weft(&["get", "dr", "reviews", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["spec"]["trafficPolicy"]["loadBalancer"]["simple"], "ROUND_ROBIN");
    let yaml = text(&cp.weft(&["get", "DestinationRule", "-o", "yaml"]));
    assert!(yaml.contains("simple: ROUND_ROBIN"), "{yaml}");

    // One invalid document rejects the whole file, with the field path; nothing changes.
    let bad = dr("LEAST_REQUEST") + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}, weight: -5}]}]\n";
    let out = cp.apply("bad.yaml", &bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("bad.yaml: VirtualService broken: spec.http[0].route[0].weight"), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&cp.weft(&["get", "dr", "reviews", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        v["spec"]["trafficPolicy"]["loadBalancer"]["simple"], "ROUND_ROBIN",
        "the valid document of the rejected file was not applied"
    );
    // A reference the compiler rejects (a DestinationRule subset nobody declares is fine; a RateLimit on an unknown host is not).
    let out = cp.apply("rl.yaml", "apiVersion: policy.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: x}\nspec:\n  host: nowhere\n  tokenBucket: {maxTokens: 1, fillInterval: 1s}\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("spec.host: no ServiceEntry or VirtualService serves host \"nowhere.default.svc.cluster.local\""),
        "{}",
        text(&out)
    );
    assert_eq!(cp.history_len(), 1);

    // Applying the same again changes nothing; a change is a new revision.
    assert!(text(&cp.apply("mesh.yaml", &(SE.to_owned() + &dr("ROUND_ROBIN")))).contains("unchanged (revision 1)"));
    assert!(text(&cp.apply("dr.yaml", &dr("RANDOM"))).contains("revision 2 (1 changed)"));

    // Deleting the ServiceEntry the DestinationRule's host needs is fine (Istio allows it); an unknown one is 404.
    let out = cp.weft(&["delete", "vs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("VirtualService nope not found"), "{}", text(&out));
    let out = cp.weft(&["delete", "dr", "reviews"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(cp.weft(&["get", "dr", "reviews"]).status.code(), Some(1));
    let out = cp.weft(&["get", "widgets"]);
    assert!(text(&out).contains("unknown kind \"widgets\""), "{}", text(&out));

    let h = text(&cp.weft(&["history"]));
    assert!(h.contains("apply") && h.contains("delete DestinationRule/reviews"), "{h}");
    assert_eq!(cp.history_len(), 3);

    // Rollback to revision 1: the ROUND_ROBIN rule is back, as revision 4.
    let out = cp.weft(&["rollback", "1"]);
    assert!(text(&out).contains("revision 4"), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&cp.weft(&["get", "dr", "reviews", "-o", "json"]).stdout).unwrap();
    assert_eq!(v["spec"]["trafficPolicy"]["loadBalancer"]["simple"], "ROUND_ROBIN");
    assert!(text(&cp.weft(&["rollback", "99"])).contains("revision 99 does not exist"));
}

#[test]
fn state_survives_kill_9_and_registrations_expire_without_heartbeats() {
    let cp = plane();
    assert!(cp.apply("mesh.yaml", SE).status.success());
    let out = cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9002", "--label", "version=v1", "--locality", "r1/z1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9003", "--ttl", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    // The mesh a proxy gets has a ServiceEntry for the registered service.
    let mesh = ureq(&cp, "/v1/mesh");
    assert!(
        mesh.contains("\"hosts\":[\"ratings.default.svc.cluster.local\"]")
            && mesh.contains("9002")
            && mesh.contains("\"locality\":\"r1/z1\""),
        "{mesh}"
    );

    // The TTL runs out: the endpoint goes (a revision of its own).
    let start = Instant::now();
    while ureq(&cp, "/v1/mesh").contains("9003") {
        assert!(start.elapsed() < Duration::from_secs(5), "the 1 s TTL never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text(&cp.weft(&["history"])).contains("ttl expired"));
    // Heartbeats keep one alive.
    assert!(cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9004", "--ttl", "600ms"]).status.success());
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(post(&cp, "/v1/registry/heartbeat?service=ratings&address=127.0.0.1:9004").0, 200);
    }
    assert!(ureq(&cp, "/v1/mesh").contains("9004"));

    // kill -9, restart on the same data: every resource, endpoint and revision is back.
    let before = text(&cp.weft(&["history"]));
    let revision_before = before.lines().count();
    cp.p.signal("KILL");
    std::thread::sleep(Duration::from_millis(100));
    let addr = free_addr();
    let cp2 = Plane { p: start_plane(&cp.dir, addr), addr, dir: cp.dir.clone() };
    assert_eq!(text(&cp2.weft(&["history"])).lines().count(), revision_before);
    assert!(text(&cp2.weft(&["get", "se", "reviews", "-o", "yaml"])).contains("9001"));
    let mesh = ureq(&cp2, "/v1/mesh");
    assert!(mesh.contains("9002") && mesh.contains("9004"), "{mesh}");
    let out = cp2.weft(&["deregister", "--service", "ratings", "--address", "127.0.0.1:9002"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!ureq(&cp2, "/v1/mesh").contains("9002"));
}

#[test]
fn bad_input_gets_a_clear_error_and_the_control_plane_keeps_serving() {
    let cp = plane();
    // Garbage instead of JSON.
    let (code, body) = post_body(&cp, "/v1/apply", b"\x00\xffnot json at all");
    assert_eq!(code, 400);
    assert!(body.contains("apply request: expected value at line 1 column 1"), "{body}");
    // A huge resource: over the 8 MiB limit.
    let huge = vec![b'x'; 9 << 20];
    let (code, body) = post_body(&cp, "/v1/apply", &huge);
    assert_eq!(code, 413, "{body}");
    // A name with illegal characters, a bad address.
    let out = cp.apply("bad-name.yaml", &SE.replace("name: reviews", "name: \"re views/../x\""));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("metadata.name: \"re views/../x\" is not a DNS-1123 subdomain"), "{}", text(&out));
    let out = cp.weft(&["register", "--service", "bad service!", "--address", "127.0.0.1:1"]);
    assert!(text(&out).contains("service: \"bad service!\" is not a DNS-1123 subdomain"), "{}", text(&out));
    let out = cp.weft(&["register", "--service", "ok", "--address", "127.0.0.1"]);
    assert!(text(&out).contains("address: \"127.0.0.1\" is not host:port"), "{}", text(&out));
    // A client that sends half a request and goes away.
    {
        use std::io::Write;
        let mut s = plane_tls(&cp);
        s.write_all(b"POST /v1/apply HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"files\"").unwrap();
    }
    // A fake proxy streaming garbage: 400 or a closed connection, nothing else.
    {
        let junk: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let t = plane_send(&cp, &junk);
        assert!(t.is_empty() || t.starts_with("HTTP/1.1 400"), "{t}");
    }
    // Still serving, nothing stored.
    assert!(cp.apply("mesh.yaml", SE).status.success());
    assert_eq!(cp.history_len(), 1);
    // Watches that are not watch requests: 400 naming what is wrong.
    for (junk, want) in [
        (&b"node=junk&since=abc&wait=-5&nonce=999&ack=zzz"[..], "watch request: expected"),
        (br#"{"node":"junk","since":-1}"#, "watch request: invalid value: integer `-1`"),
        (br#"{"node":"ju\nnk"}"#, "control characters"),
    ] {
        let (code, body) = post_body(&cp, "/v1/watch", junk);
        assert_eq!(code, 400, "{body}");
        assert!(body.contains(want), "{body}");
    }
    // The old query-string watch is gone, clearly.
    assert_eq!(plane_raw(&cp, "GET", "/v1/watch?node=junk&since=0", b"").0, 404);
    // A watch from scratch: the whole mesh; an ACK naming a nonce never sent is ignored.
    let (code, body) = post_body(&cp, "/v1/watch", br#"{"node":"junk","since":0}"#);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\n\"ServiceEntry/default/reviews\":{"), "{body}");
    let (code, _) = post_body(&cp, "/v1/watch", br#"{"node":"junk","since":0,"last":{"ack":{"nonce":999,"revision":1}}}"#);
    assert_eq!(code, 200);
    let st = text(&cp.weft(&["status"]));
    let line = st.lines().find(|l| l.starts_with("junk")).unwrap_or_default().to_owned();
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "a stale nonce's ACK does not count: {st}");
    // Nothing listening: a clear error.
    let out = Command::new(weft()).args(["get", "se", "--server", &format!("http://{}", free_addr())]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot reach the control plane"), "{}", text(&out));
}

fn ureq(cp: &Plane, path: &str) -> String {
    plane_raw(cp, "GET", path, b"").1
}

fn post(cp: &Plane, path: &str) -> (u16, String) {
    plane_raw(cp, "POST", path, b"")
}

fn post_body(cp: &Plane, path: &str, body: &[u8]) -> (u16, String) {
    plane_raw(cp, "POST", path, body)
}

#[test]
fn proxies_follow_registrations_and_applies_and_survive_the_control_plane_going_away() {
    let cp = plane();
    let a = backend("a", &[]);
    let se = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n", a.addr.port());
    assert!(cp.apply("mesh.yaml", &se).status.success());
    // (The whole mesh: this is about what a change pushes to a proxy holding it.)
    let p = follower_with(&cp, "node-1", &["--discovery", "eager"]);
    assert_eq!(get(p.addr(), "reviews", "/", &[]).backend(), "a");

    // A registration reaches the proxy: a new service routes.
    let (b1, b2) = (backend("b1", &[]), backend("b2", &[]));
    assert_eq!(get(p.addr(), "ratings", "/", &[]).status, 404);
    for b in [&b1, &b2] {
        let out = cp.weft(&["register", "--service", "ratings", "--address", &b.addr.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let took = wait_until("ratings routes to both", || {
        get(p.addr(), "ratings", "/", &[]).status == 200 && spread(p.addr(), "ratings", 20, &[]).len() == 2
    });
    eprintln!("registration → routed in {took:?}");
    // Registrations arrive as deltas: what changed, not the mesh again.
    assert_eq!(p.metric("weft_control_plane_full_updates_total", &[]), 1.0, "only the first answer is whole");
    assert!(p.metric("weft_control_plane_deltas_total", &[]) >= 1.0);
    let bytes = p.metric("weft_control_plane_received_bytes_total", &[]);
    let deltas = p.metric("weft_control_plane_deltas_total", &[]);
    assert!(cp.weft(&["register", "--service", "other", "--address", "127.0.0.1:9"]).status.success());
    wait_until("one more delta", || p.metric("weft_control_plane_deltas_total", &[]) > deltas);
    let delta_bytes = p.metric("weft_control_plane_received_bytes_total", &[]) - bytes;
    assert!(delta_bytes < 600.0, "a one-endpoint delta carries one small document ({delta_bytes} bytes)");

    // A DestinationRule changes the balancing: one user, one endpoint.
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n";
    assert!(cp.apply("dr.yaml", dr).status.success());
    wait_until("sticky by x-user", || spread(p.addr(), "ratings", 20, &[("x-user", "alice")]).len() == 1);

    // weft status: the proxy, at the latest revision.
    let latest = cp.history_len();
    let st = text(&cp.weft(&["status"]));
    wait_until("status shows node-1 caught up", || {
        let st = text(&cp.weft(&["status"]));
        st.lines().any(|l| {
            l.starts_with("node-1") && l.split_whitespace().nth(1) == Some(&latest.to_string()) && l.split_whitespace().nth(2) == Some("0")
        })
    });
    assert!(st.contains("node-1"), "{st}");
    assert_eq!(p.metric("weft_control_plane_revision", &[]), latest as f64);

    // Graceful leave: deregister, then stop — no failed request in between.
    let mut c = Client::connect(p.addr());
    assert!(cp.weft(&["deregister", "--service", "ratings", "--address", &b2.addr.to_string()]).status.success());
    wait_until("b2 gone", || !spread(p.addr(), "ratings", 20, &[]).contains_key("b2"));
    drop(b2);
    for _ in 0..50 {
        assert_eq!(c.get("ratings", "/", &[]).status, 200);
    }

    // kill -9 the control plane under traffic: the proxy keeps serving; restarted, it resyncs.
    cp.p.signal("KILL");
    for _ in 0..200 {
        assert_eq!(c.get("reviews", "/", &[]).status, 200);
        assert_eq!(c.get("ratings", "/", &[]).status, 200);
    }
    let cp2 = Plane { p: start_plane(&cp.dir, cp.addr), addr: cp.addr, dir: cp.dir.clone() };
    let out = cp2.weft(&["register", "--service", "ratings", "--address", &b1.addr.to_string(), "--label", "v=2"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("node-1 back at the restarted control plane", || text(&cp2.weft(&["status"])).contains("node-1"));
    let m = ureq(&cp2, "/metrics");
    assert!(m.contains("weft_control_push_latency_ms_count"), "{m}");
}

#[test]
fn a_mesh_the_proxy_cannot_compile_is_nacked_with_the_reason_and_the_last_good_one_stays() {
    let b = backend("good", &[]);
    let addr = free_addr();
    let log = temp_dir().join("acks.log");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_control_plane.py");
    let mut fake = Command::new("python3")
        .args([script, &addr.port().to_string(), &b.addr.port().to_string(), log.to_str().unwrap()])
        .spawn()
        .expect("python3");
    wait_until("the fake control plane listens", || std::net::TcpStream::connect(addr).is_ok());
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &format!("http://{addr}"),
        "--node",
        "n1",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let p = Proxy { p, cfg: std::path::PathBuf::new() };
    let acks = || std::fs::read_to_string(&log).unwrap_or_default();
    let logged = || -> Vec<serde_json::Value> { acks().lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    let nacks = || -> Vec<serde_json::Value> { logged().into_iter().filter(|w| !w["last"]["nack"].is_null()).collect() };
    wait_until("two NACKs", || nacks().iter().filter(|w| w["last"]["nack"]["revision"] == 3).count() >= 2);
    let all = logged();
    let nacks = nacks();
    // (Each outcome rides on the proxy's next watch, naming the answer's nonce.)
    let first = &all[0];
    assert_eq!(
        (first["path"].as_str(), first["node"].as_str(), first["since"].as_u64()),
        (Some("/v1/watch"), Some("n1"), Some(1)),
        "{all:?}"
    );
    assert_eq!(first["last"]["ack"], serde_json::json!({"nonce": 1, "revision": 1}), "the fetch at start is ACKed by its nonce: {all:?}");
    let (n0, n1) = (&nacks[0]["last"]["nack"], &nacks[1]["last"]["nack"]);
    assert_eq!((n0["nonce"].as_u64(), n0["revision"].as_u64()), (Some(2), Some(2)), "{nacks:?}");
    assert!(n0["reason"].as_str().unwrap_or_default().contains("weight"), "the reason names the field: {nacks:?}");
    assert_eq!((n1["nonce"].as_u64(), n1["revision"].as_u64()), (Some(3), Some(3)), "{nacks:?}");
    assert!(n1["reason"].as_str().unwrap_or_default().contains("spec.hosts"), "{nacks:?}");
    // An answer that is not one (garbage bytes) is not NACKed (it has no nonce): the
    // proxy logs it, backs off and asks again with its last outcome.
    wait_until("the garbage answers are logged", || p.p.log_text().contains("the control plane's answer: mesh answer:"));
    // Still serving revision 1.
    for _ in 0..20 {
        assert_eq!(get(p.addr(), "reviews", "/", &[]).backend(), "good");
    }
    assert_eq!(p.metric("weft_control_plane_nacks_total", &[]), 2.0);
    assert_eq!(p.metric("weft_control_plane_revision", &[]), 1.0);
    let _ = fake.kill();
    let _ = fake.wait();
}

#[test]
fn a_sidecar_scopes_what_a_proxy_receives_to_its_egress_hosts() {
    let cp = plane();
    let (a, b, c) = (backend("a", &[]), backend("b", &[]), backend("c", &[]));
    let se = |host: &str, addr: SocketAddr| {
        format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n", addr.port())
    };
    // Requests for `a` with `x-to: c` go to service c: a scoped proxy gets c too.
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - match: [{headers: {x-to: {exact: c}}}]\n    route: [{destination: {host: c}}]\n  - route: [{destination: {host: a}}]\n";
    let sidecar = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress: [{hosts: [\"./a\"]}]\n";
    let out = cp.apply("mesh.yaml", &(se("a", a.addr) + &se("b", b.addr) + &se("c", c.addr) + vs + sidecar));
    assert!(out.status.success(), "{}", text(&out));

    let scoped = follower(&cp, "in-default");
    assert_eq!(get(scoped.addr(), "a", "/", &[]).backend(), "a");
    let r = get(scoped.addr(), "a", "/", &[("x-to", "c")]);
    assert_eq!(r.backend(), "c", "{} {}", r.status, r.text());
    let r = get(scoped.addr(), "b", "/", &[]);
    assert_eq!(r.status, 404, "b is outside the Sidecar's egress: {}", r.text());
    let dump: serde_json::Value = serde_json::from_str(&scoped.admin("/config_dump")).unwrap();
    let hosts = dump.to_string();
    assert!(!hosts.contains("\"b\""), "the scoped proxy holds nothing of b");

    // A proxy in another namespace (no Sidecar there, none in the root namespace) gets everything.
    let token = cp.admin_token_file();
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &cp.url(),
        "--ca-file",
        cp.ca_file().to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--node",
        "elsewhere",
        "--namespace",
        "other",
        "--listen",
        "127.0.0.1:0",
    ]);
    let other = Proxy { p, cfg: std::path::PathBuf::new() };
    assert_eq!(get(other.addr(), "b", "/", &[]).backend(), "b");

    // A Sidecar with a host that is not namespace/host is refused at apply.
    let bad = sidecar.replace("./a", "a");
    let out = cp.apply("bad-sidecar.yaml", &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("spec.egress[0].hosts[0]: \"a\" is not namespace/host"), "{}", text(&out));
}

/// A proxy's first ACK: the mesh it fetches at start is ACKed on its first watch (by
/// the fetch's nonce), so `weft status` shows it current without any further change.
#[test]
fn a_fresh_proxy_is_acked_at_the_current_revision_without_another_apply() {
    let cp = plane();
    let a = backend("a", &[]);
    let se = SE.replace("9001", &a.addr.port().to_string());
    assert!(cp.apply("mesh.yaml", &(se + &dr("ROUND_ROBIN"))).status.success());
    assert!(cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9002"]).status.success());
    let latest = cp.history_len();
    let p = follower(&cp, "fresh-1");
    assert_eq!(get(p.addr(), "reviews", "/", &[]).backend(), "a");
    let line = || text(&cp.weft(&["status"])).lines().find(|l| l.starts_with("fresh-1 ")).map(str::to_owned).unwrap_or_default();
    wait_until("weft status shows fresh-1 ACKed at the latest revision", || {
        let l = line();
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&latest.to_string().as_str()) && cols.get(2) == Some(&"0")
    });
    assert_eq!(cp.history_len(), latest, "nothing was applied meanwhile");
    assert!(line().contains("yes"), "and it is watching: {}", line());
}

/// The old line framing (`--- # KEY`, `# remove KEY`) let a namespace holding a
/// newline and `# remove ServiceEntry/default/x` make every following proxy drop `x`.
/// Such names are refused at apply (naming the field), and the proxies keep `x`.
#[test]
fn a_namespace_or_name_holding_framing_text_is_refused_and_proxies_keep_routing() {
    let cp = plane();
    let x = backend("x", &[]);
    let se = |name: &str, ns: &str, port: u16| {
        format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n")
    };
    assert!(cp.apply("x.yaml", &se("x", "default", x.addr.port())).status.success());
    let p = follower(&cp, "victim");
    assert_eq!(get(p.addr(), "x", "/", &[]).backend(), "x");
    let before = cp.history_len();

    let evil = "\"evil\\n# remove ServiceEntry/default/x\\n--- # ServiceEntry/default/y\"";
    let out = cp.apply("evil-ns.yaml", &se("evil", evil, 9));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("ServiceEntry evil: metadata.namespace: \"evil\\n# remove") && text(&out).contains("is not a DNS-1123 label"),
        "{}",
        text(&out)
    );
    let out = cp.apply("evil-name.yaml", &se(evil, "default", 9));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("metadata.name: \"evil\\n# remove"), "{}", text(&out));
    let out = cp.weft(&["register", "--service", "ok", "--address", "127.0.0.1\n# remove ServiceEntry/default/x:80"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("address: \"127.0.0.1\\n# remove ServiceEntry/default/x:80\": \"127.0.0.1\\n# remove ServiceEntry/default/x\" is neither an IP address nor a DNS name"), "{}", text(&out));
    assert_eq!(cp.history_len(), before, "nothing was stored");

    // A change the proxy does get (a delta), then x still routes; a new proxy has it too.
    let other = backend("other", &[]);
    assert!(cp.weft(&["register", "--service", "other", "--address", &other.addr.to_string()]).status.success());
    wait_until("the delta reached the proxy", || get(p.addr(), "other", "/", &[]).status == 200);
    assert_eq!(get(p.addr(), "x", "/", &[]).backend(), "x");
    let q = follower(&cp, "newcomer");
    assert_eq!(get(q.addr(), "x", "/", &[]).backend(), "x");
}

#[test]
fn a_sidecar_scope_takes_in_rules_written_with_short_names() {
    // Kubernetes-style services, a VirtualService and DestinationRule naming them short
    // (bookinfo's way), a Sidecar naming the FQDN: the scoped proxy gets all three.
    let cp = plane();
    let (v1, v2, other) = (backend("v1", &[]), backend("v2", &[]), backend("other", &[]));
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ratings, namespace: default}}\nspec:\n  hosts: [ratings.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
        v1.addr.port(),
        v2.addr.port(),
        other.addr.port()
    );
    let rules = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  subsets: [{name: v2, labels: {version: v2}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v2}}]}]\n";
    let sidecar = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress: [{hosts: [\"./reviews.default.svc.cluster.local\"]}]\n";
    let out = cp.apply("mesh.yaml", &(se + rules + sidecar));
    assert!(out.status.success(), "{}", text(&out));
    let scoped = follower(&cp, "in-default");
    wait_until("the scoped proxy routes reviews", || get(scoped.addr(), "reviews", "/", &[]).status == 200);
    for _ in 0..10 {
        assert_eq!(get(scoped.addr(), "reviews", "/", &[]).backend(), "v2", "the VirtualService and DestinationRule came with it");
    }
    assert_eq!(get(scoped.addr(), "ratings", "/", &[]).status, 404, "ratings is outside the scope");
}

/// A proxy gone in the middle of its watch is no longer listed as connected (it was
/// forever: its dropped watch never said it ended, and `weft run` then waited its whole
/// `--ack-timeout` for a proxy that did not exist).
#[test]
fn a_watch_cut_off_ends_the_proxys_connection() {
    use std::io::Write;
    let cp = plane();
    let token = cp.admin_token();
    let revision: u64 =
        serde_json::from_str::<serde_json::Value>(&plane_raw(&cp, "GET", "/v1/status", b"").1).unwrap()["revision"].as_u64().unwrap();
    let body = format!(r#"{{"node":"ghost","since":{revision},"waitMs":300000}}"#);
    let mut s = plane_tls(&cp);
    write!(
        s,
        "POST /v1/watch HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    let connected = || {
        let status: serde_json::Value = serde_json::from_str(&plane_raw(&cp, "GET", "/v1/status", b"").1).unwrap();
        status["items"].as_array().unwrap().iter().find(|p| p["node"] == "ghost").map(|p| p["connected"] == true)
    };
    wait_until("the watch seen", || connected() == Some(true));
    drop(s);
    wait_until("the proxy no longer connected", || connected() == Some(false));
}
