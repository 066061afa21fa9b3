//! What the control plane knows of the proxies following it: their acknowledged
//! revisions and NACKs, the nonces of the answers they were sent, and the push latency
//! histogram (change → ACK). In memory: a restarted control plane learns them again
//! from their next watch, which repeats the last outcome.

use std::sync::Mutex;

use serde_json::{json, Value};

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

#[derive(Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyState {
    acked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nacked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nack_reason: Option<String>,
    last_seen_ms: u64,
    watching: bool,
    #[serde(skip)]
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

    /// A new nonce for an answer to `node`; the ACK naming it is the one that counts.
    pub fn next_nonce(&self, node: &str) -> u64 {
        let Ok(mut p) = self.0.lock() else { return 0 };
        p.nonces += 1;
        let n = p.nonces;
        p.node(node).nonce = n;
        n
    }

    /// Whether an ACK's nonce names the last answer sent to `node` (an ACK without
    /// one, from `/v1/ack`, counts; one for an older answer is stale and ignored).
    pub fn current_nonce(&self, node: &str, nonce: Option<&String>) -> bool {
        let Some(n) = nonce.and_then(|n| n.parse::<u64>().ok()) else { return nonce.is_none() };
        self.0.lock().map(|p| p.nodes.get(node).is_none_or(|s| s.nonce == n || s.nonce == 0)).unwrap_or(false)
    }

    pub fn ack(&self, node: &str, revision: u64, error: Option<&String>) {
        let Ok(mut p) = self.0.lock() else { return };
        let now = now_ms();
        let committed = p.committed_at.get(&revision).copied();
        let s = p.node(node);
        s.last_seen_ms = now;
        match error {
            Some(e) => {
                // (Every watch repeats the last outcome: a NACK counts once.)
                let new = s.nacked != Some(revision);
                s.nacked = Some(revision);
                s.nack_reason = Some(e.clone());
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
    pub fn status(&self, latest: u64) -> Vec<Value> {
        let nodes = self.0.lock().map(|p| p.nodes.clone()).unwrap_or_default();
        let now = now_ms();
        nodes
            .into_iter()
            .map(|(node, s)| json!({"node": node, "acked": s.acked, "latest": latest, "lag": latest.saturating_sub(s.acked), "nacked": s.nacked, "nackReason": s.nack_reason, "lastSeenMsAgo": now.saturating_sub(s.last_seen_ms), "connected": s.watching}))
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
