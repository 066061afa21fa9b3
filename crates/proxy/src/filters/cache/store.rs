//! The store: entries bounded by bytes, evicted by frequency (moka's TinyLFU admission
//! and LRU-ish eviction with a weigher), shared by every worker thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AGE, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};
use moka::notification::RemovalCause;
use weft_config::CachePolicy;

use super::key::{vary_names, PrimaryKey, VaryValues};
use super::policy::{current_age, freshness, freshness_lifetime, Freshness};

/// Variants (by `Vary`) kept per URL; the oldest goes when another arrives. Bounds the
/// work of a lookup and what one URL with a wild `Vary` can take.
pub const MAX_VARIANTS: usize = 8;

/// Hop-by-hop fields never stored (RFC 9111 §3.1), besides those `Connection` names.
const HOP_BY_HOP: [&str; 6] = ["keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "proxy-authenticate"];

/// One stored response.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// When the request that fetched it left, and when its head arrived (§4.2.3).
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    /// The request's values of the response's `Vary` names: the secondary key.
    pub vary: VaryValues,
}

impl Entry {
    /// `None` when the response can never be selected (`Vary: *`, a wild `Vary`).
    /// Hop-by-hop fields are dropped; the request's `Vary` values are captured.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        trailers: Option<HeaderMap>,
        request_time: SystemTime,
        response_time: SystemTime,
        req: &HeaderMap,
    ) -> Option<Entry> {
        let names = vary_names(&headers)?;
        let listed: Vec<String> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        for name in listed.iter().map(String::as_str).chain(HOP_BY_HOP).chain(["connection"]) {
            headers.remove(name);
        }
        // Values copied out: a received value is a slice of the read buffer it arrived in,
        // which it would otherwise keep alive for as long as the entry lives.
        let headers = headers
            .iter()
            .filter_map(|(n, v)| {
                let mut copy = HeaderValue::from_bytes(v.as_bytes()).ok()?;
                copy.set_sensitive(v.is_sensitive());
                Some((n.clone(), copy))
            })
            .collect();
        let vary = VaryValues::capture(&names, req);
        Some(Entry { status, headers, body, trailers, request_time, response_time, vary })
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        current_age(&self.headers, self.request_time, self.response_time, now)
    }

    pub fn lifetime(&self) -> Duration {
        freshness_lifetime(&self.headers, self.response_time)
    }

    /// Whether `req` may be answered with it as it is, or only after revalidation.
    pub fn freshness(&self, req: &HeaderMap, now: SystemTime) -> Freshness {
        freshness(req, &self.headers, self.age(now), self.lifetime())
    }

    /// The response to send: the stored head with `Age` (§5.1) and the body's length
    /// (none for HEAD's empty body beyond the length, nor when trailers follow).
    pub fn response(&self, now: SystemTime, head_only: bool) -> http::Response<Bytes> {
        let mut headers = self.headers.clone();
        headers.insert(AGE, HeaderValue::from(self.age(now).as_secs()));
        headers.remove(TRANSFER_ENCODING);
        if self.status == StatusCode::NO_CONTENT {
            headers.remove(CONTENT_LENGTH); // RFC 9110 §8.6: never on a 204
        } else if self.trailers.is_none() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len() as u64));
        } else {
            headers.remove(CONTENT_LENGTH);
        }
        let mut resp = http::Response::new(if head_only { Bytes::new() } else { self.body.clone() });
        *resp.status_mut() = self.status;
        *resp.headers_mut() = headers;
        resp
    }

    /// Bytes it holds, roughly: body, fields, trailers, the secondary key.
    pub fn weight(&self) -> u64 {
        let fields = |h: &HeaderMap| h.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum::<usize>();
        (self.body.len() + fields(&self.headers) + self.trailers.as_ref().map_or(0, fields) + self.vary.weight() + 64) as u64
    }
}

/// Counters for `weft_cache_{hits,misses,evictions}_total`. `hits` and `misses` are
/// the filter's to count (it alone knows whether a revalidated answer was a hit);
/// `evictions` counts entries pushed out for room.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

/// One `kind: ResponseCache`'s contents. Clone-cheap handles are not needed: share it
/// in an `Arc`, and keep that `Arc` across a reload while the policy compares equal.
pub struct CacheStore {
    map: moka::sync::Cache<PrimaryKey, Arc<Vec<Arc<Entry>>>>,
    max_entry_bytes: u64,
    pub stats: Arc<CacheStats>,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore").field("bytes", &self.map.weighted_size()).field("stats", &self.stats).finish()
    }
}

impl CacheStore {
    pub fn new(policy: &CachePolicy) -> CacheStore {
        Self::counted(policy, None)
    }

    /// [`CacheStore::new`], its evictions also counted in `evictions` (the proxy's
    /// `weft_cache_evictions_total`, which outlives any one store).
    pub fn counted(policy: &CachePolicy, evictions: Option<&'static AtomicU64>) -> CacheStore {
        let stats = Arc::new(CacheStats::default());
        let counted = stats.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(policy.max_bytes)
            .weigher(|k: &PrimaryKey, v: &Arc<Vec<Arc<Entry>>>| {
                let w = k.as_str().len() as u64 + v.iter().map(|e| e.weight()).sum::<u64>();
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_k, v: Arc<Vec<Arc<Entry>>>, cause| {
                if cause == RemovalCause::Size {
                    counted.evictions.fetch_add(v.len() as u64, Ordering::Relaxed);
                    if let Some(e) = evictions {
                        e.fetch_add(v.len() as u64, Ordering::Relaxed);
                    }
                }
            })
            .build();
        CacheStore { map, max_entry_bytes: policy.max_entry_bytes, stats }
    }

    /// The largest body worth keeping a copy of while it streams.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// The stored response `req` selects (its `Vary` values match), fresh or not.
    pub fn lookup(&self, key: &PrimaryKey, req: &HeaderMap) -> Option<Arc<Entry>> {
        self.map.get(key)?.iter().find(|e| e.vary.matches(req)).cloned()
    }

    /// Stores `entry`, replacing the variant with the same `Vary` values. `false` when
    /// it is larger than `maxEntryBytes` (the store may still decline it for room:
    /// TinyLFU admits a newcomer only if it is used more than what it would evict).
    pub fn insert(&self, key: PrimaryKey, entry: Entry) -> bool {
        if entry.body.len() as u64 > self.max_entry_bytes {
            return false;
        }
        let entry = Arc::new(entry);
        self.map.entry(key).and_upsert_with(|old| {
            let mut v: Vec<Arc<Entry>> =
                old.map(|o| o.into_value().iter().filter(|e| e.vary != entry.vary).cloned().collect()).unwrap_or_default();
            if v.len() >= MAX_VARIANTS {
                v.remove(0);
            }
            v.push(entry);
            Arc::new(v)
        });
        true
    }

    /// Replaces a stored variant after revalidation (same as [`insert`](Self::insert)).
    pub fn update(&self, key: PrimaryKey, entry: Entry) -> bool {
        self.insert(key, entry)
    }

    /// Drops every variant of a URL (e.g. after an unsafe method on it, §4.4).
    pub fn invalidate(&self, key: &PrimaryKey) {
        self.map.invalidate(key);
    }

    /// Bytes held, as weighed.
    pub fn weighted_size(&self) -> u64 {
        self.map.weighted_size()
    }

    /// moka applies evictions in batches; this runs them now (tests, the admin page).
    pub fn run_pending_tasks(&self) {
        self.map.run_pending_tasks();
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
