//! The rules a registration passes before it is stored (`weft register`), so that the
//! ServiceEntry the mesh makes of it compiles: each field by the config's own rules
//! (`weft_config::rules`), then the service's whole document compiled (see
//! `Plane::register`).

use weft_api::Registration;
use weft_config::rules;

/// The shortest and longest TTL a registration may ask for (ms): without a heartbeat
/// for this long it is removed. (A TTL of 2^64-1 ms once wrapped and expired at once.)
pub const MIN_TTL_MS: u64 = 100;
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// The service a registry call names, as stored, and its namespace: a short name
/// (`reviews`) is the Kubernetes-style service of its namespace, stored as the FQDN
/// `reviews.<ns>.svc.cluster.local`; a name with dots is a host, taken literally. The
/// namespace is a workload's own (asking for another is refused), else the one asked,
/// else `default`.
pub fn canonical(service: &str, asked: Option<&str>, workload: Option<&str>) -> Result<(String, String), String> {
    let ns = match (asked, workload) {
        (Some(a), Some(w)) if a != w => {
            return Err(format!("namespace: workload of namespace {w:?} may not register in {:?}", weft_api::truncate(a, 64)))
        }
        (_, Some(w)) => w,
        (Some(a), None) => a,
        (None, None) => "default",
    };
    if let Err(e) = rules::dns1123_label(ns) {
        return Err(format!("namespace: {e}"));
    }
    // (Hosts are case-insensitive: a service is kept as its lower-case name.)
    let service = service.to_ascii_lowercase();
    if let Err(e) = rules::dns1123_subdomain(&service) {
        return Err(format!("service: {e}"));
    }
    Ok((weft_config::names::resolve(&service, ns), ns.to_owned()))
}

/// Every rule `r` breaks, each naming its field.
pub fn check(r: &Registration) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = rules::dns1123_subdomain(&r.service) {
        errors.push(format!("service: {e}"));
    }
    if let Err(e) = rules::host_port(&r.address) {
        errors.push(format!("address: {e}"));
    }
    for (k, e) in rules::labels(&r.labels) {
        errors.push(format!("labels[{k}]: {e}"));
    }
    if let Some(Err(e)) = r.locality.as_deref().map(rules::locality) {
        errors.push(format!("locality: {e}"));
    }
    if let Some(t) = r.ttl_ms.filter(|t| !(MIN_TTL_MS..=MAX_TTL_MS).contains(t)) {
        errors.push(format!("ttlMs: {t} is out of range {MIN_TTL_MS}..={MAX_TTL_MS} (100 ms to 24 h)"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(f: impl FnOnce(&mut Registration)) -> Vec<String> {
        let mut r = Registration {
            service: "ratings".into(),
            address: "127.0.0.1:9000".into(),
            labels: Default::default(),
            locality: None,
            weight: None,
            ttl_ms: Some(1000),
            identity: None,
            namespace: None,
        };
        f(&mut r);
        check(&r)
    }

    #[test]
    fn hostile_registrations_are_refused_naming_the_field() {
        assert!(reg(|_| {}).is_empty());
        type Edit = Box<dyn FnOnce(&mut Registration)>;
        let cases: [(&str, Edit); 8] = [
            ("address:", Box::new(|r| r.address = "not an ip:80".into())),
            ("address:", Box::new(|r| r.address = "127.0.0.1:0".into())),
            ("service:", Box::new(|r| r.service = "../../x".into())),
            ("labels[", Box::new(|r| _ = r.labels.insert("app".into(), "a\nb".into()))),
            ("labels[", Box::new(|r| _ = r.labels.insert("k".repeat(4 << 20), "v".into()))),
            ("locality:", Box::new(|r| r.locality = Some("r1\n/z".into()))),
            ("ttlMs:", Box::new(|r| r.ttl_ms = Some(u64::MAX))),
            ("ttlMs:", Box::new(|r| r.ttl_ms = Some(0))),
        ];
        for (field, f) in cases {
            let e = reg(f);
            assert!(e.len() == 1 && e[0].starts_with(field) && e[0].len() < 400, "{field}: {e:?}");
        }
    }
}
