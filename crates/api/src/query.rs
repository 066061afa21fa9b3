//! Query strings, for the GET and DELETE routes that curl users type by hand
//! (`/v1/resources?kind=se`): percent-encoding one way and decoding the other, used
//! only by the typed queries in [`crate::admin`].

/// Percent-encodes everything but unreserved characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` and `+`; a malformed escape is kept as it is, bytes that are not
/// UTF-8 become U+FFFD.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%').then(|| b.get(i + 1..i + 3)).flatten().and_then(|h| std::str::from_utf8(h).ok());
        match (hex.and_then(|h| u8::from_str_radix(h, 16).ok()), b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in query `q`, decoded (the first, when repeated).
pub fn get(q: &str, key: &str) -> Option<String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| unescape(k) == key).map(|(_, v)| unescape(v))
}

/// `k=v&…` from the pairs whose value is present.
pub fn build(pairs: &[(&str, Option<&str>)]) -> String {
    pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", escape(v)))).collect::<Vec<_>>().join("&")
}
