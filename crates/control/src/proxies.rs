//! What the control plane knows of the proxies following it: their acknowledged
//! revisions and NACKs, the nonces of the answers they were sent, and the push latency
//! histogram (change → ACK). In memory: a restarted control plane learns them again
//! from their next watch, which repeats the last outcome.
//!
//! Bounded: at most [`MAX_PROXIES`] are tracked (a proxy past that is served but not
//! listed), and a proxy not watching and not seen for [`FORGET_AFTER_MS`] (10 minutes
//! after its last watch ended) is forgotten; node ids are at most 253 bytes (checked
//! when the watch is decoded) and a NACK's reason is kept to [`MAX_REASON`] bytes.

use std::sync::Mutex;

use crate::store::{now_ms, Revision};

/// The most proxies tracked at once.
pub const MAX_PROXIES: usize = 10_000;
/// How long after its last watch a proxy that stopped watching is forgotten.
pub const FORGET_AFTER_MS: u64 = 10 * 60 * 1000;
/// The longest NACK reason kept per proxy.
pub const MAX_REASON: usize = 1024;

#[derive(Default)]
pub struct Tracker(Mutex<Proxies>);

/// What the control plane knows of the proxies following it (in memory: a restarted
/// control plane learns them again from their next watch).
struct Proxies {
    nodes: std::collections::BTreeMap<String, ProxyState>,
    max_nodes: usize,
    forget_after_ms: u64,
    /// When the forgotten were last looked for.
    pruned_ms: u64,
    /// When recent revisions were committed (unix ms), for push latency.
    committed_at: std::collections::BTreeMap<u64, u64>,
    nacks: u64,
    /// The last nonce handed out.
    nonces: u64,
    /// Push latency (commit → ACK) histogram: counts per bucket of PUSH_BUCKETS_MS, then +Inf.
    push_ms: [u64; PUSH_BUCKETS_MS.len() + 1],
    push_sum_ms: u64,
}

pub const PUSH_BUCKETS_MS: [u64; 16] = [1, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 200, 500, 1000, 5000];

impl Default for Proxies {
    fn default() -> Proxies {
        Proxies {
            nodes: Default::default(),
            max_nodes: MAX_PROXIES,
            forget_after_ms: FORGET_AFTER_MS,
            pruned_ms: 0,
            committed_at: Default::default(),
            nacks: 0,
            nonces: 0,
            push_ms: Default::default(),
            push_sum_ms: 0,
        }
    }
}

impl Proxies {
    /// A proxy's state, made on first sight (its name copied only then: every watch
    /// comes here three times); none when [`MAX_PROXIES`] are tracked already.
    fn node(&mut self, node: &str, now: u64) -> Option<&mut ProxyState> {
        // (Looked for at most once a second, or when full: a scan of every proxy.)
        if now.saturating_sub(self.pruned_ms) >= 1000 || (self.nodes.len() >= self.max_nodes && self.pruned_ms != now) {
            self.forget(now);
        }
        if !self.nodes.contains_key(node) {
            if self.nodes.len() >= self.max_nodes {
                return None;
            }
            self.nodes.insert(node.to_owned(), ProxyState { last_seen_ms: now, ..ProxyState::default() });
        }
        self.nodes.get_mut(node)
    }

    /// Forgets the proxies that stopped watching more than `forget_after_ms` ago.
    fn forget(&mut self, now: u64) {
        self.pruned_ms = now;
        let after = self.forget_after_ms;
        self.nodes.retain(|_, s| s.watching || now.saturating_sub(s.last_seen_ms) < after);
    }
}

#[derive(Default, Clone)]
struct ProxyState {
    acked: u64,
    nacked: Option<u64>,
    nack_reason: Option<String>,
    last_seen_ms: u64,
    watching: bool,
    /// The nonce of the last answer sent to it (0: none yet).
    nonce: u64,
    /// Who first followed under this node id (a workload or token); only they may
    /// watch or acknowledge as it until it is forgotten. Empty: nobody checked (`--insecure`).
    owner: String,
    /// Its workload certificate's expiry (unix seconds), as its last watch said.
    cert_not_after: Option<u64>,
}

impl Tracker {
    /// Notes when a revision was committed, for push latency.
    pub fn committed(&self, r: &Revision) {
        if let Ok(mut p) = self.0.lock() {
            p.committed_at.insert(r.revision, r.at_ms);
            while p.committed_at.len() > 1000 {
                p.committed_at.pop_first();
            }
        }
    }

    /// A tracker with other bounds (tests).
    pub fn with_limits(max_nodes: usize, forget_after_ms: u64) -> Tracker {
        Tracker(Mutex::new(Proxies { max_nodes, forget_after_ms, ..Proxies::default() }))
    }

    /// Whether `owner` may speak for `node`: the first caller to name a node owns it
    /// until the node is forgotten, so nobody can forge another proxy's ACK or NACK.
    pub fn claim(&self, node: &str, owner: &str) -> bool {
        if owner.is_empty() {
            return true;
        }
        let Ok(mut p) = self.0.lock() else { return false };
        match p.node(node, now_ms()) {
            Some(s) if s.owner.is_empty() => {
                s.owner = owner.to_owned();
                true
            }
            Some(s) => s.owner == owner,
            // The table is full of live proxies: nothing is tracked, nothing is forged.
            None => true,
        }
    }

    /// Notes the expiry of `node`'s workload certificate.
    pub fn certificate(&self, node: &str, not_after: Option<u64>) {
        if let Ok(mut p) = self.0.lock() {
            if let Some(s) = p.node(node, now_ms()) {
                s.cert_not_after = not_after;
            }
        }
    }

    pub fn seen(&self, node: &str, watching: bool) {
        self.seen_at(node, watching, now_ms());
    }

    fn seen_at(&self, node: &str, watching: bool, now: u64) {
        if let Ok(mut p) = self.0.lock() {
            if let Some(s) = p.node(node, now) {
                s.last_seen_ms = now;
                s.watching = watching;
            }
        }
    }

    /// A new nonce for an answer; with a node, the ACK naming it is the one that counts.
    /// (An answer to no node — the fetch a proxy makes at start — gets one too: its
    /// ACK comes with the proxy's first watch.)
    pub fn next_nonce(&self, node: Option<&str>) -> u64 {
        let Ok(mut p) = self.0.lock() else { return 0 };
        p.nonces += 1;
        let n = p.nonces;
        if let Some(s) = node.and_then(|node| p.node(node, now_ms())) {
            s.nonce = n;
        }
        n
    }

    /// Whether an outcome's nonce names the last answer sent to `node`. Before this
    /// control plane has answered `node` any watch, any nonce counts: the proxy's
    /// first watch ACKs what it fetched at start, and a proxy that followed a control
    /// plane since restarted repeats its last outcome. Later, an outcome naming an
    /// older answer is stale and ignored.
    pub fn current_nonce(&self, node: &str, nonce: u64) -> bool {
        self.0.lock().map(|p| p.nodes.get(node).is_none_or(|s| s.nonce == nonce || s.nonce == 0)).unwrap_or(false)
    }

    /// An ACK (`reason` none) or a NACK of `revision`.
    pub fn ack(&self, node: &str, revision: u64, reason: Option<&str>) {
        let Ok(mut p) = self.0.lock() else { return };
        let now = now_ms();
        let committed = p.committed_at.get(&revision).copied();
        let Some(s) = p.node(node, now) else { return };
        s.last_seen_ms = now;
        match reason {
            Some(e) => {
                // (Every watch repeats the last outcome: a NACK counts once.)
                let new = s.nacked != Some(revision);
                s.nacked = Some(revision);
                s.nack_reason = Some(weft_api::truncate(e, MAX_REASON).to_owned());
                p.nacks += u64::from(new);
            }
            None => {
                let first = s.acked < revision;
                s.acked = s.acked.max(revision);
                s.nacked = None;
                s.nack_reason = None;
                if let (true, Some(at)) = (first, committed) {
                    let ms = now.saturating_sub(at);
                    let b = PUSH_BUCKETS_MS.iter().position(|le| ms <= *le).unwrap_or(PUSH_BUCKETS_MS.len());
                    p.push_ms[b] += 1;
                    p.push_sum_ms += ms;
                }
            }
        }
    }

    /// `weft status`: every proxy with its acknowledged revision and lag behind `latest`.
    /// `identity` names an owner as `weft status` shows it.
    pub fn status(&self, latest: u64, identity: impl Fn(&str) -> String) -> Vec<weft_api::ProxyStatus> {
        let nodes = self.0.lock().map(|p| p.nodes.clone()).unwrap_or_default();
        let now = now_ms();
        nodes
            .into_iter()
            .map(|(node, s)| weft_api::ProxyStatus {
                node,
                acked: s.acked,
                latest,
                lag: latest.saturating_sub(s.acked),
                nacked: s.nacked,
                nack_reason: s.nack_reason,
                last_seen_ms_ago: now.saturating_sub(s.last_seen_ms),
                connected: s.watching,
                identity: (!s.owner.is_empty()).then(|| identity(&s.owner)),
                cert_not_after: s.cert_not_after,
            })
            .collect()
    }

    /// NACKs and the push latency histogram, as Prometheus text.
    pub fn metrics(&self) -> String {
        let Ok(px) = self.0.lock() else { return String::new() };
        let mut text = format!("# HELP weft_control_nacks_total Meshes proxies refused.\n# TYPE weft_control_nacks_total counter\nweft_control_nacks_total {}\n", px.nacks);
        text +=
            "# HELP weft_control_push_latency_ms From a change's commit to a proxy's ACK.\n# TYPE weft_control_push_latency_ms histogram\n";
        let mut cum = 0;
        for (i, le) in PUSH_BUCKETS_MS.iter().enumerate() {
            cum += px.push_ms[i];
            text += &format!("weft_control_push_latency_ms_bucket{{le=\"{le}\"}} {cum}\n");
        }
        cum += px.push_ms[PUSH_BUCKETS_MS.len()];
        text += &format!("weft_control_push_latency_ms_bucket{{le=\"+Inf\"}} {cum}\nweft_control_push_latency_ms_sum {}\nweft_control_push_latency_ms_count {cum}\n", px.push_sum_ms);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(t: &Tracker) -> Vec<String> {
        t.0.lock().unwrap().nodes.keys().cloned().collect()
    }

    #[test]
    fn proxies_that_left_are_forgotten() {
        let t = Tracker::with_limits(100, 10_000);
        t.seen_at("gone", true, 1_000);
        t.seen_at("gone", false, 2_000); // its watch ended
        t.seen_at("stays", true, 2_000); // still watching (a long poll)
        t.seen_at("other", false, 11_000);
        assert_eq!(nodes(&t), ["gone", "other", "stays"]);
        t.seen_at("other", false, 12_001);
        assert_eq!(nodes(&t), ["other", "stays"]);
    }

    #[test]
    fn at_most_max_proxies_are_tracked() {
        let t = Tracker::with_limits(3, 10_000);
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            t.seen_at(n, true, 1_000 + i as u64);
        }
        assert_eq!(nodes(&t), ["a", "b", "c"]);
        t.seen_at("a", false, 1_010);
        t.seen_at("d", true, 20_000); // a left long ago: room for d
        assert_eq!(nodes(&t), ["b", "c", "d"]);
        let long = "x".repeat(1 << 20);
        t.ack("b", 1, Some(&long));
        assert!(t.status(1, str::to_owned).iter().all(|s| s.nack_reason.as_ref().is_none_or(|r| r.len() <= MAX_REASON)));
    }
}
