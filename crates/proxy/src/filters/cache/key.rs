//! Cache keys: the primary key (§4: the target URI; GET and HEAD share it, so a HEAD is
//! answered from a stored GET) and the secondary key from `Vary` (§4.1).

use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// More `Vary` names than this and the response is not stored: keying on them would
/// cost every lookup that much work for a response that will hardly ever match.
pub const MAX_VARY_NAMES: usize = 16;

/// The primary key: lower-case authority (port included when given), then path and
/// query exactly as sent. The scheme is left out: one virtual host, one cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrimaryKey(Box<str>);

impl PrimaryKey {
    pub fn new(authority: &str, uri: &Uri) -> PrimaryKey {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut k = String::with_capacity(authority.len() + pq.len());
        k.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
        k.push_str(pq);
        PrimaryKey(k.into_boxed_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The request's values of the header names a response varies on, as stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaryValues(Vec<(HeaderName, Option<Vec<u8>>)>);

impl VaryValues {
    /// `names` read from the request: several lines of one header combined with ", "
    /// and surrounding spaces trimmed (§4.1's normalisation, no more).
    pub fn capture(names: &[HeaderName], req: &HeaderMap) -> VaryValues {
        VaryValues(names.iter().map(|n| (n.clone(), combined(req, n))).collect())
    }

    /// Whether `req` selects the response stored with these values.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.0.iter().all(|(n, v)| combined(req, n) == *v)
    }

    /// Bytes held, for the store's weigher.
    pub fn weight(&self) -> usize {
        self.0.iter().map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Vec::len)).sum()
    }
}

fn combined(req: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in req.get_all(name) {
        let buf = out.get_or_insert_with(Vec::new);
        if !buf.is_empty() {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(v.as_bytes().trim_ascii());
    }
    out
}

/// The header names of the response's `Vary` (lower-case, deduplicated), empty when it
/// has none; `None` when the response can never be selected again: `Vary: *`, a name
/// that is not a header name, or more than [`MAX_VARY_NAMES`]. Stops reading at the
/// first name past the limit, so a hostile `Vary` costs little.
pub fn vary_names(resp: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for v in resp.get_all(VARY) {
        for t in v.as_bytes().split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.is_empty() {
                continue;
            }
            if t == b"*" {
                return None;
            }
            let n = HeaderName::from_bytes(t).ok()?;
            if !names.contains(&n) {
                if names.len() == MAX_VARY_NAMES {
                    return None;
                }
                names.push(n);
            }
        }
    }
    Some(names)
}

/// `Vary` as a value, for tests and for building responses.
pub fn vary_value(names: &[HeaderName]) -> Option<HeaderValue> {
    HeaderValue::from_str(&names.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn primary_key() {
        let a = PrimaryKey::new("API.example:8080", &"/a/b?x=1&y=2".parse().unwrap());
        assert_eq!(a.as_str(), "api.example:8080/a/b?x=1&y=2");
        let b = PrimaryKey::new("api.example:8080", &"http://ignored/a/b?x=1&y=2".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, PrimaryKey::new("api.example:8080", &"/a/b?y=2&x=1".parse().unwrap()));
        assert_eq!(PrimaryKey::new("h", &"*".parse().unwrap()).as_str(), "h*");
    }

    #[test]
    fn vary_selects_by_request_values() {
        let names = vary_names(&h(&[("vary", "Accept-Encoding, accept-encoding"), ("vary", "X-Tenant")])).unwrap();
        assert_eq!(names.len(), 2);
        let stored = VaryValues::capture(&names, &h(&[("accept-encoding", "gzip"), ("x-tenant", "a")]));
        assert!(stored.matches(&h(&[("accept-encoding", " gzip "), ("x-tenant", "a")])));
        assert!(!stored.matches(&h(&[("accept-encoding", "br"), ("x-tenant", "a")])));
        assert!(!stored.matches(&h(&[("x-tenant", "a")])), "absent is not empty");
        let absent = VaryValues::capture(&names, &h(&[]));
        assert!(absent.matches(&h(&[])));
        let two = VaryValues::capture(&names, &h(&[("x-tenant", "a"), ("x-tenant", "b")]));
        assert!(two.matches(&h(&[("x-tenant", "a, b")])));
        assert_eq!(vary_names(&h(&[])), Some(vec![]));
    }

    #[test]
    fn hostile_vary() {
        assert_eq!(vary_names(&h(&[("vary", "origin, *")])), None);
        assert_eq!(vary_names(&h(&[("vary", "bad name")])), None);
        let many: String = (0..1000).map(|i| format!("x-h{i}")).collect::<Vec<_>>().join(", ");
        let t = std::time::Instant::now();
        assert_eq!(vary_names(&h(&[("vary", &many)])), None);
        let dup = vec!["origin"; 10_000].join(",");
        assert_eq!(vary_names(&h(&[("vary", &dup)])).map(|n| n.len()), Some(1));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
