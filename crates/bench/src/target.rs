//! The URL under test and the request bytes sent to it (pure: no I/O).

use std::fmt;

/// Where requests go: parsed once from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host as written in the URL (a name or an IP literal, without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
    /// The Host / :authority value: `host[:port]`, the port left out when it is 80.
    pub authority: String,
}

/// Why a URL was refused, in words for the user.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl Target {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let bad = |why: &str| UrlError(format!("invalid URL {url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported yet (weft bench speaks cleartext HTTP/1.1 and h2c)")),
            Some(other) => return Err(bad(&format!("unsupported scheme {other:?}; use http://"))),
            None => return Err(bad("missing scheme; write http://HOST[:PORT]/PATH")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information in the URL is not supported; send an Authorization header with -H"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/").to_string();
        let authority = if port == 80 { authority.host().to_string() } else { format!("{}:{port}", authority.host()) };
        Ok(Target { host, port, path, authority })
    }
}

/// What one request carries. Encoded once; every request of a run is the same.
#[derive(Clone, Debug, Default)]
pub struct RequestSpec {
    pub method: String,
    /// Extra headers as `(name, value)`, in the order given.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    /// Replaces the Host / :authority taken from the URL.
    pub host: Option<String>,
}

impl RequestSpec {
    /// Checks the method and headers the way a server would, so bad input fails before any traffic.
    pub fn check(&self) -> Result<(), String> {
        http::Method::from_bytes(self.method.as_bytes()).map_err(|_| format!("invalid method {:?}", self.method))?;
        for (name, value) in &self.headers {
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
            http::HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name:?}"))?;
        }
        if let Some(h) = &self.host {
            http::uri::Authority::try_from(h.as_str()).map_err(|_| format!("invalid --host {h:?}"))?;
        }
        Ok(())
    }

    /// Parses a `-H 'Name: value'` argument.
    pub fn parse_header(arg: &str) -> Result<(String, String), String> {
        let (name, value) = arg.split_once(':').ok_or_else(|| format!("header {arg:?} must look like 'Name: value'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("header {arg:?} has no name"));
        }
        Ok((name.to_string(), value.trim().to_string()))
    }

    /// The authority sent: `--host`, else a Host given with -H, else the URL's.
    pub fn authority<'a>(&'a self, target: &'a Target) -> &'a str {
        if let Some(h) = &self.host {
            return h;
        }
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")).map(|(_, v)| v.as_str()).unwrap_or(&target.authority)
    }

    /// The whole HTTP/1.1 request, head and body, as sent on a keep-alive connection.
    pub fn encode_h1(&self, target: &Target) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.authority(target).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut has_length = false;
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("host") {
                continue;
            }
            has_length |= name.eq_ignore_ascii_case("content-length");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let bodyless = matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE");
        let needs_length = !self.body.is_empty() || !bodyless;
        if !has_length && needs_length {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str(), t.authority.as_str()), ("127.0.0.1", 8080, "/a/b?c=d", "127.0.0.1:8080"));
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.authority.as_str()), (80, "/", "example.com"));
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.authority.as_str()), ("::1", "[::1]:9"));
    }

    #[test]
    fn refuses_bad_urls() {
        for (url, want) in [
            ("localhost:8080", "missing scheme"),
            ("https://x/", "https is not supported"),
            ("ftp://x/", "unsupported scheme"),
            ("http://", "invalid URL"),
            ("http://a b/", "invalid URL"),
            ("http://u:p@h/", "user information"),
        ] {
            let err = Target::parse(url).unwrap_err().0;
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn encodes_requests() {
        let t = Target::parse("http://h:81/p").unwrap();
        let get = RequestSpec { method: "GET".into(), headers: vec![("x-a".into(), "1".into())], ..Default::default() };
        assert_eq!(String::from_utf8(get.encode_h1(&t)).unwrap(), "GET /p HTTP/1.1\r\nhost: h:81\r\nx-a: 1\r\n\r\n");
        let post = RequestSpec { method: "POST".into(), body: "hi".into(), host: Some("svc".into()), ..Default::default() };
        assert_eq!(String::from_utf8(post.encode_h1(&t)).unwrap(), "POST /p HTTP/1.1\r\nhost: svc\r\ncontent-length: 2\r\n\r\nhi");
        let host_header = RequestSpec { method: "GET".into(), headers: vec![("Host".into(), "other".into())], ..Default::default() };
        assert_eq!(String::from_utf8(host_header.encode_h1(&t)).unwrap(), "GET /p HTTP/1.1\r\nhost: other\r\n\r\n");
    }

    #[test]
    fn checks_headers() {
        assert_eq!(RequestSpec::parse_header("a: b c").unwrap(), ("a".into(), "b c".into()));
        assert!(RequestSpec::parse_header("nocolon").is_err());
        let bad = RequestSpec { method: "G T".into(), ..Default::default() };
        assert!(bad.check().is_err());
    }
}
