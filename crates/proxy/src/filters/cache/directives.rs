//! `Cache-Control` (RFC 9111 §5.2), parsed robustly: every line combined, quoted strings
//! honoured, numbers saturated, garbage ignored. Linear in the header's length.

use http::header::{CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

/// delta-seconds beyond 2^31 mean 2^31 (RFC 9111 §1.2.2): "forever" without overflow.
pub const DELTA_MAX: u64 = 1 << 31;

/// The directives weft acts on. A number that cannot be read (`max-age=abc`, `=-1`)
/// is 0 — "invalid freshness information is stale" (§4.2.1); a directive given twice
/// with different values is 0 too (§4.2.1 allows either the first or stale; stale
/// cannot serve what an origin did not mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// Also `no-cache="field"`: weft revalidates the whole response rather than
    /// stripping fields.
    pub no_cache: bool,
    /// Also `private="field"`: not stored at all (the same simplification).
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub no_transform: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub min_fresh: Option<u64>,
}

impl CacheControl {
    /// All `Cache-Control` lines of `headers`; for a request without one, `Pragma:
    /// no-cache` counts as `no-cache` (§5.4).
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut any = false;
        for v in headers.get_all(CACHE_CONTROL) {
            any = true;
            for (name, value) in directives(v.as_bytes()) {
                cc.apply(name, value);
            }
        }
        if !any {
            cc.no_cache =
                headers.get_all(PRAGMA).iter().any(|v| directives(v.as_bytes()).any(|(n, _)| n.eq_ignore_ascii_case(b"no-cache")));
        }
        cc
    }

    fn apply(&mut self, name: &[u8], value: Option<&[u8]>) {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let seconds = |slot: &mut Option<u64>| {
            let n = value.map_or(0, delta_seconds);
            *slot = match *slot {
                Some(old) if old != n => Some(0),
                _ => Some(n),
            };
        };
        if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            self.no_cache = true;
        } else if is("private") {
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("no-transform") {
            self.no_transform = true;
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        } else if is("max-age") {
            seconds(&mut self.max_age);
        } else if is("s-maxage") {
            seconds(&mut self.s_maxage);
        } else if is("min-fresh") {
            seconds(&mut self.min_fresh);
        }
    }
}

/// `1*DIGIT`, saturated at [`DELTA_MAX`]; anything else is 0 (stale).
fn delta_seconds(v: &[u8]) -> u64 {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    v.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0'))).map_or(DELTA_MAX, |n| n.min(DELTA_MAX))
}

/// `name[=value]` pairs of one header line; commas inside a quoted string do not split,
/// the quotes are removed from the value (escapes kept: weft only reads numbers and names).
fn directives(line: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut rest = line;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        let mut quoted = false;
        while end < rest.len() {
            match rest[end] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => end += 1,
                b',' if !quoted => break,
                _ => {}
            }
            end += 1;
        }
        let end = end.min(rest.len());
        let item = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        let item = item.trim_ascii();
        if item.is_empty() {
            continue;
        }
        return Some(match item.iter().position(|&b| b == b'=') {
            None => (item, None),
            Some(eq) => {
                let value = item[eq + 1..].trim_ascii();
                let value = value.strip_prefix(b"\"").map(|v| v.strip_suffix(b"\"").unwrap_or(v)).unwrap_or(value);
                (item[..eq].trim_ascii(), Some(value))
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        CacheControl::parse(&h)
    }

    #[test]
    fn directives_and_hostile_values() {
        let c = cc(&["public, max-age=60", "S-MAXAGE=120"]);
        assert!(c.public);
        assert_eq!((c.max_age, c.s_maxage), (Some(60), Some(120)));
        assert_eq!(cc(&["max-age=99999999999999999999"]).max_age, Some(DELTA_MAX));
        assert_eq!(cc(&["max-age=4294967296"]).max_age, Some(DELTA_MAX));
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=\"30\""]).max_age, Some(30));
        assert_eq!(cc(&["max-age=30, max-age=30"]).max_age, Some(30));
        assert_eq!(cc(&["max-age=30", "max-age=60"]).max_age, Some(0), "conflicting duplicates are stale");
        let c = cc(&["private=\"set-cookie, x-user\", no-cache=\"a,b\", max-age=5"]);
        assert!(c.private && c.no_cache);
        assert_eq!(c.max_age, Some(5), "the comma inside the quotes does not split");
        let c = cc(&[",,;;=, =5, \"unterminated, no-store"]);
        assert!(!c.no_store, "an unterminated quote swallows the rest");
        assert_eq!(cc(&["no-store,,garbage==,"]), CacheControl { no_store: true, ..Default::default() });
        assert!(cc(&["No-Cache"]).no_cache);
    }

    #[test]
    fn pragma_counts_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::parse(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::parse(&h).no_cache);
    }

    #[test]
    fn a_huge_header_is_linear() {
        let line = "max-age=1, ".repeat(6000) + &"\"".repeat(10_000);
        let t = std::time::Instant::now();
        let c = cc(&[&line]);
        assert_eq!(c.max_age, Some(1));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
