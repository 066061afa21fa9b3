//! The rules a name, label, address or weight must pass wherever it enters weft: a file
//! given to `weft validate` or the proxy, a `weft apply`, and a `weft register` (the
//! control plane calls these same functions before it stores anything, so whatever a
//! proxy later compiles has passed them). Each returns the reason, to be shown after
//! the field's path.

/// Kubernetes' cap on a DNS-1123 label (a namespace, a label's name part).
pub const MAX_LABEL: usize = 63;
/// Kubernetes' cap on a DNS-1123 subdomain (a resource name, a host).
pub const MAX_SUBDOMAIN: usize = 253;
/// Istio's range for an endpoint weight is the `uint32` one (the CRD's `minimum: 0,
/// maximum: 4294967295`; 0 means 1); Envoy then refuses a locality whose endpoints'
/// weights add up to more than 4294967295, so weft refuses that sum per ServiceEntry.
pub const MAX_WEIGHT_SUM: u64 = u32::MAX as u64;
/// Envoy's largest Maglev table (`tableSize` must be a prime at most this).
pub const MAX_MAGLEV_TABLE: u64 = weft_balance::MAGLEV_MAX_TABLE;
/// Envoy's `maximumRingSize` default: ring hash `minimumRingSize` is at most this, and
/// the ring never holds more points, whatever the weights.
pub const MAX_RING_SIZE: u64 = weft_balance::MAX_RING;
/// How many labels an endpoint or a registration may carry.
pub const MAX_LABELS: usize = 64;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` shown in an error: quoted, cut to 64 bytes (a 4 MiB name is not echoed back).
pub fn shown(s: &str) -> String {
    let c = cut(s, 64);
    if c.len() < s.len() {
        format!("{c:?}… ({} bytes)", s.len())
    } else {
        format!("{s:?}")
    }
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS-1123 label (a namespace): 1 to 63 of `a-z`, `0-9`, `-`, starting and ending
/// with a letter or digit.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > MAX_LABEL || !label_chars(s) {
        return Err(format!(
            "{} is not a DNS-1123 label (1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
            shown(s)
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain (a resource name, a service): at most 253 bytes of DNS-1123
/// labels joined by dots.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_SUBDOMAIN || !s.split('.').all(|l| l.len() <= MAX_LABEL && label_chars(l)) {
        return Err(format!("{} is not a DNS-1123 subdomain (at most 253 bytes of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit)", shown(s)));
    }
    Ok(())
}

/// A DNS name as a host (upper case allowed, it is folded): a subdomain once lower-cased.
pub fn dns_name(s: &str) -> Result<(), String> {
    dns1123_subdomain(&s.to_ascii_lowercase()).map_err(|_| format!("{} is neither an IP address nor a DNS name", shown(s)))
}

fn label_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name
/// 1 to 63 of letters, digits, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn label_key(k: &str) -> Result<(), String> {
    let ok = match k.rsplit_once('/') {
        Some((prefix, name)) => dns1123_subdomain(prefix).is_ok() && label_name_part(name),
        None => label_name_part(k),
    };
    if !ok {
        return Err(format!(
            "key {} is not a Kubernetes label key ([prefix/]name, the name 1 to 63 of letters, digits, '-', '_', '.')",
            shown(k)
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or as a label key's name part.
pub fn label_value(v: &str) -> Result<(), String> {
    if !v.is_empty() && !label_name_part(v) {
        return Err(format!("value {} is not a Kubernetes label value (at most 63 of letters, digits, '-', '_', '.')", shown(v)));
    }
    Ok(())
}

/// A map of labels: at most [`MAX_LABELS`], each key and value by Kubernetes' rules;
/// the errors as (key, reason).
pub fn labels<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (i, (k, v)) in map.into_iter().enumerate() {
        if i == MAX_LABELS {
            errs.push((String::new(), format!("more than {MAX_LABELS} labels")));
            break;
        }
        if let Err(e) = label_key(k).and_then(|_| label_value(v)) {
            errs.push((crate::rules::shown(k), e));
        }
    }
    errs
}

/// A locality, `region[/zone[/subzone]]`: at most 253 bytes, three parts, no spaces or
/// control characters.
pub fn locality(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok =
        s.len() <= MAX_SUBDOMAIN && parts.len() <= 3 && !parts[0].is_empty() && !s.chars().any(|c| c.is_control() || c.is_whitespace());
    if !ok {
        return Err(format!("{} is not region/zone/subzone (at most 253 bytes, no spaces)", shown(s)));
    }
    Ok(())
}

/// An endpoint's host: an IP address or a DNS name.
pub fn host(s: &str) -> Result<(), String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    dns_name(s)
}

/// A port name: a DNS-1123 label (Istio's rule).
pub fn port_name(s: &str) -> Result<(), String> {
    dns1123_label(s).map_err(|_| format!("{} is not a port name (a DNS-1123 label: 1 to 63 of a-z, 0-9 and '-')", shown(s)))
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `fd00::/64`).
pub fn ip_or_cidr(s: &str) -> Result<(), String> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (s, None),
    };
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return Err(format!("{} is not an IP address or CIDR block", shown(s)));
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match bits.map(|b| b.parse::<u8>()) {
        None => Ok(()),
        Some(Ok(b)) if b <= max => Ok(()),
        _ => Err(format!("{}: the prefix length must be 0 to {max}", shown(s))),
    }
}

/// `host:port` (`[v6]:port` for IPv6): the host by [`host`], the port 1 to 65535.
pub fn host_port(s: &str) -> Result<(String, u16), String> {
    let Some((h, p)) = s.rsplit_once(':') else {
        return Err(format!("{} is not host:port", shown(s)));
    };
    let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{}: the port must be 1 to 65535", shown(s)))?;
    let h = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
        Some(_) => return Err(format!("{}: [..] must hold an IPv6 address", shown(s))),
        None if h.contains(':') => return Err(format!("{}: write an IPv6 address as [addr]:port", shown(s))),
        None => h,
    };
    host(h).map_err(|e| format!("{}: {e}", shown(s)))?;
    Ok((h.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("shop-1").is_ok());
        for bad in ["", "../../x", "a\nb", "Shop", "-a", "a.b", &"a".repeat(64), &"a".repeat(4 << 20)] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns1123_subdomain("reviews.shop.svc.cluster.local").is_ok());
        for bad in ["", "a..b", ".a", "a/b", "a_b", &"a.".repeat(130)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        let e = dns1123_label(&"x".repeat(4 << 20)).unwrap_err();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn label_rules() {
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("version").is_ok());
        assert!(label_value("").is_ok() && label_value("v1.2_a").is_ok());
        for bad in ["", "a\nb", "/x", "x/", "-a", &"k".repeat(64), "Bad_/x"] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        for bad in ["a\nb", "a b", &"v".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(host_port("127.0.0.1:80").unwrap(), ("127.0.0.1".into(), 80));
        assert_eq!(host_port("[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert!(host_port("backend.shop:9000").is_ok());
        for bad in ["not an ip:80", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4", "::1:80", "[x]:80", "a/b:80", "a\n:80"] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }
}
