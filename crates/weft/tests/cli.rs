//! `weft get|apply|delete` as kubectl users expect them, against a real control plane:
//! tables (columns and rows), -o wide|name|json|yaml, -n / -A / `default` when
//! neither, the empty message, the endpoints/services/proxies views, apply from stdin,
//! delete -f, `weft x`, and hostile input.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-route}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n";

/// A ServiceEntry `name` in namespace `ns`, its endpoint at 127.0.0.1:`port`.
fn se(name: &str, ns: &str, port: u16) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.example.com]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}]\n"
    )
}

/// `weft ARGS` against `cp` with `input` on its stdin.
fn weft_stdin(cp: &Plane, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(weft())
        .args(args)
        .env("WEFT_SERVER", cp.url())
        .env("WEFT_CA_FILE", cp.ca_file())
        .env("WEFT_TOKEN_FILE", cp.admin_token_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // (A refused stdin may be closed before all of it is written.)
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// POSTs `body` to the control plane's `path` as its admin (what a proxy sends).
fn post(cp: &Plane, path: &str, body: &str) {
    let auth = format!("authorization: Bearer {}", cp.admin_token());
    let ca = cp.ca_file();
    let (code, _, err) = curl(&["-sf", "--cacert", ca.to_str().unwrap(), "-H", &auth, "-d", body, &format!("{}{path}", cp.url())]);
    assert_eq!(code, 0, "{path}: {err}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The table's lines split into cells (columns are separated by 3+ spaces).
fn cells(table: &str) -> Vec<Vec<String>> {
    table.lines().map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()).collect()
}

#[test]
fn get_prints_tables_per_namespace_with_every_output_format() {
    let cp = plane();
    let mesh = se("reviews", "default", 9001) + &se("ratings", "prod", 9002) + "---\n" + VS;
    let out = cp.apply("mesh.yaml", &mesh);
    assert!(out.status.success(), "{}", text(&out));

    // No -n: the default namespace only, a table with hosts.
    let out = cp.weft(&["get", "se"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(cells(&stdout(&out)), vec![vec!["NAME", "NAMESPACE", "HOSTS"], vec!["reviews", "default", "reviews.example.com"]]);
    // -n prod, -A both.
    assert_eq!(cells(&stdout(&cp.weft(&["get", "serviceentries", "-n", "prod"])))[1], vec!["ratings", "prod", "ratings.example.com"]);
    let all = cells(&stdout(&cp.weft(&["get", "ServiceEntry", "-A"])));
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().any(|r| r[0] == "ratings") && all.iter().any(|r| r[0] == "reviews"), "{all:?}");

    // -o name, json, yaml, wide.
    assert_eq!(stdout(&cp.weft(&["get", "vs", "-o", "name"])), "virtualservice/reviews-route\n");
    let v: serde_json::Value = serde_json::from_slice(&cp.weft(&["get", "se", "-A", "-o", "json"]).stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let v: serde_json::Value = serde_json::from_slice(&cp.weft(&["get", "se", "ratings", "-n", "prod", "-o", "json"]).stdout).unwrap();
    assert_eq!(v["spec"]["hosts"][0], "ratings.example.com");
    assert!(stdout(&cp.weft(&["get", "vs", "-o", "yaml"])).contains("reviews-route"));
    let wide = cells(&stdout(&cp.weft(&["get", "vs", "-o", "wide"])));
    assert_eq!(wide[0], vec!["NAME", "NAMESPACE", "HOSTS", "GATEWAYS", "SELECTOR", "LABELS", "REVISION", "AGE"]);
    // (No gateways, selector or labels: those cells are empty; applied in revision 1, seconds ago.)
    assert_eq!(&wide[1][..3], ["reviews-route", "default", "reviews"], "{wide:?}");
    assert_eq!(wide[1][3], "1", "{wide:?}");
    assert!(wide[1][4].ends_with('s'), "{wide:?}");

    // Nothing there: kubectl's words on stderr, exit 0, nothing on stdout.
    let out = cp.weft(&["get", "dr"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((stdout(&out).as_str(), stderr(&out).trim()), ("", "No resources found in default namespace."));
    let out = cp.weft(&["get", "vs", "-n", "prod"]);
    assert_eq!(stderr(&out).trim(), "No resources found in prod namespace.");
}

#[test]
fn endpoints_services_and_proxies_are_tables_from_the_control_plane() {
    let cp = plane();
    assert!(cp.apply("se.yaml", &se("reviews", "default", 9001)).status.success());
    let out = cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9080", "--label", "version=v2", "--ttl", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9081", "--label", "note=b"]);
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(stderr(&cp.weft(&["get", "proxies"])).trim(), "No resources found");

    // A proxy reports that its outlier detection ejected one of them (as proxies do).
    let report = r#"{"node":"lb-1","startedMs":1,"service":"reviews","namespace":"default","ejected":[{"service":"ratings.default.svc.cluster.local","address":"127.0.0.1:9080","reason":"5xx","remainingMs":30000}]}"#;
    post(&cp, "/v1/report", report);

    let eps = stdout(&cp.weft(&["get", "endpoints"]));
    let rows = cells(&eps);
    assert_eq!(rows[0], vec!["SERVICE", "NAMESPACE", "ADDRESS", "LABELS", "HEALTH", "TTL LEFT", "SOURCE"], "{eps}");
    assert_eq!(rows.len(), 4, "{eps}");
    let r = rows.iter().find(|r| r[2] == "127.0.0.1:9080").unwrap();
    assert_eq!(
        (r[0].as_str(), r[1].as_str(), r[3].as_str(), r[4].as_str(), r[6].as_str()),
        ("ratings.default.svc.cluster.local", "default", "version=v2", "ejected by 1 proxy", "registry")
    );
    let ttl: f64 = r[5].trim_end_matches('s').parse().unwrap();
    assert!(ttl > 50.0 && ttl <= 60.0, "{eps}");
    let r = rows.iter().find(|r| r[2] == "127.0.0.1:9081").unwrap();
    assert_eq!((r[3].as_str(), r[4].as_str(), r[5].as_str()), ("note=b", "-", "-"), "{eps}");
    let r = rows.iter().find(|r| r[2] == "127.0.0.1:9001").unwrap();
    assert_eq!((r[0].as_str(), r[3].as_str(), r[6].as_str()), ("reviews.example.com", "version=v1", "ServiceEntry/reviews"));
    let wide = stdout(&cp.weft(&["get", "ep", "-o", "wide"]));
    assert!(wide.lines().next().unwrap().ends_with("IDENTITY   LOCALITY   WEIGHT   EJECTED BY"), "{wide}");
    assert!(wide.lines().any(|l| l.contains("127.0.0.1:9080") && l.ends_with("lb-1: 5xx")), "{wide}");

    let svcs = cells(&stdout(&cp.weft(&["get", "svc"])));
    assert_eq!(svcs[0], vec!["NAME", "NAMESPACE", "ENDPOINTS", "RECOMMENDED", "PORTS", "SOURCE"]);
    assert!(
        svcs.contains(&vec![
            "ratings.default.svc.cluster.local".into(),
            "default".into(),
            "2".into(),
            "-".into(),
            "9080,9081".into(),
            "registry".into()
        ]),
        "{svcs:?}"
    );
    assert!(
        svcs.contains(&vec![
            "reviews.example.com".into(),
            "default".into(),
            "1".into(),
            "-".into(),
            "80/HTTP".into(),
            "ServiceEntry/reviews".into()
        ]),
        "{svcs:?}"
    );
    assert_eq!(stdout(&cp.weft(&["get", "services", "ratings", "-o", "name"])), "service/ratings.default.svc.cluster.local\n");
    assert_eq!(stderr(&cp.weft(&["get", "svc", "-n", "prod"])).trim(), "No resources found in prod namespace.");

    let _p = follower(&cp, "reviews-1");
    let acked = |rows: &[Vec<String>]| rows.iter().any(|r| r[0] == "reviews-1" && r[2] == "0" && r[3] == "-");
    wait_until("the proxy acknowledges", || acked(&cells(&stdout(&cp.weft(&["get", "proxies"])))));
    let rows = cells(&stdout(&cp.weft(&["get", "proxies"])));
    assert_eq!(rows[0], vec!["NODE", "ACKED", "LAG", "LAST NACK"]);
    // (lb-1, known from its report, has acknowledged nothing.)
    assert_eq!(rows[1][..3], ["lb-1", "0", "3"], "{rows:?}");

    // A proxy's NACK reason is a peer's text: a newline and an escape sequence in it
    // are escaped, the table keeps one line per proxy.
    post(&cp, "/v1/ack", r#"{"node":"evil-1","revision":1,"reason":"bad\nFAKE-ROW   1   0   -\u001b[2J"}"#);
    let table = stdout(&cp.weft(&["get", "proxies"]));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.contains("revision 1: bad\\nFAKE-ROW   1   0   -\\u{1b}[2J"), "{table}");
    assert!(!table.contains('\x1b'), "{table}");
}

#[test]
fn apply_from_stdin_and_delete_what_a_file_declares() {
    let cp = plane();
    let mesh = se("reviews", "default", 9001) + &se("ratings", "prod", 9002);
    let out = weft_stdin(&cp, &["apply", "-f", "-"], mesh.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("2 changed"), "{}", text(&out));
    assert_eq!(stdout(&cp.weft(&["get", "se", "-A", "-o", "name"])).lines().count(), 2);

    let f = temp_dir().join("mesh.yaml");
    std::fs::write(&f, &mesh).unwrap();
    let out = cp.weft(&["delete", "-f", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("ServiceEntry/default/reviews deleted") && stdout(&out).contains("ServiceEntry/prod/ratings deleted"),
        "{}",
        text(&out)
    );
    assert_eq!(stdout(&cp.weft(&["get", "se", "-A", "-o", "name"])), "");
    // Again: each is reported not found, and the exit says it.
    let out = cp.weft(&["delete", "-f", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("ServiceEntry/prod/ratings: ServiceEntry ratings not found"), "{}", text(&out));

    // -n for the documents that name no namespace, from stdin.
    assert!(weft_stdin(&cp, &["apply", "-f", "-"], se("ratings", "prod", 9002).as_bytes()).status.success());
    let out =
        weft_stdin(&cp, &["delete", "-n", "prod", "-f", "-"], se("ratings", "prod", 9002).replace(", namespace: prod", "").as_bytes());
    assert!(stdout(&out).contains("ServiceEntry/prod/ratings deleted"), "{}", text(&out));

    // KIND NAME still works.
    assert!(weft_stdin(&cp, &["apply", "-f", "-"], VS.as_bytes()).status.success());
    assert!(cp.weft(&["delete", "vs", "reviews-route"]).status.success());
}

#[test]
fn apply_warns_of_a_virtual_service_another_one_shadows() {
    let cp = plane();
    let reviews = se("reviews", "default", 9001).replace("reviews.example.com", "reviews.default.svc.cluster.local");
    let out = weft_stdin(&cp, &["apply", "-f", "-"], (reviews + "---\n" + VS).as_bytes());
    assert!(out.status.success() && !stderr(&out).contains("warning"), "{}", text(&out));
    // The same host by its full name: stored (Istio keeps both; the older serves), and
    // the client is told which one serves.
    let fqdn = VS.replace("reviews-route", "reviews-fqdn").replace("hosts: [reviews]", "hosts: [reviews.default.svc.cluster.local]");
    let out = weft_stdin(&cp, &["apply", "-f", "-"], fqdn.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("1 changed"), "{}", text(&out));
    let warned = stderr(&out);
    assert!(
        warned.starts_with("warning: stdin: VirtualService reviews-fqdn: spec.hosts[0]: ")
            && warned.contains("is already served by VirtualService reviews-route"),
        "{}",
        text(&out)
    );
    // Only what was applied is warned about: applying something else says nothing of it.
    let out = weft_stdin(&cp, &["apply", "-f", "-"], se("ratings", "prod", 9002).as_bytes());
    assert!(out.status.success() && !stderr(&out).contains("warning"), "{}", text(&out));
}

#[test]
fn hostile_input_is_refused_with_a_clear_message() {
    let cp = plane();
    let refused = |o: &Output, says: &str| {
        assert!(!o.status.success(), "{}", text(o));
        assert!(stderr(o).contains(says), "wanted {says:?} in:\n{}", text(o));
        assert!(stderr(o).len() < 1000, "a short message: {}", stderr(o).len());
    };
    refused(&cp.weft(&["get", "se", "-n", "bad\nns"]), r#"-n "bad\nns": not a name"#);
    refused(&cp.weft(&["get", "se", "-n", &"x".repeat(10 << 10)]), "(10240 bytes)");
    refused(&cp.weft(&["get", "se", "a\nb"]), "not a name");
    refused(&cp.weft(&["get", "proxies", "a\nb"]), r#"NAME "a\nb": must be 1 to 253 bytes without control characters"#);
    refused(&cp.weft(&["get", "proxies", "Node_1"]), "error: proxies Node_1 not found");
    refused(&cp.weft(&["get", "se", "-o", "garbage"]), "invalid value 'garbage'");
    refused(&cp.weft(&["get", "widgets"]), "unknown kind \"widgets\"");
    refused(&cp.weft(&["delete", "se", "x", "-n", "Bad NS"]), "not a name");
    // (A label value with a newline never reaches a table: the control plane refuses it.)
    refused(&cp.weft(&["register", "--service", "r", "--address", "127.0.0.1:1", "--label", "k=a\nb"]), "not a Kubernetes label value");
    refused(&weft_stdin(&cp, &["apply", "-f", "-"], b"\x00\x01: [not yaml"), "stdin");
    refused(&weft_stdin(&cp, &["apply", "-f", "-"], &vec![b'#'; 100 << 20]), "stdin: over the 8 MiB");
    refused(&weft_stdin(&cp, &["apply", "-f", "-"], &[0xff, 0xfe, b'\n']), "not UTF-8");

    let f = temp_dir().join("bad.yaml");
    std::fs::write(&f, "apiVersion: x/v1\nkind: Widget\nmetadata: {name: w}\n---\n".to_owned() + VS).unwrap();
    let out = cp.weft(&["delete", "-f", f.to_str().unwrap()]);
    refused(&out, "(document 1): unknown kind \"Widget\"");
    assert!(stderr(&out).contains("VirtualService/default/reviews-route: VirtualService reviews-route not found"), "{}", text(&out));
}

#[test]
fn help_lists_every_kind_and_developer_tools_live_under_x() {
    let out = Command::new(weft()).args(["get", "--help"]).output().unwrap();
    let help = stdout(&out);
    for kind in ["Sidecar", "Gateway", "Telemetry", "WorkloadEntry", "ServiceEntry", "endpoints", "services", "proxies"] {
        assert!(help.contains(kind), "{kind} missing from:\n{help}");
    }
    let top = stdout(&Command::new(weft()).arg("--help").output().unwrap());
    assert!(!top.contains("bench-control-plane") && !top.contains("\n  backend"), "{top}");
    let x = stdout(&Command::new(weft()).args(["x", "--help"]).output().unwrap());
    assert!(x.contains("backend") && x.contains("bench-control-plane"), "{x}");
    // The old names still work (scripts call them).
    for args in [["backend", "--help"], ["bench-control-plane", "--help"]] {
        assert!(Command::new(weft()).args(args).output().unwrap().status.success());
    }
    let addr = free_addr().to_string();
    let b = spawn(&["x", "backend", "--listen", &addr, "--name", "xb"]);
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    wait_until("the backend listens", || std::net::TcpStream::connect(sock).is_ok());
    assert_eq!(get(sock, "any", "/", &[]).backend(), "xb", "{}", b.log_text());
}
