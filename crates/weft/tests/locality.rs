//! Locality-aware balancing through a real proxy: priority levels by closeness to the
//! proxy's `--locality`, failover rules and labels, weighted distribution, and
//! retries that leave the locality.

mod common;

use std::net::SocketAddr;

use common::*;

/// A ServiceEntry for `svc` whose endpoints carry localities.
fn se(eps: &[(SocketAddr, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n",
    );
    for (a, loc) in eps {
        s.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, locality: {loc}, labels: {{net: n-{}}}}}\n",
            a.ip(),
            a.port(),
            loc.replace('/', ".")
        ));
    }
    s
}

fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

const OUTLIER: &str = "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}";

fn priorities(p: &Proxy) -> Vec<(String, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    v["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["address"].as_str().unwrap().to_owned(), e["priority"].as_u64()))
        .collect()
}

#[test]
fn traffic_stays_in_the_nearest_locality_and_fails_over_by_closeness() {
    let (b, c) = (backend("b-same-region", &[]), backend("c-remote", &[]));
    let dead_local = dead_addr();
    let config = se(&[(dead_local, "r1/z1/s1"), (b.addr, "r1/z2/s1"), (c.addr, "r2/z1/s1")])
        + &destination_rule("svc", &format!("{{loadBalancer: {{simple: ROUND_ROBIN}}, {OUTLIER}}}"));
    let p = proxy_with(&config, &["--locality", "r1/z1/s1"]);
    let levels = priorities(&p);
    // 0 same subzone, 1 same zone, 2 same region, 3 a failover region, 4 any other region.
    assert_eq!(levels.iter().map(|(_, l)| *l).collect::<Vec<_>>(), vec![Some(0), Some(2), Some(4)], "{levels:?}");
    // The local endpoint is dead: the first request's retry and every later request go to
    // the same region, never to the remote one.
    let spread = spread(p.addr(), "svc", 40, &[]);
    assert_eq!(spread.get("b-same-region"), Some(&40), "{spread:?}");

    // Without a proxy locality there are no levels: round robin over all three.
    let p = proxy(&config);
    assert!(priorities(&p).iter().all(|(_, l)| l.is_none()));
    let spread = common::spread(p.addr(), "svc", 40, &[]);
    assert!(spread.get("c-remote").is_some_and(|n| *n >= 10), "{spread:?}");
}

#[test]
fn a_healthy_local_endpoint_takes_everything_and_failover_rules_pick_the_region() {
    let (a, r2, r3) = (backend("a-local", &[]), backend("r2", &[]), backend("r3", &[]));
    let dr = |extra: &str| destination_rule("svc", &format!("{{loadBalancer: {{simple: ROUND_ROBIN{extra}}}, {OUTLIER}}}"));
    let p = proxy_with(&(se(&[(a.addr, "r1/z1/s1"), (r2.addr, "r2/z1/s1"), (r3.addr, "r3/z1/s1")]) + &dr("")), &["--locality", "r1/z1/s1"]);
    assert_eq!(spread(p.addr(), "svc", 30, &[]).get("a-local"), Some(&30));

    // The local region is down; `failover: r1 → r3` puts r3 before r2.
    let rule = ", localityLbSetting: {failover: [{from: r1, to: r3}]}";
    let p = proxy_with(
        &(se(&[(dead_addr(), "r1/z1/s1"), (r2.addr, "r2/z1/s1"), (r3.addr, "r3/z1/s1")]) + &dr(rule)),
        &["--locality", "r1/z1/s1"],
    );
    assert_eq!(spread(p.addr(), "svc", 30, &[]).get("r3"), Some(&30));

    // failoverPriority: endpoints sharing the proxy's `net` label first, whatever their region.
    let rule = ", localityLbSetting: {failoverPriority: [net]}";
    let p = proxy_with(
        &(se(&[(a.addr, "r1/z1/s1"), (r2.addr, "r2/z1/s1"), (r3.addr, "r3/z1/s1")]) + &dr(rule)),
        &["--locality", "r1/z1/s1", "--label", "net=n-r2.z1.s1"],
    );
    assert_eq!(spread(p.addr(), "svc", 30, &[]).get("r2"), Some(&30));
}

#[test]
fn partial_health_spills_over_by_the_overprovisioning_factor() {
    // Two local endpoints, one dead: 50 % healthy × 1.4 = 70 % stays local, 30 % fails over.
    let (a, remote) = (backend("a", &[]), backend("remote", &[]));
    let config = se(&[(a.addr, "r1/z1/s1"), (dead_addr(), "r1/z1/s1"), (remote.addr, "r2/z1/s1")])
        + &destination_rule("svc", &format!("{{loadBalancer: {{simple: ROUND_ROBIN}}, {OUTLIER}}}"))
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n  - route: [{destination: {host: svc}}]\n    retries: {attempts: 3, retryOn: connect-failure}\n";
    let p = proxy_with(&config, &["--locality", "r1/z1/s1"]);
    // Let the dead one be found and ejected.
    spread(p.addr(), "svc", 20, &[]);
    assert_eq!(p.metric("weft_outlier_ejections_total", &[]), 1.0);
    let got = spread(p.addr(), "svc", 1000, &[]);
    assert_shares(&got, &[("a", 0.7), ("remote", 0.3)], 0.05);
}

#[test]
fn distribute_splits_by_locality_weight() {
    let (a1, a2, b, c) = (backend("a1", &[]), backend("a2", &[]), backend("b", &[]), backend("c", &[]));
    let config = se(&[(a1.addr, "r1/z1/s1"), (a2.addr, "r1/z1/s2"), (b.addr, "r1/z2/s1"), (c.addr, "r2/z1/s1")])
        + &destination_rule(
            "svc",
            "{loadBalancer: {simple: RANDOM, localityLbSetting: {distribute: [{from: \"r1/z1/*\", to: {\"r1/z1/*\": 80, \"r2/*\": 20}}]}}}",
        );
    let p = proxy_with(&config, &["--locality", "r1/z1/s1"]);
    let got = spread(p.addr(), "svc", 2000, &[]);
    // r1/z1 has two endpoints sharing its 80 %; r1/z2 is in no `to` and gets nothing.
    assert_shares(&got, &[("a1", 0.4), ("a2", 0.4), ("c", 0.2), ("b", 0.0)], 0.04);
}

#[test]
fn retry_remote_localities_sends_retries_to_another_locality() {
    let (bad, good_local, remote) = (backend("bad", &["--error-rate", "1"]), backend("good-local", &[]), backend("remote", &[]));
    let vs = |remote: bool| {
        format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc}}\nspec:\n  hosts: [svc]\n  http:\n  - route: [{{destination: {{host: svc}}}}]\n    retries: {{attempts: 1, retryOn: 5xx, retryRemoteLocalities: {remote}}}\n")
    };
    let base = se(&[(bad.addr, "r1/z1/s1"), (good_local.addr, "r1/z1/s1"), (remote.addr, "r2/z1/s1")])
        + &destination_rule(
            "svc",
            "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 0, consecutiveLocalOriginFailures: 0}}",
        );
    for (remote_ok, want) in [(false, "good-local"), (true, "remote")] {
        let p = proxy_with(&(base.clone() + &vs(remote_ok)), &["--locality", "r1/z1/s1"]);
        let got = spread(p.addr(), "svc", 40, &[]);
        // Half the first tries land on `bad`; its retry goes where the policy says.
        let retried = got.get(want).copied().unwrap_or(0);
        assert!(p.metric("weft_upstream_retries_total", &[]) >= 10.0, "{got:?}");
        if remote_ok {
            assert!(retried >= 10 && got.get("good-local").is_some_and(|n| *n >= 10), "{got:?}");
        } else {
            assert_eq!((retried, got.get("remote")), (40, None), "{got:?}");
        }
    }
}

#[test]
fn locality_config_errors_name_the_field() {
    let check = |setting: &str, want: &str| {
        let file = temp_dir().join("loc.yaml");
        let doc = se(&[("127.0.0.1:9".parse().unwrap(), "r1/z1/s1")])
            + &destination_rule("svc", &format!("{{loadBalancer: {{localityLbSetting: {setting}}}}}"));
        std::fs::write(&file, doc).unwrap();
        let out = std::process::Command::new(weft()).args(["validate", "-f", file.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
    };
    check(
        "{distribute: [{from: \"r1/*\", to: {\"r1/*\": 70}}]}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights add up to 70, not 100",
    );
    check("{failover: [{from: r1, to: r1}]}", "localityLbSetting.failover[0].to: must be another region than from");
    check("{distribute: [{from: \"*/z1\", to: {\"r1\": 100}}]}", "distribute[0].from: \"*/z1\" is not a locality");
    check("{failover: [{from: r1, to: r2}], distribute: [{from: r1, to: {r1: 100}}]}", "only one of distribute or failover may be set");
    // A bad --locality is refused by the command line.
    let out = std::process::Command::new(weft()).args(["proxy", "--config", "/dev/null", "--locality", "a/b/c/d"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not region/zone/subzone"));
}
