//! Where a rule looks for a token: headers (with a prefix such as `Bearer `), query
//! parameters and cookies. Istio's default, when a rule names none: the
//! `Authorization` header with prefix `Bearer `, and the `access_token` parameter.

use http::{HeaderMap, HeaderName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// The parts of a request a token may come from.
#[derive(Debug, Clone, Copy)]
pub struct TokenSources<'a> {
    pub headers: &'a HeaderMap,
    /// The request's query string (without `?`).
    pub query: Option<&'a str>,
}

impl Location {
    /// Istio's default locations.
    pub fn defaults() -> Vec<Location> {
        vec![Location::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() }, Location::Param("access_token".into())]
    }

    /// The token at this location, if the request carries one.
    pub fn find<'a>(&self, req: &TokenSources<'a>) -> Option<&'a str> {
        let token = match self {
            Location::Header { name, prefix } => {
                let value = req.headers.get(name)?.to_str().ok()?;
                strip_prefix_ignore_case(value, prefix)?
            }
            Location::Param(name) => pairs(req.query?, '&').find(|(k, _)| k == name)?.1,
            Location::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| pairs(v, ';').find(|(k, _)| k == name).map(|(_, v)| v))?,
        };
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

/// `k=v` pairs split on `sep`, keys trimmed.
fn pairs(s: &str, sep: char) -> impl Iterator<Item = (&str, &str)> {
    s.split(sep).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim(), v))
}
