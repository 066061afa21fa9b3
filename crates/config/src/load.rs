//! Reading multi-document YAML files into typed resources, with field paths on
//! every error and a warning for every field weft does not know.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{humanize_serde, ConfigError, Diagnostics, Source};
use crate::istio::{DestinationRule, Metadata, ServiceEntry, VirtualService};

/// The API versions accepted for Istio's security kinds.
pub const SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];
pub const TELEMETRY_VERSIONS: [&str; 2] = ["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];

/// The API versions accepted for Istio's networking kinds.
pub const NETWORKING_VERSIONS: [&str; 3] = ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"];

/// One resource, as read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
    #[serde(skip)]
    pub source: Source,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // read once per config load, never on the request path
pub enum Spec {
    ServiceEntry(ServiceEntry),
    DestinationRule(DestinationRule),
    VirtualService(VirtualService),
    RateLimit(crate::weft_kinds::RateLimit),
    HealthCheck(crate::weft_kinds::HealthCheck),
    Hedging(crate::weft_kinds::Hedging),
    Sidecar(crate::istio::Sidecar),
    Compression(crate::weft_kinds::Compression),
    ResponseCache(crate::weft_kinds::ResponseCache),
    PeerAuthentication(crate::istio::PeerAuthentication),
    AuthorizationPolicy(weft_authz::spec::AuthorizationPolicy),
    RequestAuthentication(weft_authz::spec::RequestAuthentication),
    ExtensionProvider(weft_authz::spec::ExtensionProvider),
    WorkloadEntry(crate::istio::WorkloadEntry),
    Gateway(crate::istio::Gateway),
    Telemetry(crate::istio::Telemetry),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    #[allow(dead_code)]
    api_version: serde_json::Value,
    #[allow(dead_code)]
    kind: serde_json::Value,
    #[serde(default)]
    metadata: Metadata,
    spec: T,
    #[serde(default)]
    #[allow(dead_code)]
    status: serde_json::Value,
}

/// Reads every file; returns the resources and what was wrong with them.
pub fn load_files<P: AsRef<std::path::Path>>(paths: &[P]) -> (Vec<Resource>, Diagnostics) {
    let mut out = Vec::new();
    let mut diags = Diagnostics::default();
    for p in paths {
        let p = p.as_ref();
        let name = p.display().to_string();
        match std::fs::read_to_string(p) {
            Ok(text) => load_str(&name, &text, &mut out, &mut diags),
            Err(e) => diags.errors.push(ConfigError::new(&Source { file: name, doc: 0 }, None, None, "", format!("cannot read file: {e}"))),
        }
    }
    check_duplicates(&out, &mut diags);
    (out, diags)
}

/// Parses one file's text (multi-document YAML) into `out`.
pub fn load_str(file: &str, text: &str, out: &mut Vec<Resource>, diags: &mut Diagnostics) {
    // The parser's default budget (1,024 documents, 250,000 nodes, 1 M events) guards
    // against YAML bombs but refuses a large real mesh (10,000 services from a control
    // plane); limits that grow with the input keep the guard (aliases stay capped).
    let n = text.len();
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: (n / 32).max(1_024),
            max_nodes: (n / 4).max(250_000),
            max_events: (n / 2).max(1_000_000),
        },
    };
    let docs: Vec<serde_json::Value> = match serde_saphyr::from_multiple_with_options(text, options) {
        Ok(d) => d,
        Err(e) => {
            let src = Source { file: file.to_owned(), doc: 0 };
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid YAML").to_owned();
            diags.errors.push(ConfigError::new(&src, None, None, "", format!("invalid YAML: {first}")));
            return;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let src = Source { file: file.to_owned(), doc: i + 1 };
        if doc.is_null() {
            continue;
        }
        if let Some(r) = load_doc(&src, doc, diags) {
            out.push(r);
        }
    }
}

fn load_doc(src: &Source, doc: serde_json::Value, diags: &mut Diagnostics) -> Option<Resource> {
    let Some(obj) = doc.as_object() else {
        diags.errors.push(ConfigError::new(src, None, None, "", "a document must be a mapping with apiVersion, kind, metadata and spec"));
        return None;
    };
    let kind = obj.get("kind").and_then(|v| v.as_str()).map(str::to_owned);
    let api = obj.get("apiVersion").and_then(|v| v.as_str()).map(str::to_owned);
    // (Only for error messages: a 4 MiB name is not echoed back whole.)
    let name = obj.get("metadata").and_then(|m| m.get("name")).and_then(|v| v.as_str()).map(|n| crate::rules::cut(n, 64).to_owned());
    let Some(kind) = kind else {
        diags.errors.push(ConfigError::new(src, None, name.as_deref(), "kind", "missing field"));
        return None;
    };
    let Some(api) = api else {
        diags.errors.push(ConfigError::new(src, Some(&kind), name.as_deref(), "apiVersion", "missing field"));
        return None;
    };
    let known = matches!(
        kind.as_str(),
        "ServiceEntry"
            | "DestinationRule"
            | "VirtualService"
            | "RateLimit"
            | "HealthCheck"
            | "Hedging"
            | "Sidecar"
            | "Compression"
            | "ResponseCache"
            | "PeerAuthentication"
            | "AuthorizationPolicy"
            | "RequestAuthentication"
            | "ExtensionProvider"
            | "WorkloadEntry"
            | "Gateway"
            | "Telemetry"
    );
    if !known {
        diags.warnings.push(ConfigError::new(
            src,
            Some(&kind),
            name.as_deref(),
            "kind",
            format!("kind {kind} ({api}) is not served by this version of weft; ignored"),
        ));
        return None;
    }
    let versions: &[&str] =
        if matches!(kind.as_str(), "RateLimit" | "HealthCheck" | "Hedging" | "Compression" | "ResponseCache" | "ExtensionProvider") {
            &crate::weft_kinds::POLICY_VERSIONS
        } else if matches!(kind.as_str(), "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication") {
            &SECURITY_VERSIONS
        } else if kind == "Telemetry" {
            &TELEMETRY_VERSIONS
        } else {
            &NETWORKING_VERSIONS
        };
    if !versions.contains(&api.as_str()) {
        diags.errors.push(ConfigError::new(
            src,
            Some(&kind),
            name.as_deref(),
            "apiVersion",
            format!("unknown value \"{api}\" (expected one of {})", versions.join(", ")),
        ));
        return None;
    }
    if name.as_deref().unwrap_or("").is_empty() {
        diags.errors.push(ConfigError::new(src, Some(&kind), None, "metadata.name", "missing field"));
        return None;
    }
    let (meta, spec) = match kind.as_str() {
        "ServiceEntry" => typed::<ServiceEntry>(src, &kind, name.as_deref(), doc, diags).map(|(m, mut s)| {
            crate::istio::share_maps(&mut s.endpoints);
            (m, Spec::ServiceEntry(s))
        })?,
        "DestinationRule" => {
            typed::<DestinationRule>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::DestinationRule(s)))?
        }
        "Hedging" => typed::<crate::weft_kinds::Hedging>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::Hedging(s)))?,
        "HealthCheck" => {
            typed::<crate::weft_kinds::HealthCheck>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::HealthCheck(s)))?
        }
        "RateLimit" => {
            typed::<crate::weft_kinds::RateLimit>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::RateLimit(s)))?
        }
        "VirtualService" => typed::<VirtualService>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::VirtualService(s)))?,
        "Compression" => {
            typed::<crate::weft_kinds::Compression>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::Compression(s)))?
        }
        "ResponseCache" => {
            typed::<crate::weft_kinds::ResponseCache>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::ResponseCache(s)))?
        }
        "Sidecar" => typed::<crate::istio::Sidecar>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::Sidecar(s)))?,
        "PeerAuthentication" => typed::<crate::istio::PeerAuthentication>(src, &kind, name.as_deref(), doc, diags)
            .map(|(m, s)| (m, Spec::PeerAuthentication(s)))?,
        "AuthorizationPolicy" => typed::<weft_authz::spec::AuthorizationPolicy>(src, &kind, name.as_deref(), doc, diags)
            .map(|(m, s)| (m, Spec::AuthorizationPolicy(s)))?,
        "RequestAuthentication" => typed::<weft_authz::spec::RequestAuthentication>(src, &kind, name.as_deref(), doc, diags)
            .map(|(m, s)| (m, Spec::RequestAuthentication(s)))?,
        "ExtensionProvider" => typed::<weft_authz::spec::ExtensionProvider>(src, &kind, name.as_deref(), doc, diags)
            .map(|(m, s)| (m, Spec::ExtensionProvider(s)))?,
        "WorkloadEntry" => {
            typed::<crate::istio::WorkloadEntry>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::WorkloadEntry(s)))?
        }
        "Gateway" => typed::<crate::istio::Gateway>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::Gateway(s)))?,
        "Telemetry" => typed::<crate::istio::Telemetry>(src, &kind, name.as_deref(), doc, diags).map(|(m, s)| (m, Spec::Telemetry(s)))?,
        _ => return None,
    };
    // (Both become parts of the control plane's keys, `Kind/namespace/name`, and of
    // proxies' names for them: Kubernetes' rules, as Istio's API server applies them.)
    let checks = [
        ("metadata.name", Some(crate::rules::dns1123_subdomain(&meta.name))),
        ("metadata.namespace", meta.namespace.as_deref().map(crate::rules::dns1123_label)),
    ];
    let mut bad = false;
    for (field, check) in checks {
        if let Some(Err(e)) = check {
            diags.errors.push(ConfigError::new(src, Some(&kind), name.as_deref(), field, e));
            bad = true;
        }
    }
    if bad {
        return None;
    }
    Some(Resource { api_version: api, kind, metadata: meta, spec, source: src.clone() })
}

fn typed<T: DeserializeOwned>(
    src: &Source,
    kind: &str,
    name: Option<&str>,
    doc: serde_json::Value,
    diags: &mut Diagnostics,
) -> Option<(Metadata, T)> {
    let mut track = serde_path_to_error::Track::new();
    let mut unknown = Vec::new();
    let de = serde_path_to_error::Deserializer::new(doc, &mut track);
    let res: Result<Envelope<T>, _> = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()));
    for path in unknown {
        diags.warnings.push(ConfigError::new(src, Some(kind), name, path, "unknown field; ignored"));
    }
    match res {
        Ok(env) => Some((env.metadata, env.spec)),
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            diags.errors.push(ConfigError::new(src, Some(kind), name, path, humanize_serde(&e.to_string())));
            None
        }
    }
}

fn check_duplicates(res: &[Resource], diags: &mut Diagnostics) {
    let mut seen = std::collections::HashMap::new();
    for r in res {
        let key = (r.kind.as_str(), r.metadata.namespace.as_deref().unwrap_or(""), r.metadata.name.as_str());
        if let Some(first) = seen.insert(key, &r.source) {
            diags.errors.push(ConfigError::new(
                &r.source,
                Some(&r.kind),
                Some(&r.metadata.name),
                "metadata.name",
                format!("duplicate {} {:?} (first defined in {} document {})", r.kind, r.metadata.name, first.file, first.doc),
            ));
        }
    }
}
