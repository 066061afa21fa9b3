//! The control plane's API lets in only whom it should: every call without valid
//! credentials is refused (401), a role gets what it allows and no more (403), a
//! workload registers only its own service and speaks only for its own proxies, and the
//! history names the authenticated caller, never what the client says it is.

mod common;

use common::*;

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]\n";

/// Every endpoint of the API, with a body that would be accepted.
fn calls() -> Vec<(&'static str, &'static str, &'static [u8])> {
    vec![
        ("POST", "/v1/apply", br#"{"files":[{"name":"x","text":"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: evil}\nspec: {hosts: [evil], resolution: STATIC, ports: [{number: 80, name: http, protocol: HTTP}], endpoints: [{address: 10.6.6.6}]}\n"}]}"#),
        ("GET", "/v1/resources", b""),
        ("DELETE", "/v1/resources?kind=ServiceEntry&name=reviews", b""),
        ("GET", "/v1/history", b""),
        ("POST", "/v1/rollback?to=1", b""),
        ("POST", "/v1/registry", br#"{"service":"reviews","address":"10.6.6.6:80"}"#),
        ("POST", "/v1/registry/heartbeat?service=reviews&address=127.0.0.1:9", b""),
        ("DELETE", "/v1/registry?service=reviews&address=127.0.0.1:9", b""),
        ("GET", "/v1/registry", b""),
        ("GET", "/v1/endpoints", b""),
        ("GET", "/v1/mesh", b""),
        ("POST", "/v1/mesh", br#"{"node":"n"}"#),
        ("POST", "/v1/watch", br#"{"node":"n","since":0,"wait_ms":1}"#),
        ("POST", "/v1/ack", br#"{"node":"n","revision":1}"#),
        ("GET", "/v1/status", b""),
        ("POST", "/v1/tokens", br#"{"role":"admin"}"#),
        ("GET", "/metrics", b""),
    ]
}

/// `weft token create ARGS` as the admin, written to a file; (file, token).
fn token(cp: &Plane, args: &[&str]) -> (std::path::PathBuf, String) {
    let out = cp.weft(&[&["token", "create"], args].concat());
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f = temp_dir().join(format!("token-{}", args.join("-")));
    std::fs::write(&f, &t).unwrap();
    (f, t)
}

#[test]
fn every_api_call_without_valid_credentials_is_refused_and_changes_nothing() {
    let cp = plane();
    registered_reviews(&cp);
    let before = (plane_raw(&cp, "GET", "/v1/history", b"").1, plane_raw(&cp, "GET", "/v1/registry", b"").1);
    let admin = cp.admin_token();
    let (body, tag) = admin.rsplit_once('.').unwrap();
    let mut flipped = tag.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let wrong_tag = format!("{body}.{}", String::from_utf8(flipped).unwrap());
    let huge = "A".repeat(60 << 10);
    for (method, path, payload) in calls() {
        for (what, token) in
            [("none", None), ("garbage", Some("hello")), ("altered", Some(wrong_tag.as_str())), ("huge", Some(huge.as_str()))]
        {
            let (code, answer) = plane_raw_as(&cp, token, method, path, payload);
            assert!(code == 401 || (what == "huge" && code == 431), "{method} {path} with {what} token: {code} {answer}");
            if code == 401 {
                assert!(answer.contains("token") || answer.contains("authentication required"), "{answer}");
            }
        }
    }
    let after = (plane_raw(&cp, "GET", "/v1/history", b"").1, plane_raw(&cp, "GET", "/v1/registry", b"").1);
    assert_eq!(before, after, "nothing stored, nothing removed");
    let metrics = plane_raw(&cp, "GET", "/metrics", b"").1;
    assert!(metric_sum(&metrics, "weft_control_auth_refused_total", &["reason=\"no_token\""]) >= calls().len() as f64, "{metrics}");
    assert!(metric_sum(&metrics, "weft_control_auth_refused_total", &["reason=\"bad_token\""]) >= 2.0 * calls().len() as f64);
    // A token file that never ends is read no further than a token could be.
    let out = cp.weft_as(std::path::Path::new("/dev/zero"), &["history"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("the token has characters no token has"), "{}", text(&out));
    // The CLI without a token says what to do.
    let out = cp.weft_as(std::path::Path::new("/dev/null/none"), &["history"]);
    assert!(!out.status.success());
    let out = std::process::Command::new(weft())
        .args(["history"])
        .env("WEFT_SERVER", cp.url())
        .env("WEFT_CA_FILE", cp.ca_file())
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("authentication required"), "{}", text(&out));
}

fn registered_reviews(cp: &Plane) {
    assert!(cp.apply("mesh.yaml", SE).status.success());
    assert!(cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:7"]).status.success());
}

#[test]
fn a_role_gets_what_it_allows_and_the_history_names_the_caller() {
    let cp = plane();
    let (read, _) = token(&cp, &["--role", "read"]);
    let (write, write_token) = token(&cp, &["--role", "write"]);
    let f = temp_dir().join("mesh.yaml");
    std::fs::write(&f, SE).unwrap();
    let f = f.to_str().unwrap();
    // read: sees, cannot change.
    let out = cp.weft_as(&read, &["apply", "-f", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("a read token may not do this (needs a write token)"), "{}", text(&out));
    assert!(cp.weft_as(&read, &["get", "se"]).status.success());
    assert!(!cp.weft_as(&read, &["register", "--service", "x", "--address", "127.0.0.1:1"]).status.success());
    // write: changes, cannot make tokens.
    let applied = cp.weft_as(&write, &["apply", "-f", f]);
    assert!(applied.status.success(), "{}", text(&applied));
    // (Token uses are stored as revisions of their own when flushed, so the apply's
    // revision is read, not assumed: a flush before it made it 2 in one run.)
    let applied_rev: u64 = text(&applied)
        .split("revision ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the apply's revision in {}", text(&applied)));
    let out = cp.weft_as(&write, &["token", "create", "--role", "admin"]);
    assert!(text(&out).contains("a write token may not do this (needs an admin token)"), "{}", text(&out));
    // The history names the token, whatever the client claims to be.
    let (code, _) = plane_raw_as(&cp, Some(&write_token), "POST", &format!("/v1/rollback?to={applied_rev}"), b"");
    assert_eq!(code, 200);
    let head = format!("DELETE /v1/resources?kind=ServiceEntry&name=reviews HTTP/1.1\r\nhost: cp\r\nconnection: close\r\nx-weft-client: alice@trusted\r\nauthorization: Bearer {write_token}\r\n\r\n");
    let out = plane_send(&cp, head.as_bytes());
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let history = text(&cp.weft(&["history"]));
    assert!(!history.contains("alice"), "{history}");
    assert!(history.lines().filter(|l| l.contains("write token ")).count() == 2, "{history}");
    // Hostile token requests: both a role and a workload, an unknown role, a ttl past ten years.
    for body in [
        &br#"{"role":"admin","namespace":"a","service_account":"b"}"#[..],
        br#"{"role":"root"}"#,
        br#"{"role":"read","ttl_ms":999999999999999}"#,
        br#"{}"#,
    ] {
        let (code, answer) = plane_raw(&cp, "POST", "/v1/tokens", body);
        assert_eq!(code, 400, "{} → {answer}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_workload_registers_only_its_own_service_and_speaks_only_for_its_own_proxies() {
    let cp = plane();
    registered_reviews(&cp);
    let (reviews_file, reviews) = token(&cp, &["--namespace", "default", "--service-account", "reviews"]);
    let (_, evil) = token(&cp, &["--namespace", "default", "--service-account", "evil"]);
    // Its own service: yes.
    let out = cp.weft_as(&reviews_file, &["register", "--service", "reviews", "--address", "127.0.0.1:9100", "--ttl", "30s"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, _) = plane_raw_as(&cp, Some(&reviews), "POST", "/v1/registry/heartbeat?service=reviews&address=127.0.0.1:9100", b"");
    assert_eq!(code, 200);
    // Another's: no — registering the attacker's address, heartbeating, or removing it.
    let out = cp.weft_as(&reviews_file, &["register", "--service", "ratings", "--address", "127.0.0.1:6666"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("may register only its own service \"reviews\", not \"ratings.default.svc.cluster.local\""),
        "{}",
        text(&out)
    );
    // Nor its own name in another namespace (another service), nor another's FQDN.
    let out = cp.weft_as(&reviews_file, &["register", "--service", "reviews", "--namespace", "prod", "--address", "127.0.0.1:6666"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("namespace: workload of namespace \"default\" may not register in \"prod\""), "{}", text(&out));
    let out = cp.weft_as(&reviews_file, &["register", "--service", "reviews.prod.svc.cluster.local", "--address", "127.0.0.1:6666"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A service account named like another namespace's service registers nothing of it.
    let (dotted, _) = token(&cp, &["--namespace", "evil", "--service-account", "reviews.default.svc.cluster.local"]);
    let out = cp.weft_as(&dotted, &["register", "--service", "reviews.default.svc.cluster.local", "--address", "127.0.0.1:6666"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!plane_raw(&cp, "GET", "/v1/registry", b"").1.contains("6666"));
    for (method, path) in [
        ("DELETE", "/v1/registry?service=ratings&address=127.0.0.1:7"),
        ("POST", "/v1/registry/heartbeat?service=ratings&address=127.0.0.1:7"),
    ] {
        assert_eq!(plane_raw_as(&cp, Some(&evil), method, path, b"").0, 403, "{method} {path}");
    }
    for (method, path, body) in calls() {
        if matches!(path, "/v1/apply" | "/v1/rollback?to=1" | "/v1/tokens" | "/v1/history" | "/v1/resources") {
            assert_eq!(plane_raw_as(&cp, Some(&evil), method, path, body).0, 403, "{method} {path}");
        }
    }
    let registry = plane_raw(&cp, "GET", "/v1/registry", b"").1;
    assert!(registry.contains("127.0.0.1:7") && !registry.contains("6666"), "{registry}");

    // A proxy of reviews follows; another workload cannot ACK or NACK as it, nor watch as it.
    let a = backend("a", &[]);
    assert!(cp.weft(&["register", "--service", "echo", "--address", &a.addr.to_string()]).status.success());
    let p = spawn(&[
        "proxy",
        "--control-plane",
        &cp.url(),
        "--ca-file",
        cp.ca_file().to_str().unwrap(),
        "--token-file",
        reviews_file.to_str().unwrap(),
        "--node",
        "reviews-1",
        "--listen",
        "127.0.0.1:0",
    ]);
    let p = Proxy { p, cfg: std::path::PathBuf::new() };
    wait_until("the proxy routes", || get(p.addr(), "echo", "/", &[]).status == 200);
    wait_until("the proxy acknowledged", || text(&cp.weft(&["status"])).contains("reviews-1"));
    let forged = br#"{"node":"reviews-1","revision":999,"reason":"forged NACK"}"#;
    let (code, answer) = plane_raw_as(&cp, Some(&evil), "POST", "/v1/ack", forged);
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("followed by another identity"), "{answer}");
    assert_eq!(plane_raw_as(&cp, Some(&evil), "POST", "/v1/watch", br#"{"node":"reviews-1","wait_ms":1}"#).0, 403);
    assert!(!text(&cp.weft(&["status"])).contains("forged"), "{}", text(&cp.weft(&["status"])));
    // Its own token may.
    assert_eq!(plane_raw_as(&cp, Some(&reviews), "POST", "/v1/ack", br#"{"node":"reviews-1","revision":1}"#).0, 200);
}

#[test]
fn insecure_mode_asks_nobody_and_says_so() {
    let dir = temp_dir().join("cp");
    let addr = free_addr();
    let p = spawn(&["control-plane", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string(), "--insecure"]);
    wait_until("it listens", || std::net::TcpStream::connect(addr).is_ok());
    let cp = Plane { p, addr, dir: dir.clone() };
    let (code, _) = plane_raw_as(&cp, None, "GET", "/v1/history", b"");
    assert_eq!(code, 200);
    assert!(cp.p.log_text().contains("--insecure: the API asks nobody for credentials"), "{}", cp.p.log_text());
    assert!(!dir.join("admin-token").exists(), "no tokens in insecure mode");
    let (code, answer) = plane_raw_as(&cp, None, "POST", "/v1/tokens", br#"{"role":"read"}"#);
    assert_eq!(code, 400, "{answer}");
}
