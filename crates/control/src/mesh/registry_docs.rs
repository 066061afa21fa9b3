//! The documents made from the registry: a registered service's own ServiceEntry, and a
//! declared ServiceEntry with its registered endpoints merged in.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use weft_api::Registration;

use super::declared_hosts;

/// Appends the registered endpoints of a ServiceEntry's hosts to it.
pub(crate) fn merge_endpoints<'a>(se: &mut Value, regs_of: impl Fn(&str) -> Vec<Registration> + 'a) {
    let port_name = se["spec"]["ports"][0]["name"].as_str().unwrap_or("http").to_owned();
    for h in declared_hosts(se) {
        let regs = regs_of(&h);
        let mut sans: BTreeSet<String> =
            se["spec"]["subjectAltNames"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        sans.extend(identities(&regs));
        if !sans.is_empty() {
            se["spec"]["subjectAltNames"] = json!(sans);
        }
        for r in regs {
            let ep = endpoint_doc(&r, &port_name);
            if let Some(eps) = se["spec"]["endpoints"].as_array_mut() {
                eps.push(ep);
            } else {
                se["spec"]["endpoints"] = json!([ep]);
            }
        }
    }
}

fn endpoint_doc(r: &Registration, port_name: &str) -> Value {
    let (host, port) = r.address.rsplit_once(':').unwrap_or((&r.address, "80"));
    let mut ep =
        json!({"address": host.trim_start_matches('[').trim_end_matches(']'), "ports": {port_name: port.parse::<u16>().unwrap_or(80)}});
    let mut labels = r.labels.clone();
    if r.identity.is_some() {
        labels.insert(TLS_MODE_LABEL.into(), "istio".into());
    }
    if !labels.is_empty() {
        ep["labels"] = json!(labels);
    }
    if let Some(l) = &r.locality {
        ep["locality"] = json!(l);
    }
    if let Some(w) = r.weight {
        ep["weight"] = json!(w);
    }
    ep
}

/// A ServiceEntry for a registered service: port 80 `http`, the endpoints' own ports.
pub fn registration_doc(service: &str, regs: &[Registration]) -> Value {
    // (A short name's registrations are stored by FQDN; a literal host's namespace is
    // the one it was registered in.)
    let namespace = weft_config::names::service_parts(service)
        .map(|(_, ns)| ns)
        .or_else(|| regs.iter().find_map(|r| r.namespace.as_deref()))
        .unwrap_or("default");
    let mut doc = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": format!("registry.{service}"), "namespace": namespace},
        "spec": {
            "hosts": [service],
            "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": regs.iter().map(|r| endpoint_doc(r, "http")).collect::<Vec<_>>(),
        }
    });
    let sans = identities(regs);
    if !sans.is_empty() {
        doc["spec"]["subjectAltNames"] = json!(sans);
    }
    doc
}

/// The identities of the workloads that registered `regs`, for a ServiceEntry's
/// `subjectAltNames` (what a proxy expects its mTLS peers to prove).
fn identities(regs: &[Registration]) -> Vec<String> {
    let set: BTreeSet<&String> = regs.iter().filter_map(|r| r.identity.as_ref()).collect();
    set.into_iter().cloned().collect()
}

/// Istio's endpoint label for an endpoint that speaks mTLS (auto mTLS picks it).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
