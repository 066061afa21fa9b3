//! The two ZooKeeper layouts weft reads, parsed without I/O: Apache Curator's service
//! discovery (`<root>/NAME/ID` → instance JSON) and Dubbo's providers
//! (`/dubbo/<interface>/providers/<URL-encoded URL>`). Each node becomes one
//! [`Registration`] labelled `weft.io/source: zookeeper`, or an error saying why it
//! is skipped (malformed JSON, a bad port, a name weft's rules refuse).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use weft_api::Registration;
use weft_config::rules;

/// The label that marks an endpoint as ZooKeeper's (the registry has no `source`
/// field): `weft register` may not set it, nor replace or remove such an endpoint.
pub const SOURCE_LABEL: &str = "weft.io/source";
pub const SOURCE: &str = "zookeeper";

/// The namespace ZooKeeper's services are put in.
const NAMESPACE: &str = "default";

/// The fields of Curator's `ServiceInstance` weft uses (the rest — `id`, `sslPort`,
/// `registrationTimeUTC`, `serviceType`, `uriSpec` — are ignored).
#[derive(Deserialize)]
struct Instance {
    address: String,
    port: Option<i64>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// Curator's instance `data` under service `name`.
pub fn curator(name: &str, data: &[u8]) -> Result<Registration, String> {
    let inst: Instance = serde_json::from_slice(data).map_err(|e| format!("malformed instance JSON: {e}"))?;
    let port = inst.port.ok_or("no port")?;
    let mut labels = payload_labels(inst.payload.as_ref());
    labels.insert(SOURCE_LABEL.into(), SOURCE.into());
    registration(name, &inst.address, port, labels)
}

/// The string labels of a payload's `metadata` object (Spring Cloud ZooKeeper's
/// `ZookeeperInstance`) that pass weft's label rules; others are dropped.
fn payload_labels(payload: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    let Some(meta) = payload.and_then(|p| p.get("metadata")).and_then(|m| m.as_object()) else { return BTreeMap::new() };
    meta.iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .filter(|(k, v)| k != SOURCE_LABEL && rules::label_key(k).is_ok() && rules::label_value(v).is_ok())
        .take(rules::MAX_LABELS - 1)
        .collect()
}

/// A Dubbo provider: `child` is the URL-encoded URL under `/dubbo/<interface>/providers`.
/// A `version`, `group` or `application` that is no label value (a `*` group) is dropped.
pub fn dubbo(interface: &str, child: &str) -> Result<Registration, String> {
    let url = percent_decode(child).ok_or("not a URL-encoded URL")?;
    let (_, rest) = url.split_once("://").ok_or("no scheme")?;
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let (host, port) = split_host_port(authority).ok_or("no host:port")?;
    let port: i64 = port.parse().map_err(|_| format!("bad port {:?}", rules::cut(port, 32)))?;
    let mut labels: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| matches!(*k, "version" | "group" | "application") && rules::label_value(v).is_ok())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    labels.insert(SOURCE_LABEL.into(), SOURCE.into());
    registration(&dubbo_service(interface), host, port, labels)
}

/// A Dubbo interface's service name: lower case, every character but letters and
/// digits a dash (`com.foo.DemoService` → `com-foo-demoservice`).
pub fn dubbo_service(interface: &str) -> String {
    let s: String = interface.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.trim_matches('-').to_owned()
}

/// `host:port` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    s.rsplit_once(':')
}

/// `%XX` decoding (and `+` as a space, as Java's `URLEncoder` writes it); `None` on a
/// bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The registration of `address:port` in service `name` (namespace `default`),
/// checked by the registry's own rules. The address must be an IP: the registry's
/// ServiceEntries are STATIC.
fn registration(name: &str, address: &str, port: i64, labels: BTreeMap<String, String>) -> Result<Registration, String> {
    let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| format!("bad port {port}"))?;
    let ip: IpAddr = address.parse().map_err(|_| format!("address {:?} is not an IP", rules::cut(address, 64)))?;
    let (service, namespace) = crate::registration::canonical(name, Some(NAMESPACE), None)?;
    let r = Registration {
        service,
        namespace: Some(namespace),
        address: std::net::SocketAddr::new(ip, port).to_string(),
        labels,
        locality: None,
        weight: None,
        ttl_ms: None,
        identity: None,
    };
    match crate::registration::check(&r).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// Whether a stored registration came from ZooKeeper.
pub fn is_zookeeper(r: &serde_json::Value) -> bool {
    r["labels"][SOURCE_LABEL] == SOURCE
}

#[cfg(test)]
mod tests;
