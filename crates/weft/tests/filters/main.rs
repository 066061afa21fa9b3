//! `kind: Compression` and `kind: ResponseCache` end to end: a real proxy in front of a
//! python origin (`filters_backend.py`) that sets the response headers a test asks for
//! and counts the requests it sees, and real clients decoding what arrives (`curl
//! --compressed`, python `brotli` and `zstandard`).

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bad_input;
mod cache;
mod compression;
