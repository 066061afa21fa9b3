//! Host-level weft policies on the virtual host they name: RateLimit resources →
//! token or leaky buckets or an adaptive concurrency limit; Hedging → the host's hedge policy.

use std::time::Duration;

use crate::compile::Ctx;
use crate::load::Resource;
use weft_resilience::adaptive;

use crate::snapshot::{HedgePolicy, LimiterSpec, RateLimitRule, Snapshot};
use crate::vhost::compile_spec_matches;
use crate::weft_kinds::{AdaptiveConcurrencySpec, Hedging, LeakyBucketSpec, RateLimit, TokenBucketSpec};

pub(crate) fn attach(r: &Resource, rl: &RateLimit, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = ctx.resolve(r, &rl.host);
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    let limiter = match (&rl.token_bucket, &rl.leaky_bucket, &rl.adaptive_concurrency) {
        (Some(tb), None, None) => token_bucket(r, tb, ctx),
        (None, Some(lb), None) => leaky_bucket(r, lb, ctx),
        (None, None, Some(ac)) => adaptive(r, ac, ctx),
        (None, None, None) => {
            ctx.err(r, "spec", "one of tokenBucket, leakyBucket or adaptiveConcurrency is required");
            None
        }
        _ => {
            ctx.err(r, "spec", "only one of tokenBucket, leakyBucket or adaptiveConcurrency may be set");
            None
        }
    };
    let Some(limiter) = limiter else { return };
    let Some(matches) = compile_spec_matches(r, &rl.matches, ctx) else { return };
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].rate_limits.push(RateLimitRule { name: format!("RateLimit/{}", r.metadata.name), matches, limiter });
}

fn token_bucket(r: &Resource, tb: &TokenBucketSpec, ctx: &mut Ctx<'_>) -> Option<LimiterSpec> {
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
    Some(LimiterSpec::Token { max_tokens: tb.max_tokens, per_fill, interval })
}

fn leaky_bucket(r: &Resource, lb: &LeakyBucketSpec, ctx: &mut Ctx<'_>) -> Option<LimiterSpec> {
    if !(lb.rate.is_finite() && lb.rate > 0.0) {
        ctx.err(r, "spec.leakyBucket.rate", format!("{} is not a positive number of requests per second", lb.rate));
        return None;
    }
    let max_delay = lb.max_delay.map(|d| d.0).unwrap_or(Duration::from_secs(1));
    Some(LimiterSpec::Leaky { rate: lb.rate, queue: lb.queue, max_delay })
}

fn adaptive(r: &Resource, ac: &AdaptiveConcurrencySpec, ctx: &mut Ctx<'_>) -> Option<LimiterSpec> {
    let d = adaptive::Settings::default();
    let p = "spec.adaptiveConcurrency";
    let s = adaptive::Settings {
        min_limit: ac.min_concurrency.unwrap_or(d.min_limit),
        max_limit: ac.max_concurrency.unwrap_or(d.max_limit),
        sample_window: ac.sample_window.map(|v| v.0).unwrap_or(d.sample_window),
        min_rtt_interval: ac.min_rtt_interval.map(|v| v.0).unwrap_or(d.min_rtt_interval),
        min_rtt_samples: ac.min_rtt_samples.unwrap_or(d.min_rtt_samples),
        buffer: ac.latency_buffer_percent.map(|b| b / 100.0).unwrap_or(d.buffer),
    };
    let before = ctx.diags.errors.len();
    if s.min_limit == 0 {
        ctx.err(r, format!("{p}.minConcurrency"), "must be at least 1");
    }
    if s.max_limit < s.min_limit {
        ctx.err(r, format!("{p}.maxConcurrency"), format!("{} is below minConcurrency {}", s.max_limit, s.min_limit));
    }
    if s.sample_window < Duration::from_millis(1) {
        ctx.err(r, format!("{p}.sampleWindow"), "must be at least 1ms");
    }
    if s.min_rtt_interval < Duration::from_secs(1) {
        ctx.err(r, format!("{p}.minRttInterval"), "must be at least 1s");
    }
    if s.min_rtt_samples == 0 {
        ctx.err(r, format!("{p}.minRttSamples"), "must be at least 1");
    }
    if !(s.buffer.is_finite() && s.buffer >= 0.0) {
        ctx.err(r, format!("{p}.latencyBufferPercent"), "must be a number of at least 0");
    }
    (ctx.diags.errors.len() == before).then_some(LimiterSpec::Adaptive(s))
}

pub(crate) fn attach_hedging(r: &Resource, h: &Hedging, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = ctx.resolve(r, &h.host);
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    let percentile = match h.delay_percentile {
        Some(p) if !(p > 0.0 && p < 100.0) => {
            ctx.err(r, "spec.delayPercentile", format!("{p} is not a percentile between 0 and 100 (exclusive)"));
            return;
        }
        Some(p) => Some(p),
        None => None,
    };
    // With a percentile, `delay` is the start value until the host has enough answers.
    let delay = match h.delay.map(|d| d.0) {
        Some(d) if d.is_zero() => {
            ctx.err(r, "spec.delay", "must be longer than zero");
            return;
        }
        Some(d) => d,
        None if percentile.is_some() => Duration::from_millis(50),
        None => {
            ctx.err(r, "spec", "one of delay or delayPercentile is required");
            return;
        }
    };
    let max_attempts = h.max_attempts.unwrap_or(2);
    if !(2..=5).contains(&max_attempts) {
        ctx.err(r, "spec.maxAttempts", format!("{max_attempts} is not between 2 and 5"));
        return;
    }
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].hedging = Some(HedgePolicy { delay, max_attempts, percentile });
}

/// The virtual host serving `host` (lower case), or an error on `spec.host`.
pub(crate) fn served(r: &Resource, host: &str, snap: &Snapshot, ctx: &mut Ctx<'_>) -> Option<usize> {
    let idx = snap.exact_hosts.get(host).copied();
    if idx.is_none() {
        ctx.err(r, "spec.host", format!("no ServiceEntry or VirtualService serves host {host:?}"));
    }
    idx
}
