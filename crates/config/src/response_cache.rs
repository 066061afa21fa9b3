//! `kind: ResponseCache` → a [`CachePolicy`] on the virtual host it names.

use crate::compile::Ctx;
use crate::load::Resource;
use crate::ratelimit::served;
use crate::snapshot::{CachePolicy, Snapshot};
use crate::vhost::compile_spec_matches;
use crate::weft_kinds::ResponseCache;

/// 64 MiB: a sidecar's cache should not dwarf the proxy (a few MB of its own).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// 1 MiB: large bodies would evict many small hot ones for one hit each.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;

pub(crate) fn attach(r: &Resource, c: &ResponseCache, snap: &mut Snapshot, ctx: &mut Ctx<'_>) {
    let host = ctx.resolve(r, &c.host);
    if host.is_empty() {
        ctx.err(r, "spec.host", "missing field");
        return;
    }
    let before = ctx.diags.errors.len();
    let max_bytes = c.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes == 0 {
        ctx.err(r, "spec.maxBytes", "must be at least 1 (leave it out for 64 MiB)");
    }
    let max_entry_bytes = c.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES.min(max_bytes.max(1)));
    if max_entry_bytes == 0 {
        ctx.err(r, "spec.maxEntryBytes", "must be at least 1");
    } else if max_bytes > 0 && max_entry_bytes > max_bytes {
        ctx.err(r, "spec.maxEntryBytes", format!("{max_entry_bytes} is more than maxBytes ({max_bytes})"));
    } else if max_entry_bytes > u64::from(u32::MAX) {
        // the store weighs entries in u32
        ctx.err(r, "spec.maxEntryBytes", format!("{max_entry_bytes} is more than {} (4 GiB)", u32::MAX));
    }
    let matches = compile_spec_matches(r, &c.matches, ctx);
    let Some(matches) = matches.filter(|_| ctx.diags.errors.len() == before) else { return };
    let Some(idx) = served(r, &host, snap, ctx) else { return };
    snap.vhosts[idx].response_cache.push(CachePolicy {
        name: format!("ResponseCache/{}", r.metadata.name),
        matches,
        max_bytes,
        max_entry_bytes,
    });
}
