//! A finished span as the request path hands it to the exporter: fixed fields, static
//! attribute keys and values that borrow what the request already had (a header value
//! is a reference count, the method and the node are static), so that a sampled
//! request makes a handful of allocations, not one per attribute. The export thread
//! encodes it ([`super::wire`]).

use std::borrow::Cow;

use http::HeaderValue;

/// One attribute value. Every string one is valid UTF-8 (protobuf's `string`: a single
/// bad byte makes a collector refuse the whole batch): what a client sent is copied
/// through [`Value::client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Static(&'static str),
    Text(String),
    /// A value many spans share (a Telemetry literal).
    Shared(std::sync::Arc<str>),
    /// A header value weft made itself (its own buffer, ASCII): shared, not copied. Never
    /// a client's: that would keep the client's whole request head alive in the queue.
    Own(HeaderValue),
    Int(i64),
}

/// The most bytes of a client's value a span keeps.
pub const MAX_CLIENT_VALUE: usize = 1024;

impl Value {
    /// A value a client sent (a header): copied, at most [`MAX_CLIENT_VALUE`] bytes,
    /// invalid UTF-8 replaced.
    pub fn client(bytes: &[u8]) -> Value {
        Value::Text(client_text(bytes, MAX_CLIENT_VALUE))
    }
}

/// `bytes` as UTF-8 text (invalid sequences replaced), cut to at most `max` bytes.
pub fn client_text(bytes: &[u8], max: usize) -> String {
    // (A cut in the middle of a character becomes a replacement character: fine.)
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

impl Value {
    /// The value's bytes (a string attribute), or None for an integer.
    pub(crate) fn text(&self) -> Option<&[u8]> {
        match self {
            Value::Static(s) => Some(s.as_bytes()),
            Value::Text(s) => Some(s.as_bytes()),
            Value::Shared(s) => Some(s.as_bytes()),
            Value::Own(h) => Some(h.as_bytes()),
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
    /// The W3C `tracestate` the span was made in (a copy: see [`Value::Own`]).
    pub trace_state: Option<String>,
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
        // (An extension method is a client's token: kept to 32 bytes.)
        _ => return Value::Text(client_text(m.as_str().as_bytes(), 32)),
    };
    Value::Static(s)
}
