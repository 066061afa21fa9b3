//! Request path normalization, Istio's options (istio.io "security/normalization"),
//! applied before routing so that routes match the path the backend will see, and
//! the normalized path is the one forwarded.
//!
//! - `base` (the default, Envoy's `normalize_path`): percent-encoded unreserved
//!   characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes kept with upper-case
//!   hex; `\` becomes `/`; `.` and `..` segments are resolved (RFC 3986 §5.2.4; `..`
//!   never climbs above the root). An encoded NUL or control character (`%00`-`%1F`,
//!   `%7F`) or a `%` not followed by two hex digits is refused (400).
//! - `merge-slashes`: `base`, then runs of `/` become one.
//! - `decode-and-merge-slashes`: `%2F` and `%5C` are decoded (to `/`) as well, then
//!   `merge-slashes`.
//! - `none`: the path goes through as it came.
//!
//! Pure and allocation-free for a path that needs nothing (no `%`, `\` or `/.`, and no
//! `//` when slashes are merged).

use std::borrow::Cow;

/// Istio's `pathNormalization` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

/// Why a path was refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `%00`-`%1F`, `%7F`, or a raw control byte.
    Control,
    /// `%` without two hex digits after it.
    BadEscape,
}

impl Rejected {
    pub fn message(self) -> &'static str {
        match self {
            Rejected::Control => "bad request: control character in path\n",
            Rejected::BadEscape => "bad request: invalid percent-encoding in path\n",
        }
    }
}

/// The normalized form of `path` (a path without its query): borrowed when unchanged.
pub fn normalize(path: &str, mode: PathNormalization) -> Result<Cow<'_, str>, Rejected> {
    if mode == PathNormalization::None || path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    let merge = matches!(mode, PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes);
    let b = path.as_bytes();
    let needs = b.iter().any(|&c| c == b'%' || c == b'\\' || c < 0x20 || c == 0x7f)
        || b.windows(2).any(|w| w[0] == b'/' && (w[1] == b'.' || (merge && w[1] == b'/')))
        || b.first() != Some(&b'/');
    if !needs {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(b, mode == PathNormalization::DecodeAndMergeSlashes)?;
    let out = remove_dots(&decoded, merge);
    // Only ASCII bytes were changed, so UTF-8 in the input stays UTF-8.
    String::from_utf8(out).map(Cow::Owned).map_err(|_| Rejected::BadEscape)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Percent-decoding of unreserved characters (and, with `slashes`, of `/` and `\`);
/// `\` → `/`; escapes kept are upper-cased.
fn decode(b: &[u8], slashes: bool) -> Result<Vec<u8>, Rejected> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(b.len() + 1);
    if b.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
                    return Err(Rejected::BadEscape);
                };
                let v = h << 4 | l;
                if v < 0x20 || v == 0x7f {
                    return Err(Rejected::Control);
                }
                if unreserved(v) {
                    out.push(v);
                } else if slashes && (v == b'/' || v == b'\\') {
                    out.push(b'/');
                } else {
                    out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
                }
                i += 3;
            }
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            c if c < 0x20 || c == 0x7f => return Err(Rejected::Control),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 remove_dot_segments over a path starting with `/`; with `merge`, empty
/// segments (runs of `/`) are dropped too. A trailing `.`, `..` or `/` leaves a
/// trailing `/`.
fn remove_dots(p: &[u8], merge: bool) -> Vec<u8> {
    let mut segs: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = p[1..].split(|&c| c == b'/').collect();
    let n = parts.len();
    for (k, s) in parts.into_iter().enumerate() {
        let last = k + 1 == n;
        match s {
            b"." => {}
            b".." => {
                segs.pop();
            }
            b"" if merge && !last => continue,
            s => {
                segs.push(s);
                continue;
            }
        }
        if last {
            segs.push(b"");
        }
    }
    if merge {
        // `/a/..//` and the like: no run of empty segments survives.
        segs.dedup_by(|a, b| a.is_empty() && b.is_empty());
    }
    let mut out = Vec::with_capacity(p.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
