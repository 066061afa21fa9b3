//! RateLimit resources → token buckets on the virtual host they name.

use std::time::Duration;

use crate::compile::Ctx;
use crate::load::Resource;
use crate::snapshot::{RateLimitRule, Snapshot};
use crate::vhost::compile_match;
use crate::weft_kinds::RateLimit;

pub(crate) fn attach(r: &Resource, rl: &RateLimit, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = rl.host.to_ascii_lowercase();
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    if rl.leaky_bucket.is_some() || rl.adaptive_concurrency.is_some() {
        let field = if rl.leaky_bucket.is_some() { "spec.leakyBucket" } else { "spec.adaptiveConcurrency" };
        ctx.err(r, field, "not supported yet by this version of weft (tokenBucket is)");
        return;
    }
    let Some(tb) = &rl.token_bucket else {
        ctx.err(r, "spec.tokenBucket", "missing field");
        return;
    };
    if tb.max_tokens == 0 {
        ctx.err(r, "spec.tokenBucket.maxTokens", "must be at least 1");
        return;
    }
    let per_fill = tb.tokens_per_fill.unwrap_or(1);
    if per_fill == 0 {
        ctx.err(r, "spec.tokenBucket.tokensPerFill", "must be at least 1");
        return;
    }
    let interval = tb.fill_interval.map(|d| d.0).unwrap_or_default();
    if interval < Duration::from_millis(1) {
        ctx.err(r, "spec.tokenBucket.fillInterval", "must be at least 1ms");
        return;
    }
    let mut matches = Vec::new();
    for (i, m) in rl.matches.iter().enumerate() {
        match compile_match(r, m, &format!("spec.match[{i}]"), ctx) {
            Some(m) => matches.push(m),
            None => return,
        }
    }
    let Some(&idx) = snap.exact_hosts.get(&host) else {
        ctx.err(r, "spec.host", format!("no ServiceEntry or VirtualService serves host {:?}", rl.host));
        return;
    };
    snap.vhosts[idx].rate_limits.push(RateLimitRule {
        name: format!("RateLimit/{}", r.metadata.name),
        matches,
        bucket: weft_resilience::bucket::TokenBucket::new(tb.max_tokens, per_fill, interval),
    });
}
