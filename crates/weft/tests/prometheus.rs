//! `deploy/prometheus` and `deploy/grafana` as shipped, checked by the real `promtool`
//! (Debian's `prometheus` package; `./scripts/test` installs it): the scrape config and
//! the rules load, every alert's unit tests pass, every PromQL expression of the Grafana
//! dashboards parses, and every metric they name is one weft exports.

mod common;

use std::process::Command;

use common::grafana::{self, repo};

/// Runs `promtool ARGS` in the repository root: (success, stdout + stderr).
fn promtool(args: &[&str]) -> (bool, String) {
    let o = match Command::new("promtool").args(args).current_dir(repo()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: install prometheus (promtool), e.g. `apt-get install prometheus`; ./scripts/test does it")
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// The sources that write weft's metrics (the proxy's and the control plane's /metrics).
const EXPORTERS: [&str; 3] = [
    include_str!("../../telemetry/src/render.rs"),
    include_str!("../../control/src/api/metrics.rs"),
    include_str!("../../control/src/proxies.rs"),
];

/// Every whole PromQL identifier in `text` that names an `istio_*` or `weft_*` metric.
fn metric_names(text: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.split(|c: char| !ident(c))
        .filter(|t| (t.starts_with("istio_") || t.starts_with("weft_")) && !t.contains(':') && !t.ends_with('_'))
        .map(str::to_owned)
        .collect()
}

/// Whether an exporter writes `name` (a histogram's series by its base name).
fn exported(name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    [name, base].iter().any(|n| {
        EXPORTERS
            .iter()
            .any(|src| src.match_indices(n).any(|(i, _)| !src[i + n.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')))
    })
}

fn assert_all_exported(what: &str, text: &str) {
    let unknown: Vec<_> = metric_names(text).into_iter().filter(|n| !exported(n)).collect();
    assert!(unknown.is_empty(), "{what} names metrics weft does not export: {unknown:?}");
}

#[test]
fn scrape_config_is_valid_and_loads_the_rules() {
    let (ok, out) = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: deploy/prometheus/prometheus.yml is valid prometheus config file syntax"), "{out}");
    // rule_files is relative to the config: the shipped rules are found and load.
    assert!(out.contains("Checking deploy/prometheus/rules/weft.rules.yml"), "{out}");
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
}

#[test]
fn rules_are_valid_and_name_weft_metrics() {
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/rules/weft.rules.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/rules/weft.rules.yml")).unwrap();
    for alert in [
        "WeftServiceLatencyHigh",
        "WeftServiceErrorRateHigh",
        "WeftServiceThroughputDrop",
        "WeftProxyConfigStale",
        "WeftProxyConfigRejected",
        "WeftOutlierEjections",
        "WeftTargetDown",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert} missing");
    }
    assert_all_exported("rules/weft.rules.yml", &rules);
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/tests/weft.rules.test.yml")).unwrap();
    assert_all_exported("tests/weft.rules.test.yml", &tests);
}

#[test]
fn every_alert_fires_and_stays_silent_in_its_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "deploy/prometheus/tests/weft.rules.test.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "{out}");
    // Each alert has a case where it fires and one where it is expected silent.
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/tests/weft.rules.test.yml")).unwrap();
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/rules/weft.rules.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let cases: Vec<&str> = tests.split("- alertname: ").skip(1).filter(|c| c.starts_with(&format!("{alert}\n"))).collect();
        assert!(cases.iter().any(|c| c.contains("exp_labels:")), "no case where {alert} fires");
        assert!(cases.iter().any(|c| c.contains("exp_alerts: []")), "no case where {alert} stays silent");
    }
}

#[test]
fn dashboards_are_json_and_every_query_parses() {
    let mut exprs = Vec::new();
    let mut uids = Vec::new();
    for (file, dash) in grafana::dashboards() {
        assert!(dash["title"].is_string() && dash["panels"].is_array(), "{file}: no title or panels");
        uids.push(dash["uid"].as_str().unwrap_or_default().to_owned());
        let vars = grafana::variables(&dash);
        let found = grafana::queries(&file, &dash);
        assert!(found.len() >= 5, "{file}: only {} queries", found.len());
        for q in found {
            let e = grafana::substitute(&q.expr, &vars, |_| "value".into());
            assert!(!e.contains('$'), "{file}: {}: a variable the dashboard does not define in {}", q.panel, q.expr);
            assert_all_exported(&file, &e);
            exprs.push((format!("{file}: {}", q.panel), e));
        }
    }
    uids.sort();
    assert_eq!(uids, ["weft-control-plane", "weft-mesh", "weft-service", "weft-workload"]);

    // promtool parses expressions in rules files: one recording rule per query (JSON is YAML).
    let rules: Vec<_> =
        exprs.iter().enumerate().map(|(i, (_, e))| serde_json::json!({"record": format!("check_{i}"), "expr": e})).collect();
    let file = common::temp_dir().join("dashboards.rules.json");
    std::fs::write(&file, serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]}).to_string()).unwrap();
    let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
    let named: Vec<_> = exprs.iter().enumerate().map(|(i, (w, e))| format!("check_{i} ({w}): {e}")).collect();
    assert!(ok, "{out}\n{}", named.join("\n"));
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
}
