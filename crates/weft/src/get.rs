//! `weft get KIND [NAME]`, as kubectl does it: a table by default (`-o
//! wide|name|yaml|json`), the `default` namespace unless `-n NS` or `-A` says
//! otherwise, and "No resources found in NS namespace." when nothing is. Config kinds
//! come from `/v1/resources`; `endpoints`, `services` and `proxies` are views of the
//! registry and the proxies following the control plane (see [`crate::views`]).

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::Value;
use weft_api::{HistoryEntry, Listing, ResourceQuery};

use crate::ctl::{answer, call, ServerArg};
use crate::table::{render, Output, Row, View};

#[derive(clap::Args)]
#[command(after_help = kinds_help())]
pub struct GetArgs {
    /// What to list: a config kind (its name, plural or short name, any case) or
    /// endpoints, services, proxies (see below).
    pub kind: String,
    /// Only the one with this name.
    pub name: Option<String>,
    /// Only this namespace (default: `default`).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub server: ServerArg,
}

/// The views `weft get` has besides config kinds, with their other names.
pub const VIEWS: [(&str, &[&str]); 3] = [("endpoints", &["endpoint", "ep"]), ("services", &["service", "svc"]), ("proxies", &["proxy"])];

/// `weft get --help`'s list of kinds, written from the control plane's table of kinds.
fn kinds_help() -> String {
    let line = |(k, alt): &(&str, &[&str])| format!("  {k:<24}{}\n", alt.join(", "));
    let kinds: String = weft_control::plane::KINDS.iter().map(line).collect();
    let views: String = VIEWS.iter().map(line).collect();
    format!("Kinds (and the other names each is known by):\n{kinds}\nViews of the registry and the proxies:\n{views}")
}

/// Which namespaces a get covers.
pub enum Scope {
    All,
    One(String),
}

impl Scope {
    pub fn of(namespace: Option<&str>, all: bool) -> Result<Scope, String> {
        match (namespace, all) {
            (_, true) => Ok(Scope::All),
            (Some(ns), false) => check_name("-n", ns, 63, false).map(|_| Scope::One(ns.to_owned())),
            (None, false) => Ok(Scope::One("default".into())),
        }
    }

    pub fn holds(&self, ns: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::One(n) => n == ns,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::One(n) => Some(n),
        }
    }
}

/// A Kubernetes name (DNS-1123: lowercase letters, digits, '-', and '.' where `dots`),
/// at most `max` bytes; the error quotes at most 64 bytes of it, escaped.
pub fn check_name(what: &str, s: &str, max: usize, dots: bool) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.');
    if !s.is_empty() && s.len() <= max && s.bytes().all(ok) {
        return Ok(());
    }
    let extra = if dots { ", '.'" } else { "" };
    Err(format!(
        "{what} {:?}{}: not a name (1 to {max} lowercase letters, digits, '-'{extra})",
        weft_api::truncate(s, 64),
        if s.len() > 64 { format!("… ({} bytes)", s.len()) } else { String::new() }
    ))
}

/// The kind as the store spells it, or a view's name; an error lists what there is.
fn resolve(kind: &str) -> Result<Result<&'static str, &'static str>, String> {
    if let Some(k) = weft_control::plane::canonical_kind(kind) {
        return Ok(Ok(k));
    }
    let view = VIEWS.iter().find(|(v, alt)| v.eq_ignore_ascii_case(kind) || alt.iter().any(|a| a.eq_ignore_ascii_case(kind)));
    view.map(|(v, _)| Err(*v)).ok_or_else(|| format!("unknown kind {:?} (`weft get --help` lists them)", weft_api::truncate(kind, 64)))
}

pub fn get(a: GetArgs) -> ExitCode {
    match run(&a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: &GetArgs) -> Result<ExitCode, String> {
    let scope = Scope::of(a.namespace.as_deref(), a.all_namespaces)?;
    let target = resolve(&a.kind)?;
    // (A resource's name is a DNS name; a proxy's node id is any text without control
    // characters, as the control plane takes it.)
    match (&a.name, target) {
        (Some(n), Ok(_)) => check_name("NAME", n, 253, true)?,
        (Some(n), Err(_)) => weft_api::check_id("NAME", n)?,
        (None, _) => {}
    }
    let view = match target {
        Ok(kind) => resources(&a.server, kind, a.name.as_deref(), &scope, a.output == Output::Wide),
        Err(v) => crate::views::view(&a.server, v, a.name.as_deref(), &scope),
    };
    let Ok(view) = view else { return Ok(ExitCode::FAILURE) };
    if let (Some(n), true) = (&a.name, view.rows.is_empty()) {
        eprintln!("error: {} {n} not found", a.kind);
        return Ok(ExitCode::FAILURE);
    }
    if view.rows.is_empty() {
        if a.output == Output::Json {
            println!("[]");
        }
        // (Proxies belong to no namespace.)
        match scope.namespace().filter(|_| target != Err("proxies")) {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&view, a.output, a.name.is_some() && view.rows.len() == 1));
    Ok(ExitCode::SUCCESS)
}

/// Stored resources of `kind`: NAME, NAMESPACE, and HOSTS where the kind has them;
/// `wide` adds the revision that last changed each and its age, from the history.
fn resources(s: &ServerArg, kind: &str, name: Option<&str>, scope: &Scope, wide: bool) -> Result<View, ExitCode> {
    let q = ResourceQuery { kind: Some(kind.to_owned()), name: name.map(str::to_owned), namespace: scope.namespace().map(str::to_owned) };
    let items = answer::<Listing<Value>>(call(s, "GET", &format!("/v1/resources?{}", q.to_query()), None))?.items;
    let changed = if wide && !items.is_empty() { last_changes(s)? } else { HashMap::new() };
    let hosts = items.iter().any(|i| i["spec"].get("hosts").or(i["spec"].get("host")).is_some());
    let mut headers = vec!["NAME", "NAMESPACE"];
    if hosts {
        headers.push("HOSTS");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let rows = items
        .into_iter()
        .map(|i| {
            let key = format!("{kind}/{}/{}", i["metadata"]["namespace"].as_str().unwrap_or("default"), text(&i["metadata"]["name"]));
            let (rev, age) = changed.get(&key).map_or(("-".into(), "-".into()), |(r, at)| (r.to_string(), age(now.saturating_sub(*at))));
            let mut row = resource_row(kind, i, hosts);
            row.wide.extend([rev, age]);
            row
        })
        .collect();
    Ok(View { headers, wide_headers: vec!["GATEWAYS", "SELECTOR", "LABELS", "REVISION", "AGE"], rows })
}

fn resource_row(kind: &str, v: Value, hosts: bool) -> Row {
    let name = text(&v["metadata"]["name"]);
    let mut cells = vec![name.clone(), v["metadata"]["namespace"].as_str().unwrap_or("default").to_owned()];
    if hosts {
        cells.push(text(v["spec"].get("hosts").or(v["spec"].get("host")).unwrap_or(&Value::Null)));
    }
    let spec = &v["spec"];
    let selector = [&spec["selector"]["matchLabels"], &spec["workloadSelector"]["labels"], &spec["selector"]]
        .into_iter()
        .find(|s| s.is_object() && s.as_object().is_some_and(|o| o.values().all(Value::is_string)))
        .map(pairs)
        .unwrap_or_default();
    let wide = vec![text(&spec["gateways"]), selector, pairs(&v["metadata"]["labels"])];
    Row { name: format!("{}/{name}", kind.to_ascii_lowercase()), value: v, cells, wide }
}

/// When each resource (`Kind/namespace/name`) last changed: (revision, unix ms). The
/// whole history is read, so only `-o wide` asks.
fn last_changes(s: &ServerArg) -> Result<HashMap<String, (u64, u64)>, ExitCode> {
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    for e in answer::<Listing<HistoryEntry>>(call(s, "GET", "/v1/history", None))?.items {
        for c in e.changes {
            if let Some(k) = c.key.strip_prefix("config/") {
                let at = last.entry(k.to_owned()).or_insert((e.revision, e.at_ms));
                if e.revision >= at.0 {
                    *at = (e.revision, e.at_ms);
                }
            }
        }
    }
    Ok(last)
}

/// An age as kubectl writes it: 42s, 7m, 3h, 12d.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A cell from JSON: a string as it is, a list joined with ',', null as nothing, else
/// the JSON itself.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `k=v,k=v` from a JSON object of strings.
pub fn pairs(v: &Value) -> String {
    let Some(o) = v.as_object() else { return String::new() };
    o.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_names_are_refused_with_a_short_message() {
        let e = super::check_name("-n", &format!("a\n{}", "x".repeat(10_000)), 63, false).unwrap_err();
        assert!(e.contains("\\n") && !e.contains('\n') && e.len() < 200, "{e}");
        assert!(super::check_name("-n", "prod-1", 63, false).is_ok());
        assert!(super::check_name("NAME", "reviews.v1", 253, true).is_ok());
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let got: Vec<String> = [0, 119_000, 120_000, 7_199_000, 7_200_000, 172_800_000].map(super::age).to_vec();
        assert_eq!(got, ["0s", "119s", "2m", "119m", "2h", "2d"]);
    }

    #[test]
    fn help_lists_every_kind_once() {
        let h = super::kinds_help();
        for (k, _) in weft_control::plane::KINDS {
            assert_eq!(h.matches(&format!("  {k} ")).count(), 1, "{k}: {h}");
        }
    }
}
