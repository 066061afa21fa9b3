//! What the control plane knows of the proxies following it: their acknowledged
//! revisions and NACKs, the nonces of the answers they were sent, and the push latency
//! histogram (change → ACK). In memory: a restarted control plane learns them again
//! from their next watch, which repeats the last outcome.

use std::sync::Mutex;

use crate::store::{now_ms, Revision};

#[derive(Default)]
pub struct Tracker(Mutex<Proxies>);

/// What the control plane knows of the proxies following it (in memory: a restarted
/// control plane learns them again from their next watch).
#[derive(Default)]
struct Proxies {
    nodes: std::collections::BTreeMap<String, ProxyState>,
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

impl Proxies {
    /// A proxy's state, made on first sight (its name copied only then: every watch
    /// comes here three times).
    fn node(&mut self, node: &str) -> &mut ProxyState {
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.to_owned(), ProxyState::default());
        }
        self.nodes.get_mut(node).expect("inserted above")
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

    pub fn seen(&self, node: &str, watching: bool) {
        if let Ok(mut p) = self.0.lock() {
            let s = p.node(node);
            s.last_seen_ms = now_ms();
            s.watching = watching;
        }
    }

    /// A new nonce for an answer; with a node, the ACK naming it is the one that counts.
    /// (An answer to no node — the fetch a proxy makes at start — gets one too: its
    /// ACK comes with the proxy's first watch.)
    pub fn next_nonce(&self, node: Option<&str>) -> u64 {
        let Ok(mut p) = self.0.lock() else { return 0 };
        p.nonces += 1;
        let n = p.nonces;
        if let Some(node) = node {
            p.node(node).nonce = n;
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
        let s = p.node(node);
        s.last_seen_ms = now;
        match reason {
            Some(e) => {
                // (Every watch repeats the last outcome: a NACK counts once.)
                let new = s.nacked != Some(revision);
                s.nacked = Some(revision);
                s.nack_reason = Some(e.to_owned());
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
    pub fn status(&self, latest: u64) -> Vec<weft_api::ProxyStatus> {
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
