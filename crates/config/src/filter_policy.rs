//! The compiled Compression and ResponseCache policies a virtual host carries.
//!
//! Pure data: the proxy keeps the live state (the cache's entries, its counters) and
//! compares a policy across reloads with `==` to decide whether that state carries over.

use crate::matcher::{RequestMatch, RequestView};

/// A content coding weft can produce (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    /// The token used in `Accept-Encoding`, `Content-Encoding` and the config.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Case-insensitive, as content codings are (RFC 9110 §8.4.1). `x-gzip` is gzip (§8.4.1.3).
    pub fn from_token(t: &str) -> Option<Encoding> {
        if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if t.eq_ignore_ascii_case("br") {
            Some(Encoding::Brotli)
        } else if t.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }

    /// Valid levels: zlib 1–9, brotli quality 0–11, zstd 1–22 (its negative "fast"
    /// levels are left out: they trade most of the ratio away).
    pub fn level_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Encoding::Gzip => 1..=9,
            Encoding::Brotli => 0..=11,
            Encoding::Zstd => 1..=22,
        }
    }

    /// Envoy's defaults: zlib's 6, brotli quality 3, zstd's 3.
    pub fn default_level(self) -> i32 {
        match self {
            Encoding::Gzip => 6,
            Encoding::Brotli => 3,
            Encoding::Zstd => 3,
        }
    }
}

/// Compression levels per codec, each within [`Encoding::level_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub gzip: i32,
    pub brotli: i32,
    pub zstd: i32,
}

impl Default for Levels {
    fn default() -> Self {
        Levels { gzip: Encoding::Gzip.default_level(), brotli: Encoding::Brotli.default_level(), zstd: Encoding::Zstd.default_level() }
    }
}

impl Levels {
    pub fn get(&self, e: Encoding) -> i32 {
        match e {
            Encoding::Gzip => self.gzip,
            Encoding::Brotli => self.brotli,
            Encoding::Zstd => self.zstd,
        }
    }

    pub fn set(&mut self, e: Encoding, level: i32) {
        match e {
            Encoding::Gzip => self.gzip = level,
            Encoding::Brotli => self.brotli = level,
            Encoding::Zstd => self.zstd = level,
        }
    }
}

/// One `kind: Compression`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionPolicy {
    /// `Compression/name`, for logs and metrics.
    pub name: String,
    /// Requests that match (all, when empty) may get a compressed response.
    pub matches: Vec<RequestMatch>,
    /// The server's preference, best first; never empty, no duplicates.
    pub encodings: Vec<Encoding>,
    /// A response with a smaller `Content-Length` is sent as it is.
    pub min_content_length: u64,
    /// Lower-case `type/subtype`, without parameters.
    pub content_types: Vec<String>,
    pub levels: Levels,
}

/// One `kind: ResponseCache`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// `ResponseCache/name`; also what identifies the cache's contents across reloads.
    pub name: String,
    pub matches: Vec<RequestMatch>,
    /// The cache's capacity in bytes (≥ 1).
    pub max_bytes: u64,
    /// The largest entry admitted (1 ..= `max_bytes`, and ≤ `u32::MAX`).
    pub max_entry_bytes: u64,
}

impl CompressionPolicy {
    pub fn applies(&self, r: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.is_match(r))
    }
}

impl CachePolicy {
    pub fn applies(&self, r: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.is_match(r))
    }
}
