//! The value matchers a policy compiles into: Istio's string forms (exact, `prefix*`,
//! `*suffix`, `*` for any non-empty value), path templates (`{*}` one segment, `{**}`
//! any number, last), CIDR blocks and ports. Matching allocates nothing.

use std::net::IpAddr;

/// Istio's string match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: present and not empty.
    Any,
}

impl StrMatch {
    /// Parses `v` (an error names what is wrong with it).
    pub fn parse(v: &str) -> Result<StrMatch, String> {
        if v == "*" {
            return Ok(StrMatch::Any);
        }
        let m = if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.to_owned())
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.to_owned())
        } else {
            StrMatch::Exact(v.to_owned())
        };
        match &m {
            StrMatch::Exact(s) | StrMatch::Prefix(s) | StrMatch::Suffix(s) if s.contains('*') => {
                Err(format!("{v:?}: `*` may only start or end a value (prefix*, *suffix, or * alone)"))
            }
            _ if v.is_empty() => Err("empty value".into()),
            _ => Ok(m),
        }
    }

    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(s) => v == s,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Suffix(s) => v.ends_with(s.as_str()),
            StrMatch::Any => !v.is_empty(),
        }
    }

    /// The same, ASCII case-insensitively (hosts).
    #[inline]
    pub fn matches_ignore_case(&self, v: &str) -> bool {
        let (v, b) = (v.as_bytes(), |s: &str| s.len());
        match self {
            StrMatch::Exact(s) => v.eq_ignore_ascii_case(s.as_bytes()),
            StrMatch::Prefix(p) => v.len() >= b(p) && v[..b(p)].eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Suffix(s) => v.len() >= b(s) && v[v.len() - b(s)..].eq_ignore_ascii_case(s.as_bytes()),
            StrMatch::Any => !v.is_empty(),
        }
    }
}

/// A `hosts` value: the host (case-insensitive string match) and, after a `:`, the port
/// the client named (`*`: any). Without a port the host matches whatever port the
/// client named — unlike Envoy, where `example.com` misses `example.com:8080`, so that a
/// DENY on a host cannot be dodged by spelling the port out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch {
    host: StrMatch,
    port: Option<u16>,
}

impl HostMatch {
    pub fn parse(v: &str) -> Result<HostMatch, String> {
        let (h, port) = match v.rsplit_once(':') {
            Some((h, "*")) if !h.is_empty() => (h, None),
            Some((h, p)) if !h.is_empty() => (h, Some(parse_port(p)?)),
            _ => (v, None),
        };
        Ok(HostMatch { host: StrMatch::parse(h)?, port })
    }

    /// `host` (lower case, no port) and the port the client named (`None`: none).
    #[inline]
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host.matches_ignore_case(host) && self.port.is_none_or(|p| port == Some(p))
    }
}

/// A path value: a string match, or a template of whole segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Str(StrMatch),
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{*}`: exactly one segment.
    One,
    /// `{**}`: any number of segments (the last operator: only literal segments may
    /// follow it, matched at the path's end).
    Rest,
}

impl PathMatch {
    pub fn parse(v: &str) -> Result<PathMatch, String> {
        if !v.contains('{') && !v.contains('}') {
            return StrMatch::parse(v).map(PathMatch::Str);
        }
        if !v.starts_with('/') {
            return Err(format!("{v:?}: a path template starts with /"));
        }
        if v.contains('*') && (v.starts_with('*') || v.ends_with('*') && !v.ends_with("}")) {
            return Err(format!("{v:?}: a path template cannot be combined with prefix* or *suffix"));
        }
        let mut segs = Vec::new();
        let mut rest_seen = false;
        for s in v[1..].split('/') {
            let seg = match s {
                "{*}" | "{**}" if rest_seen => return Err(format!("{v:?}: {{**}} must be the last operator")),
                "{*}" => Segment::One,
                "{**}" => {
                    rest_seen = true;
                    Segment::Rest
                }
                s if s.contains('{') || s.contains('}') || s.contains('*') => {
                    return Err(format!("{v:?}: {{*}} and {{**}} must each be a whole segment"))
                }
                s => Segment::Literal(s.to_owned()),
            };
            segs.push(seg);
        }
        Ok(PathMatch::Template(segs))
    }

    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else { return false };
                if let Some(k) = segs.iter().position(|s| *s == Segment::Rest) {
                    return matches_around_rest(&segs[..k], &segs[k + 1..], rest);
                }
                let mut parts = rest.split('/');
                for s in segs {
                    match s {
                        Segment::Rest => return true,
                        Segment::One => match parts.next() {
                            Some(p) if !p.is_empty() => {}
                            _ => return false,
                        },
                        Segment::Literal(l) => {
                            if parts.next() != Some(l.as_str()) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// A template with `{**}` against a path (its leading `/` cut): `head` matched from the
/// start, the literal `tail` from the end, and `{**}` takes what is between (zero or
/// more segments). Allocation-free.
fn matches_around_rest(head: &[Segment], tail: &[Segment], path: &str) -> bool {
    let mut rest = Some(path);
    for s in head {
        let Some(r) = rest else { return false };
        let (seg, next) = match r.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (r, None),
        };
        let ok = match s {
            Segment::One => !seg.is_empty(),
            Segment::Literal(l) => seg == l,
            Segment::Rest => false,
        };
        if !ok {
            return false;
        }
        rest = next;
    }
    for s in tail.iter().rev() {
        let (Some(r), Segment::Literal(l)) = (rest, s) else { return false };
        let (before, seg) = match r.rsplit_once('/') {
            Some((a, b)) => (Some(a), b),
            None => (None, r),
        };
        if seg != l {
            return false;
        }
        rest = before;
    }
    true
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(v: &str) -> Result<Cidr, String> {
        let (a, p) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{v:?} is no IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{v:?}: the prefix length is 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        // (An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.)
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A port value (`"8080"`).
pub fn parse_port(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(p) if !v.starts_with('+') => Ok(p),
        _ => Err(format!("{v:?} is no port (0 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_string_forms() {
        let m = |p: &str, v: &str| StrMatch::parse(p).unwrap().matches(v);
        assert!(m("/info", "/info") && !m("/info", "/info/"));
        assert!(m("/api/*", "/api/x") && m("/api/*", "/api/") && !m("/api/*", "/ap"));
        assert!(m("*.html", "/a.html") && !m("*.html", "/a.htm"));
        assert!(m("*", "x") && !m("*", ""));
        assert!(StrMatch::parse("/a*b").is_err() && StrMatch::parse("").is_err() && StrMatch::parse("**").is_err());
        assert!(StrMatch::parse("*.EXAMPLE.com").unwrap().matches_ignore_case("www.example.COM"));
        assert!(!StrMatch::parse("example.com").unwrap().matches_ignore_case("example.co"));
    }

    #[test]
    fn path_templates() {
        let m = |p: &str, v: &str| PathMatch::parse(p).unwrap().matches(v);
        assert!(m("/foo/{*}/bar", "/foo/x/bar") && !m("/foo/{*}/bar", "/foo/x/y/bar") && !m("/foo/{*}/bar", "/foo//bar"));
        assert!(m("/foo/{**}", "/foo/a/b/c") && m("/foo/{**}", "/foo") && !m("/foo/{**}", "/food"));
        assert!(m("/{*}", "/x") && !m("/{*}", "/x/y"));
        // Literal segments may follow {**} (Istio's rule: no operator after it).
        assert!(m("/foo/{**}/bar", "/foo/a/b/bar") && m("/foo/{**}/bar", "/foo/bar") && !m("/foo/{**}/bar", "/foo/a/baz"));
        assert!(m("/{**}/path/template", "/x/y/path/template") && !m("/{**}/path/template", "/path/templates"));
        assert!(m("/{*}/foo/{**}/bar", "/a/foo/b/bar") && !m("/{*}/foo/{**}/bar", "/a/fo/b/bar") && !m("/{*}/foo/{**}/bar", "/foo"));
        for bad in ["/{**}/foo/{*}/bar", "/{**}/{**}", "/foo/{**}buzz/bar", "/foo/x{*}", "foo/{*}", "/foo/{*}*", "/{*}.txt", "*/{*}"] {
            assert!(PathMatch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_blocks() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.1.2.3")) && !c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("1.2.3.4").contains(ip("1.2.3.4")) && !c("1.2.3.4").contains(ip("1.2.3.5")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")), "mapped IPv4");
        assert!(c("2001:db8::/32").contains(ip("2001:db8::1")) && !c("2001:db8::/32").contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/+8", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_port("8080").is_ok() && parse_port("65536").is_err() && parse_port("+1").is_err() && parse_port("-1").is_err());
    }

    #[test]
    fn hosts_with_and_without_ports() {
        let m = |p: &str, h: &str, port: Option<u16>| HostMatch::parse(p).unwrap().matches(h, port);
        assert!(m("httpbin.foo", "httpbin.foo", Some(8000)) && m("httpbin.foo", "HTTPBIN.foo", None));
        assert!(m("httpbin.foo:8000", "httpbin.foo", Some(8000)) && !m("httpbin.foo:8000", "httpbin.foo", Some(80)));
        assert!(!m("httpbin.foo:8000", "httpbin.foo", None));
        assert!(m("httpbin.foo:*", "httpbin.foo", Some(1)) && m("*.foo", "a.foo", None));
        assert!(HostMatch::parse("a:99999").is_err() && HostMatch::parse("a:x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = StrMatch::parse(&s);
            let _ = PathMatch::parse(&s).map(|m| m.matches(&s));
            let _ = Cidr::parse(&s);
            let _ = HostMatch::parse(&s).map(|m| m.matches(&s, Some(1)));
            let _ = parse_port(&s);
        }
    }
}
