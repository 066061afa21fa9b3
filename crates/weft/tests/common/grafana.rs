//! The Grafana dashboards of `deploy/grafana` and the PromQL in them, for the tests that
//! parse it (`prometheus.rs`) and run it against a real Prometheus (`prometheus_scrape.rs`).

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One PromQL expression of a dashboard, with Grafana's variables still in it.
pub struct Query {
    pub file: String,
    /// The panel's title, or `variable NAME` for a `label_values(…)` selector.
    pub panel: String,
    pub expr: String,
}

/// Every dashboard: its file name and its JSON (panics on a file that is not JSON).
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(repo().join("deploy/grafana")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let dash = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        out.push((name, dash));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every PromQL expression of a dashboard: panel targets (rows' panels too) and the
/// series selectors inside its `label_values(…)` variable queries.
pub fn queries(file: &str, dash: &serde_json::Value) -> Vec<Query> {
    fn panels(file: &str, list: &serde_json::Value, out: &mut Vec<Query>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{file}: {title}: a target without expr: {t}"));
                out.push(Query { file: file.to_owned(), panel: title.to_owned(), expr: expr.to_owned() });
            }
            panels(file, &p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(file, &dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
        if let Some((sel, _)) = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')) {
            let panel = format!("variable {}", v["name"].as_str().unwrap_or_default());
            out.push(Query { file: file.to_owned(), panel, expr: sel.to_owned() });
        }
    }
    out
}

/// The dashboard's variable names, longest first (so that `$srcns` is never read as `$s`).
pub fn variables(dash: &serde_json::Value) -> Vec<String> {
    let mut vars: Vec<String> =
        dash["templating"]["list"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect();
    vars.sort_by_key(|v| std::cmp::Reverse(v.len()));
    vars
}

/// Grafana's interval variables as 5m, and each of `vars` as `value(name)`.
pub fn substitute(expr: &str, vars: &[String], value: impl Fn(&str) -> String) -> String {
    let mut e = expr.to_owned();
    for iv in ["$__rate_interval", "$__interval", "$interval", "$__range"] {
        e = e.replace(iv, "5m");
    }
    for v in vars {
        if !e.contains(&format!("${v}")) && !e.contains(&format!("${{{v}}}")) {
            continue;
        }
        let x = value(v);
        e = e.replace(&format!("${{{v}}}"), &x).replace(&format!("${v}"), &x);
    }
    e
}
