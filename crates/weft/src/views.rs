//! `weft get endpoints|services|proxies`: the mesh as the control plane sees it, from
//! its existing API — registered endpoints with their TTL left (`/v1/endpoints`),
//! ServiceEntries' endpoints and hosts (`/v1/resources`), the proxies following it
//! (`/v1/status`); each service's recommended replica count (`/v1/recommendations`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{json, Value};
use weft_api::{EndpointInfo, Listing, Recommendation, ResourceQuery, StatusAnswer};

use crate::ctl::{answer, call, ServerArg};
use crate::get::{pairs, text, Scope};
use crate::table::{Row, View};

/// The rows of view `v` (one of [`crate::get::VIEWS`]); `name` keeps a service's (or
/// a proxy's) own.
pub fn view(s: &ServerArg, v: &str, name: Option<&str>, scope: &Scope) -> Result<View, ExitCode> {
    let mut view = match v {
        "endpoints" => endpoints(s, scope)?,
        "services" => services(s, scope)?,
        _ => proxies(s)?,
    };
    if let Some(n) = name {
        view.rows.retain(|r| r.cells.first().is_some_and(|c| c == n || c.strip_prefix(n).is_some_and(|rest| rest.starts_with('.'))));
    }
    Ok(view)
}

/// One endpoint wherever it came from.
struct Endpoint {
    service: String,
    namespace: String,
    address: String,
    labels: Value,
    ttl_left_ms: Option<u64>,
    ejected_by: Vec<String>,
    identity: Option<String>,
    locality: Option<String>,
    weight: Option<u32>,
    source: String,
}

fn registered(s: &ServerArg) -> Result<Vec<Endpoint>, ExitCode> {
    let l = answer::<Listing<EndpointInfo>>(call(s, "GET", "/v1/endpoints", None))?;
    Ok(l.items
        .into_iter()
        .map(|e| {
            let r = e.registration;
            // Registered through the API, or followed from ZooKeeper (which labels its own).
            let source = r.labels.get("weft.io/source").filter(|s| *s == "zookeeper").cloned().unwrap_or_else(|| "registry".into());
            Endpoint {
                namespace: r.namespace.unwrap_or_else(|| "default".into()),
                labels: json!(r.labels),
                ttl_left_ms: e.ttl_left_ms,
                ejected_by: e.ejected_by,
                identity: r.identity,
                locality: r.locality,
                weight: r.weight,
                service: r.service,
                address: r.address,
                source,
            }
        })
        .collect())
}

fn service_entries(s: &ServerArg, scope: &Scope) -> Result<Vec<Value>, ExitCode> {
    let q = ResourceQuery { kind: Some("ServiceEntry".into()), name: None, namespace: scope.namespace().map(str::to_owned) };
    Ok(answer::<Listing<Value>>(call(s, "GET", &format!("/v1/resources?{}", q.to_query()), None))?.items)
}

/// A ServiceEntry's endpoints, one per host it serves, at its first port.
fn entry_endpoints(se: &Value) -> Vec<Endpoint> {
    let ns = se["metadata"]["namespace"].as_str().unwrap_or("default");
    let port = &se["spec"]["ports"][0];
    let hosts = se["spec"]["hosts"].as_array().cloned().unwrap_or_default();
    let eps = se["spec"]["endpoints"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for h in &hosts {
        for e in &eps {
            let at = e["ports"].get(port["name"].as_str().unwrap_or("")).or(port.get("number")).map(text).unwrap_or_default();
            out.push(Endpoint {
                service: text(h),
                namespace: ns.to_owned(),
                address: if at.is_empty() { text(&e["address"]) } else { format!("{}:{at}", text(&e["address"])) },
                labels: e["labels"].clone(),
                ttl_left_ms: None,
                ejected_by: Vec::new(),
                identity: e["serviceAccount"].as_str().map(str::to_owned),
                locality: e["locality"].as_str().map(str::to_owned),
                weight: e["weight"].as_u64().map(|w| w as u32),
                source: format!("ServiceEntry/{}", text(&se["metadata"]["name"])),
            });
        }
    }
    out
}

fn all_endpoints(s: &ServerArg, scope: &Scope) -> Result<Vec<Endpoint>, ExitCode> {
    let mut all: Vec<Endpoint> = registered(s)?.into_iter().filter(|e| scope.holds(&e.namespace)).collect();
    all.extend(service_entries(s, scope)?.iter().flat_map(entry_endpoints));
    Ok(all)
}

fn endpoints(s: &ServerArg, scope: &Scope) -> Result<View, ExitCode> {
    let rows = all_endpoints(s, scope)?.into_iter().map(endpoint_row).collect();
    Ok(View {
        headers: vec!["SERVICE", "NAMESPACE", "ADDRESS", "LABELS", "HEALTH", "TTL LEFT", "SOURCE"],
        wide_headers: vec!["IDENTITY", "LOCALITY", "WEIGHT", "EJECTED BY"],
        rows,
    })
}

fn endpoint_row(e: Endpoint) -> Row {
    let ttl = e.ttl_left_ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
    // (Health is what the proxies' outlier detection says; none of them ejecting it
    // is no evidence that it is up.)
    let health = match e.ejected_by.len() {
        0 => "-".to_owned(),
        1 => "ejected by 1 proxy".to_owned(),
        n => format!("ejected by {n} proxies"),
    };
    let value = json!({
        "service": e.service, "namespace": e.namespace, "address": e.address, "labels": e.labels,
        "ttlLeftMs": e.ttl_left_ms, "ejectedBy": e.ejected_by, "identity": e.identity, "locality": e.locality, "weight": e.weight,
        "source": e.source,
    });
    let wide = vec![
        e.identity.clone().unwrap_or_else(|| "-".into()),
        e.locality.clone().unwrap_or_else(|| "-".into()),
        e.weight.map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
        if e.ejected_by.is_empty() { "-".into() } else { e.ejected_by.join("; ") },
    ];
    Row {
        name: format!("endpoint/{}/{}", e.service, e.address),
        cells: vec![e.service, e.namespace, e.address, pairs(&e.labels), health, ttl, e.source],
        value,
        wide,
    }
}

/// A service: its endpoints (registered or declared), ports, where it is known from, and
/// the control plane's recommendation.
#[derive(Default)]
struct Service {
    endpoints: usize,
    ports: Vec<String>,
    sources: Vec<String>,
    recommendation: Option<Recommendation>,
}

/// The control plane's recommendations by (namespace, service); none from one that
/// has no such API (an older control plane).
fn recommendations(s: &ServerArg) -> BTreeMap<(String, String), Recommendation> {
    let Ok((200, body)) = call(s, "GET", "/v1/recommendations", None) else { return BTreeMap::new() };
    let Ok(l) = <Listing<Recommendation> as weft_api::Message>::decode(&body) else { return BTreeMap::new() };
    l.items.into_iter().map(|r| ((r.namespace.clone(), r.service.clone()), r)).collect()
}

fn services(s: &ServerArg, scope: &Scope) -> Result<View, ExitCode> {
    let mut by: BTreeMap<(String, String), Service> = BTreeMap::new();
    for e in registered(s)?.into_iter().filter(|e| scope.holds(&e.namespace)) {
        let svc = by.entry((e.namespace, e.service)).or_default();
        svc.endpoints += 1;
        add(&mut svc.sources, e.source.clone());
        if let Some((_, port)) = e.address.rsplit_once(':') {
            add(&mut svc.ports, port.to_owned());
        }
    }
    for se in service_entries(s, scope)? {
        let ns = se["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        for h in se["spec"]["hosts"].as_array().into_iter().flatten() {
            let svc = by.entry((ns.clone(), text(h))).or_default();
            svc.endpoints += se["spec"]["endpoints"].as_array().map_or(0, Vec::len);
            add(&mut svc.sources, format!("ServiceEntry/{}", text(&se["metadata"]["name"])));
            for p in se["spec"]["ports"].as_array().into_iter().flatten() {
                add(&mut svc.ports, format!("{}/{}", text(&p["number"]), text(&p["protocol"])));
            }
        }
    }
    let mut recommended = recommendations(s);
    for (key, svc) in by.iter_mut() {
        svc.recommendation = recommended.remove(key);
    }
    let rows = by.into_iter().map(|((ns, name), svc)| service_row(ns, name, svc)).collect();
    Ok(View {
        headers: vec!["NAME", "NAMESPACE", "ENDPOINTS", "RECOMMENDED", "PORTS", "SOURCE"],
        wide_headers: vec!["CONCURRENCY", "TARGET"],
        rows,
    })
}

fn add(to: &mut Vec<String>, s: String) {
    if !to.contains(&s) {
        to.push(s);
    }
}

fn service_row(ns: String, name: String, s: Service) -> Row {
    let r = s.recommendation.as_ref();
    let (recommended, concurrency, target) =
        (r.and_then(|r| r.recommended), r.and_then(|r| r.concurrency), r.and_then(|r| r.target_concurrency));
    let value = json!({
        "name": name, "namespace": ns, "endpoints": s.endpoints, "ports": s.ports, "sources": s.sources,
        "recommended": recommended, "concurrency": concurrency, "targetConcurrency": target,
    });
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    Row {
        name: format!("service/{name}"),
        cells: vec![name, ns, s.endpoints.to_string(), dash(recommended.map(|n| n.to_string())), s.ports.join(","), s.sources.join(",")],
        value,
        wide: vec![dash(concurrency.map(|c| format!("{c:.2}"))), dash(target.map(|t| t.to_string()))],
    }
}

fn proxies(s: &ServerArg) -> Result<View, ExitCode> {
    let st = answer::<StatusAnswer>(call(s, "GET", "/v1/status", None))?;
    let rows = st.items.into_iter().map(proxy_row).collect();
    Ok(View { headers: vec!["NODE", "ACKED", "LAG", "LAST NACK"], wide_headers: vec!["CONNECTED", "LAST SEEN", "IDENTITY"], rows })
}

fn proxy_row(p: weft_api::ProxyStatus) -> Row {
    let nack = match (p.nacked, &p.nack_reason) {
        (Some(r), Some(why)) => format!("revision {r}: {why}"),
        _ => "-".into(),
    };
    let wide = vec![
        if p.connected { "yes" } else { "no" }.to_owned(),
        format!("{:.1}s ago", p.last_seen_ms_ago as f64 / 1000.0),
        p.identity.clone().unwrap_or_else(|| "-".into()),
    ];
    let cells = vec![p.node.clone(), p.acked.to_string(), p.lag.to_string(), nack];
    Row { name: format!("proxy/{}", p.node), value: serde_json::to_value(&p).unwrap_or(Value::Null), cells, wide }
}
