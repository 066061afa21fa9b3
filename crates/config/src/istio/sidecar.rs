//! Istio's `Sidecar`: the hosts a proxy needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Istio's `Sidecar`: which hosts a proxy needs (`egress[].hosts`, `namespace/host`).
/// The control plane sends a proxy only those; a proxy reading files ignores it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<SidecarSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<SidecarEgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SidecarSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SidecarEgress {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

impl Sidecar {
    /// Whether `egress` takes in `host` of a resource in namespace `ns`, for a proxy in
    /// namespace `me` (`*/h`, `./h`, `ns/h`; `h` exact, `*` or `*.suffix`).
    pub fn admits(&self, me: &str, ns: &str, host: &str) -> bool {
        self.egress.iter().flat_map(|e| &e.hosts).any(|entry| {
            let (ens, eh) = entry.split_once('/').unwrap_or(("*", entry.as_str()));
            let ns_ok = ens == "*" || (ens == "." && ns == me) || ens == ns;
            let host = host.to_ascii_lowercase();
            let h_ok = eh == "*"
                || eh.strip_prefix('*').is_some_and(|suffix| host.ends_with(&suffix.to_ascii_lowercase()))
                || eh.eq_ignore_ascii_case(&host);
            ns_ok && h_ok
        })
    }
}
