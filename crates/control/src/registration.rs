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

/// Why proxies must not be sent to `ip` as an endpoint: no one host (unspecified,
/// multicast, broadcast), or link-local — where a cloud's metadata service answers
/// (169.254.169.254): a registration must not turn every proxy into a way to it.
fn unroutable(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        _ if ip.is_unspecified() => Some("an unspecified address (0.0.0.0, ::) is no endpoint"),
        _ if ip.is_multicast() => Some("a multicast address is no endpoint"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address is no endpoint"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local addresses (169.254.0.0/16: cloud metadata) are refused"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local addresses (fe80::/10) are refused"),
        _ => None,
    }
}

/// Every rule `r` breaks, each naming its field.
pub fn check(r: &Registration) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = rules::dns1123_subdomain(&r.service) {
        errors.push(format!("service: {e}"));
    }
    match rules::host_port(&r.address) {
        Err(e) => errors.push(format!("address: {e}")),
        Ok((host, _)) => {
            if let Some(why) = host.parse::<std::net::IpAddr>().ok().and_then(unroutable) {
                errors.push(format!("address: {}: {why}", weft_config::rules::shown(&r.address)));
            }
        }
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
        let cases: [(&str, Edit); 14] = [
            ("address:", Box::new(|r| r.address = "not an ip:80".into())),
            ("address:", Box::new(|r| r.address = "127.0.0.1:0".into())),
            ("address: \"0.0.0.0:80\": an unspecified", Box::new(|r| r.address = "0.0.0.0:80".into())),
            ("address: \"[::]:80\": an unspecified", Box::new(|r| r.address = "[::]:80".into())),
            ("address: \"169.254.169.254:80\": link-local", Box::new(|r| r.address = "169.254.169.254:80".into())),
            ("address: \"[::ffff:169.254.169.254]:80\": link-local", Box::new(|r| r.address = "[::ffff:169.254.169.254]:80".into())),
            ("address: \"[fe80::1]:80\": link-local", Box::new(|r| r.address = "[fe80::1]:80".into())),
            ("address: \"224.0.0.1:80\": a multicast", Box::new(|r| r.address = "224.0.0.1:80".into())),
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
