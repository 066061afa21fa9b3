//! Config that once took proxies down, refused wherever it enters — `weft validate`,
//! `weft apply`, `weft register` — with an error naming the field, while what was
//! stored before is kept and the proxies following the control plane keep routing.

mod common;

use std::process::Command;

use common::*;

const MAX: u32 = u32::MAX;

fn se(host: &str, eps: &[(&str, u32)]) -> String {
    let mut s = format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n");
    for (a, w) in eps {
        let (ip, port) = a.rsplit_once(':').unwrap();
        s += &format!("  - {{address: {ip}, ports: {{http: {port}}}, weight: {w}}}\n");
    }
    s
}

fn hash_dr(host: &str, extra: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n  trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user{extra}}}}}}}\n")
}

fn validate(text: &str) -> (i32, String) {
    let dir = temp_dir();
    std::fs::write(dir.join("mesh.yaml"), text).unwrap();
    let o = Command::new(weft()).current_dir(&dir).args(["validate", "-f", "mesh.yaml"]).output().unwrap();
    (o.status.code().unwrap_or(-1), text_of(&o))
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

/// The crash configs: a weight that makes the endpoints' sum pass 4294967295, and a
/// Maglev table past Envoy's largest.
fn crash_configs() -> Vec<(String, &'static str)> {
    vec![
        (se("svc", &[("127.0.0.1:9001", MAX), ("127.0.0.1:9002", 1)]) + &hash_dr("svc", ", ringHash: {minimumRingSize: 1024}"), "ServiceEntry svc: spec.endpoints[1].weight: the endpoints' weights add up to more than 4294967295"),
        (se("svc", &[("127.0.0.1:9001", 1)]) + &hash_dr("svc", ", maglev: {tableSize: 1000000007}"), "DestinationRule svc: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 1000000007 is over Envoy's largest table, 5000011"),
    ]
}

#[test]
fn validate_refuses_the_crash_configs_and_hostile_names() {
    for (cfg, msg) in crash_configs() {
        let (rc, out) = validate(&cfg);
        assert_eq!(rc, 1, "{out}");
        assert!(out.contains(msg), "{out}");
    }
    // One endpoint at the top of Istio's range is valid: its ring is bounded.
    let (rc, out) = validate(&(se("svc", &[("127.0.0.1:9001", MAX)]) + &hash_dr("svc", "")));
    assert_eq!(rc, 0, "{out}");
    let base = se("svc", &[("127.0.0.1:9001", 1)]);
    let cases = [
        (base.replace("{name: svc}", "{name: svc, namespace: ../../x}"), "metadata.namespace: \"../../x\" is not a DNS-1123 label"),
        (base.replace("{name: svc}", "{name: \"a\\nb\"}"), "metadata.name: \"a\\nb\" is not a DNS-1123 subdomain"),
        (base.replace("{name: svc}", &format!("{{name: svc, namespace: {}}}", "x".repeat(4 << 20))), "metadata.namespace: \"xxxx"),
        (
            base.replace("weight: 1}", "weight: 1, labels: {app: \"a\\nb\"}}"),
            "spec.endpoints[0].labels[\"app\"]: value \"a\\nb\" is not a Kubernetes label value",
        ),
        (base.replace("weight: 1", "weight: 4294967296"), "spec.endpoints[0].weight"),
    ];
    for (cfg, msg) in cases {
        let (rc, out) = validate(&cfg);
        assert_eq!(rc, 1, "{msg}: {out}");
        assert!(out.contains(msg) && out.len() < 4096, "{msg}: {}", &out[..out.len().min(2000)]);
    }
}

fn post(cp: &Plane, path: &str, body: &[u8]) -> (u16, String) {
    plane_raw(cp, "POST", path, body)
}

#[test]
fn apply_and_register_refuse_them_and_following_proxies_keep_routing() {
    let cp = plane();
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    assert!(cp.apply("mesh.yaml", &(se("svc", &[(&a.addr.to_string(), 1)]) + &hash_dr("svc", ""))).status.success());
    let p = follower(&cp, "node-1");
    assert_eq!(get(p.addr(), "svc", "/", &[("x-user", "u")]).backend(), "a");
    let before = cp.history_len();

    for (cfg, msg) in crash_configs() {
        let out = cp.apply("crash.yaml", &cfg);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(msg), "{}", text(&out));
    }
    let out = cp.apply("ns.yaml", &se("svc", &[("127.0.0.1:1", 1)]).replace("{name: svc}", "{name: svc, namespace: ../../x}"));
    assert!(text(&out).contains("metadata.namespace: \"../../x\" is not a DNS-1123 label"), "{}", text(&out));

    // Registrations: a service with a hash policy, then a weight that makes the sum
    // pass 4294967295 (the crash that once took every following proxy down).
    let out = cp.weft(&["register", "--service", "ratings", "--address", &b.addr.to_string(), "--weight", &MAX.to_string()]);
    assert!(out.status.success(), "one endpoint at the top of the range is valid: {}", text(&out));
    let out = cp.apply("dr.yaml", &hash_dr("ratings", ", ringHash: {minimumRingSize: 1024}"));
    assert!(out.status.success(), "{}", text(&out));
    let before = before + 1;
    let out = cp.weft(&["register", "--service", "ratings", "--address", "127.0.0.1:9", "--weight", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spec.endpoints[1].weight: the endpoints' weights add up to more than 4294967295"), "{}", text(&out));
    wait_until("ratings routes (its ring is bounded)", || get(p.addr(), "ratings", "/", &[("x-user", "u")]).status == 200);
    assert_eq!(get(p.addr(), "ratings", "/", &[("x-user", "u")]).backend(), "b");
    let before = before + 1;

    // Hostile registrations: each refused, naming the field; nothing stored.
    let reg = |f: &str| format!("{{\"service\":\"ratings\",\"address\":\"127.0.0.1:9\"{f}}}");
    let big = "x".repeat(4 << 20);
    let cases: Vec<(String, &str)> = vec![
        ("{\"service\":\"ratings\",\"address\":\"not an ip:80\"}".into(), "address: \"not an ip:80\""),
        ("{\"service\":\"../../x\",\"address\":\"127.0.0.1:9\"}".into(), "service: \"../../x\" is not a DNS-1123 subdomain"),
        (reg(",\"labels\":{\"app\":\"a\\nb\"}"), "labels[\"app\"]: value \"a\\nb\""),
        (reg(&format!(",\"labels\":{{\"app\":\"{}\"}}", "v".repeat(1000))), "labels[\"app\"]: value \"vvvv"),
        (reg(&format!(",\"labels\":{{\"app\":\"{big}\"}}")), "over the 65536 allowed"),
        (reg(",\"ttlMs\":18446744073709551615"), "ttlMs: 18446744073709551615 is out of range"),
        (reg(",\"weight\":4294967296"), "registration: "),
    ];
    for (body, msg) in cases {
        let (code, raw) = post(&cp, "/v1/registry", body.as_bytes());
        let answer = match serde_json::from_str::<serde_json::Value>(&raw) {
            Ok(v) => v["errors"].as_array().map(|a| a.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("\n")).unwrap_or(raw),
            Err(_) => raw,
        };
        assert!(code == 400 || code == 413, "{code} {answer}");
        assert!(answer.contains(msg) && answer.len() < 4096, "{msg}: {}", &answer[..answer.len().min(2000)]);
    }
    assert_eq!(cp.history_len(), before, "nothing was stored");

    // What was stored before is served; a change still reaches the proxy, which routes.
    assert!(cp.weft(&["register", "--service", "other", "--address", &a.addr.to_string()]).status.success());
    wait_until("the next change reached the proxy", || get(p.addr(), "other", "/", &[]).status == 200);
    assert_eq!(get(p.addr(), "svc", "/", &[("x-user", "u")]).backend(), "a");
    assert_eq!(get(p.addr(), "ratings", "/", &[("x-user", "u")]).backend(), "b");
    let status = text(&cp.weft(&["status"]));
    assert!(status.contains("node-1") && !status.contains("revision 1:") && !status.contains(": spec."), "no NACK: {status}");
}
