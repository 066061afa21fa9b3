//! `kind: Compression` → a [`CompressionPolicy`] on the virtual host it names.

use crate::compile::Ctx;
use crate::load::Resource;
use crate::ratelimit::served;
use crate::snapshot::{CompressionPolicy, Encoding, Levels, Snapshot};
use crate::vhost::compile_spec_matches;
use crate::weft_kinds::Compression;

/// zstd first: at its default level it compresses text about as well as brotli 3 and
/// faster than gzip 6 — the cheapest good ratio for a sidecar's CPU. Clients that offer
/// several codings at equal q (browsers, `curl --compressed`) get the first of these.
pub const DEFAULT_ENCODINGS: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

/// Envoy's default: smaller bodies gain less than the coding's framing costs.
pub const DEFAULT_MIN_CONTENT_LENGTH: u64 = 30;

/// Envoy's default media types and the synonyms it accepts for them.
pub const DEFAULT_CONTENT_TYPES: [&str; 14] = [
    "application/javascript",
    "application/json",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/css",
    "text/html",
    "text/plain",
    "text/xml",
    "application/x-javascript",
    "text/javascript",
    "text/ecmascript",
    "application/ecmascript",
    "application/xml",
    "application/x-json",
];

/// More would only slow the per-response lookup; no real deployment lists this many.
const MAX_CONTENT_TYPES: usize = 256;

pub(crate) fn attach(r: &Resource, c: &Compression, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = ctx.resolve(r, &c.host);
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    let before = ctx.diags.errors.len();
    let encodings = encodings(r, c.encodings.as_deref(), ctx);
    let content_types = content_types(r, c.content_types.as_deref(), ctx);
    let levels = levels(r, c.level.as_ref(), &encodings, ctx);
    let matches = compile_spec_matches(r, &c.matches, ctx);
    let Some(matches) = matches.filter(|_| ctx.diags.errors.len() == before) else { return };
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].compression.push(CompressionPolicy {
        name: format!("Compression/{}", r.metadata.name),
        matches,
        encodings,
        min_content_length: c.min_content_length.unwrap_or(DEFAULT_MIN_CONTENT_LENGTH),
        content_types,
        levels,
    });
}

fn encodings(r: &Resource, list: Option<&[String]>, ctx: &mut Ctx<'_>) -> Vec<Encoding> {
    let Some(list) = list else { return DEFAULT_ENCODINGS.to_vec() };
    if list.is_empty() {
        ctx.err(r, "spec.encodings", "must list at least one of gzip, br, zstd (leave it out for the default)");
        return Vec::new();
    }
    let mut out = Vec::with_capacity(3);
    for (i, t) in list.iter().enumerate() {
        match Encoding::from_token(t) {
            Some(e) if out.contains(&e) => ctx.err(r, format!("spec.encodings[{i}]"), format!("{t:?} is listed twice")),
            Some(e) => out.push(e),
            None => ctx.err(r, format!("spec.encodings[{i}]"), format!("unknown value {t:?} (expected one of gzip, br, zstd)")),
        }
        if i >= 8 {
            break; // a huge list is all duplicates or garbage: a few errors say enough
        }
    }
    out
}

fn content_types(r: &Resource, list: Option<&[String]>, ctx: &mut Ctx<'_>) -> Vec<String> {
    let Some(list) = list else { return DEFAULT_CONTENT_TYPES.iter().map(|s| (*s).to_owned()).collect() };
    if list.is_empty() {
        ctx.err(r, "spec.contentTypes", "must not be empty (leave it out for the default list)");
        return Vec::new();
    }
    if list.len() > MAX_CONTENT_TYPES {
        ctx.err(r, "spec.contentTypes", format!("{} entries (at most {MAX_CONTENT_TYPES})", list.len()));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let bare = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let valid = bare.split_once('/').is_some_and(|(a, b)| is_token(a) && is_token(b));
        if !valid {
            ctx.err(r, format!("spec.contentTypes[{i}]"), format!("{t:?} is not a media type (type/subtype)"));
        } else if !out.contains(&bare) {
            out.push(bare);
        }
    }
    out
}

/// RFC 9110 `token` characters.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn levels(r: &Resource, level: Option<&serde_json::Value>, encodings: &[Encoding], ctx: &mut Ctx<'_>) -> Levels {
    let mut out = Levels::default();
    match level {
        None => {}
        Some(serde_json::Value::Number(n)) => {
            for &e in encodings {
                if let Some(l) = checked(r, "spec.level", n.as_i64(), e, ctx) {
                    out.set(e, l);
                }
            }
        }
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let path = format!("spec.level.{k}");
                let Some(e) = Encoding::from_token(k) else {
                    ctx.err(r, path, format!("unknown encoding {k:?} (expected one of gzip, br, zstd)"));
                    continue;
                };
                if let Some(l) = checked(r, &path, v.as_i64(), e, ctx) {
                    out.set(e, l);
                }
            }
        }
        Some(_) => ctx.err(r, "spec.level", "must be a number or a mapping of encoding to number (e.g. {gzip: 6, br: 4})"),
    }
    out
}

fn checked(r: &Resource, path: &str, v: Option<i64>, e: Encoding, ctx: &mut Ctx<'_>) -> Option<i32> {
    let range = e.level_range();
    match v.and_then(|v| i32::try_from(v).ok()) {
        Some(l) if range.contains(&l) => Some(l),
        _ => {
            let shown = v.map(|v| v.to_string()).unwrap_or_else(|| "the value".to_owned());
            ctx.err(r, path, format!("{shown} is out of range for {} ({}–{})", e.token(), range.start(), range.end()));
            None
        }
    }
}
