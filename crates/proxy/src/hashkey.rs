//! The consistent-hash key of a request (DestinationRule `consistentHash`).

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderValue, COOKIE};
use weft_balance::hash::hash64;
use weft_config::matcher::query_param;
use weft_config::HashKey;

/// The key's hash, and a `Set-Cookie` to send when the proxy generated the cookie.
pub fn hash_key(key: &HashKey, headers: &HeaderMap, query: Option<&str>, remote: SocketAddr) -> (Option<u64>, Option<HeaderValue>) {
    match key {
        HashKey::Header(name) => (headers.get(name.as_str()).map(|v| hash64(v.as_bytes())), None),
        HashKey::QueryParameter(name) => (query_param(query, name).map(|v| hash64(v.as_bytes())), None),
        HashKey::SourceIp => {
            let h = match remote.ip() {
                std::net::IpAddr::V4(ip) => hash64(&ip.octets()),
                std::net::IpAddr::V6(ip) => hash64(&ip.octets()),
            };
            (Some(h), None)
        }
        HashKey::Cookie { name, path, ttl } => {
            if let Some(v) = cookie(headers, name) {
                return (Some(hash64(v.as_bytes())), None);
            }
            // Envoy: with a ttl, an absent cookie is generated and set on the response,
            // so the client's next requests stick to the endpoint this one reaches.
            let Some(ttl) = ttl else { return (None, None) };
            let value = format!("{:016x}", fastrand::u64(..));
            let mut sc = format!("{name}=\"{value}\"");
            if let Some(p) = path {
                sc.push_str("; Path=");
                sc.push_str(p);
            }
            if !ttl.is_zero() {
                sc.push_str(&format!("; Max-Age={}", ttl.as_secs()));
            }
            sc.push_str("; HttpOnly");
            let quoted = format!("\"{value}\"");
            (Some(hash64(quoted.as_bytes())), HeaderValue::from_str(&sc).ok())
        }
    }
}

/// The value of cookie `name` across all `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cookie_hashes_like_the_echoed_one() {
        let key = HashKey::Cookie { name: "sticky".into(), path: Some("/".into()), ttl: Some(std::time::Duration::from_secs(60)) };
        let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (h1, set) = hash_key(&key, &HeaderMap::new(), None, remote);
        let set = set.unwrap();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut hm = HeaderMap::new();
        hm.insert(COOKIE, HeaderValue::from_str(&format!("a=b; {pair}")).unwrap());
        let (h2, again) = hash_key(&key, &hm, None, remote);
        assert_eq!(h1, h2);
        assert!(again.is_none());
        assert!(set.to_str().unwrap().contains("Max-Age=60"));
    }
}
