//! Host-level weft policies on the virtual host they name: RateLimit resources →
//! token or leaky buckets; Hedging → the host's hedge policy.

use std::time::Duration;

use crate::compile::Ctx;
use crate::load::Resource;
use std::sync::Arc;

use weft_resilience::bucket::{LeakyBucket, TokenBucket};

use crate::snapshot::{HedgePolicy, Limiter, RateLimitRule, Snapshot};
use crate::vhost::compile_match;
use crate::weft_kinds::{Hedging, LeakyBucketSpec, RateLimit, TokenBucketSpec};

pub(crate) fn attach(r: &Resource, rl: &RateLimit, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = rl.host.to_ascii_lowercase();
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    if rl.adaptive_concurrency.is_some() {
        ctx.err(r, "spec.adaptiveConcurrency", "not supported yet by this version of weft (tokenBucket and leakyBucket are)");
        return;
    }
    let limiter = match (&rl.token_bucket, &rl.leaky_bucket) {
        (Some(tb), None) => token_bucket(r, tb, ctx),
        (None, Some(lb)) => leaky_bucket(r, lb, ctx),
        (None, None) => {
            ctx.err(r, "spec", "one of tokenBucket or leakyBucket is required");
            None
        }
        (Some(_), Some(_)) => {
            ctx.err(r, "spec", "only one of tokenBucket or leakyBucket may be set");
            None
        }
    };
    let Some(limiter) = limiter else { return };
    let mut matches = Vec::new();
    for (i, m) in rl.matches.iter().enumerate() {
        match compile_match(r, m, &format!("spec.match[{i}]"), ctx) {
            Some(m) => matches.push(m),
            None => return,
        }
    }
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].rate_limits.push(RateLimitRule { name: format!("RateLimit/{}", r.metadata.name), matches, limiter });
}

fn token_bucket(r: &Resource, tb: &TokenBucketSpec, ctx: &mut Ctx<'_>) -> Option<Limiter> {
    if tb.max_tokens == 0 {
        ctx.err(r, "spec.tokenBucket.maxTokens", "must be at least 1");
        return None;
    }
    let per_fill = tb.tokens_per_fill.unwrap_or(1);
    if per_fill == 0 {
        ctx.err(r, "spec.tokenBucket.tokensPerFill", "must be at least 1");
        return None;
    }
    let interval = tb.fill_interval.map(|d| d.0).unwrap_or_default();
    if interval < Duration::from_millis(1) {
        ctx.err(r, "spec.tokenBucket.fillInterval", "must be at least 1ms");
        return None;
    }
    Some(Limiter::Token(TokenBucket::new(tb.max_tokens, per_fill, interval)))
}

fn leaky_bucket(r: &Resource, lb: &LeakyBucketSpec, ctx: &mut Ctx<'_>) -> Option<Limiter> {
    if !(lb.rate.is_finite() && lb.rate > 0.0) {
        ctx.err(r, "spec.leakyBucket.rate", format!("{} is not a positive number of requests per second", lb.rate));
        return None;
    }
    let max_delay = lb.max_delay.map(|d| d.0).unwrap_or(Duration::from_secs(1));
    Some(Limiter::Leaky(Arc::new(LeakyBucket::new(lb.rate, lb.queue, max_delay))))
}

pub(crate) fn attach_hedging(r: &Resource, h: &Hedging, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = h.host.to_ascii_lowercase();
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    if h.delay_percentile.is_some() {
        ctx.err(r, "spec.delayPercentile", "not supported yet by this version of weft (delay is)");
        return;
    }
    let Some(delay) = h.delay.map(|d| d.0).filter(|d| !d.is_zero()) else {
        ctx.err(r, "spec.delay", "missing field");
        return;
    };
    let max_attempts = h.max_attempts.unwrap_or(2);
    if !(2..=5).contains(&max_attempts) {
        ctx.err(r, "spec.maxAttempts", format!("{max_attempts} is not between 2 and 5"));
        return;
    }
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].hedging = Some(HedgePolicy { delay, max_attempts });
}

/// The virtual host serving `host` (lower case), or an error on `spec.host`.
fn served(r: &Resource, host: &str, snap: &Snapshot, ctx: &mut Ctx<'_>) -> Option<usize> {
    let idx = snap.exact_hosts.get(host).copied();
    if idx.is_none() {
        ctx.err(r, "spec.host", format!("no ServiceEntry or VirtualService serves host {host:?}"));
    }
    idx
}
