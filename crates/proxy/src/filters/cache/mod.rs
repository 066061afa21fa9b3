//! `kind: ResponseCache`: a shared HTTP cache (RFC 9111) for GET and HEAD.
//!
//! - [`policy`]: what may be looked up and stored, freshness, age (pure).
//! - [`directives`]: `Cache-Control` parsing.
//! - [`key`]: primary key (authority, path, query) and `Vary` secondary key.
//! - [`store`]: [`CacheStore`], bounded by bytes, frequency-aware eviction, counters.
//! - [`conditional`]: answering `If-None-Match` / `If-Modified-Since` with 304, and
//!   revalidating a stale entry upstream.
//! - [`fill`]: [`FillBody`], streaming a response to the client while keeping a copy.
//! - [`coalesce`]: one upstream request per key for concurrent misses.
//!
//! A filter does, per request (sketch):
//! ```text
//! if !request_cacheable(method, req) → forward, uncached
//! key = PrimaryKey::new(authority, uri)
//! match store.lookup(&key, req) {
//!   Some(e) if e.freshness(req, now) == Fresh → hits += 1; 304 if not_modified(req, &e.headers) else e.response(now, HEAD)
//!   Some(e) (stale) → add_validators(upstream_req, &e); on 304: freshen(&e, ..) → store.update, serve
//!   None → misses += 1; coalescer.join(key): Leader → forward; if storable(..): body = FillBody::new(body, ..)
//!                                             Waiter → wait(bound), lookup again, else forward yourself
//! }
//! ```

pub mod coalesce;
pub mod conditional;
pub mod directives;
pub mod fill;
mod filter;
pub mod key;
pub mod policy;
pub mod store;

pub use coalesce::{Coalescer, Flight, LeaderGuard, Role, WaitOutcome};
pub use conditional::{add_validators, freshen, not_modified};
pub use directives::CacheControl;
pub use fill::{FillBody, Pending};
pub use filter::{Outstanding, ResponseCache, Waiting};
pub use key::{PrimaryKey, VaryValues};
pub use policy::{current_age, freshness_lifetime, request_cacheable, storable, Freshness};
pub use store::{CacheStats, CacheStore, Entry};
