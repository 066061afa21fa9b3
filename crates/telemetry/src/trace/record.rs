//! A finished span as the request path hands it to the exporter: fixed fields, static
//! attribute keys and values that borrow what the request already had (a header value
//! is a reference count, the method and the node are static), so that a sampled
//! request makes a handful of allocations, not one per attribute. The export thread
//! encodes it ([`super::wire`]).

use std::borrow::Cow;

use http::HeaderValue;

/// One attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Static(&'static str),
    Text(String),
    /// A header's value, as received (its bytes; not always UTF-8).
    Header(HeaderValue),
    Int(i64),
}

impl Value {
    /// The value's bytes (a string attribute), or None for an integer.
    pub(crate) fn text(&self) -> Option<&[u8]> {
        match self {
            Value::Static(s) => Some(s.as_bytes()),
            Value::Text(s) => Some(s.as_bytes()),
            Value::Header(h) => Some(h.as_bytes()),
            Value::Int(_) => None,
        }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

/// OTLP's span kinds weft makes.
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

/// A finished span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// The W3C `tracestate` the span was made in, passed on as it came.
    pub trace_state: Option<HeaderValue>,
    /// The span's name is `target[..name_len]`; its `http.url` (when `url` is set) is
    /// `http://` + the whole target: one string for both.
    pub target: String,
    pub name_len: usize,
    pub url: bool,
    pub kind: i32,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// An error (OTLP status code 2), and its message.
    pub error: bool,
    pub message: String,
    pub attributes: Vec<(Cow<'static, str>, Value)>,
}

impl SpanRecord {
    /// The span's name.
    pub fn name(&self) -> &str {
        self.target.get(..self.name_len).unwrap_or(&self.target)
    }

    /// Adds an attribute.
    pub fn set(&mut self, key: &'static str, value: Value) {
        self.attributes.push((Cow::Borrowed(key), value));
    }

    /// Adds an attribute whose key is not known at build time (a Telemetry custom tag).
    pub fn set_named(&mut self, key: String, value: Value) {
        self.attributes.push((Cow::Owned(key), value));
    }
}

/// The static name of a standard method (no allocation), else its text.
pub fn method_value(m: &http::Method) -> Value {
    use http::Method;
    let s = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Value::Text(m.as_str().to_owned()),
    };
    Value::Static(s)
}
