//! The traffic reports proxies send (`POST /v1/report`), kept for the console: per
//! proxy the last two, from which each edge (source service → destination service)
//! gets its request rate, error share and p99.
//!
//! Bounded like the proxy table ([`crate::proxies`]): reports from at most
//! [`MAX_PROXIES`] proxies, at most [`MAX_HELD_DESTINATIONS`] entries in all —
//! destinations and ejected endpoints alike (each report ≤ 1,024 of each, checked when it
//! is decoded; ~1 KB an entry at most, so ~100 MB held at worst) — and a proxy that stopped
//! reporting is forgotten [`FORGET_AFTER_MS`] after its last report. Within one start
//! of a proxy its counters only grow: a report whose counters went down is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use weft_api::report::{DestinationCounts, Ejected, Report};

use super::stats::Window;
use crate::proxies::{FORGET_AFTER_MS, MAX_PROXIES};

/// Entries (destinations and ejections) held across all proxies' reports (two reports each).
pub const MAX_HELD_DESTINATIONS: usize = 100_000;
/// A proxy whose last report is older than this adds nothing to the edges' rates.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Why a report was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The report contradicts the proxy's previous one (400).
    #[error("{0}")]
    Invalid(String),
    /// No room for it (503): too many proxies or destinations are reporting.
    #[error("{0}")]
    Full(String),
}

#[derive(Default)]
pub struct Reports(Mutex<Held>);

#[derive(Default)]
struct Held {
    proxies: BTreeMap<String, Pair>,
    /// Destination entries in all held reports.
    destinations: usize,
    /// When silent proxies were last looked for (at most once a second: a scan of all).
    pruned: Option<Instant>,
}

struct Pair {
    last: Received,
    previous: Option<Received>,
}

struct Received {
    at: Instant,
    report: Report,
}

impl Pair {
    fn destinations(&self) -> usize {
        entries(&self.last.report) + self.previous.as_ref().map_or(0, |p| entries(&p.report))
    }
}

/// What a report holds that counts against [`MAX_HELD_DESTINATIONS`].
fn entries(r: &Report) -> usize {
    r.destinations.len() + r.ejected.len()
}

/// One edge of the mesh graph, over the proxies' last windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub window: Window,
}

impl Reports {
    /// Keeps `r` (decoded and checked) as its proxy's latest report, received `now`.
    pub fn ingest(&self, r: Report, now: Instant) -> Result<(), Refusal> {
        let Ok(mut held) = self.0.lock() else { return Err(Refusal::Full("the report table is unavailable".into())) };
        held.forget(now);
        let old = held.proxies.get(&r.node);
        if let Some(last) = old.map(|p| &p.last.report).filter(|l| l.started_ms == r.started_ms) {
            check_grew(last, &r)?;
        }
        if old.is_none() && held.proxies.len() >= MAX_PROXIES {
            return Err(Refusal::Full(format!("reports from {MAX_PROXIES} proxies are held already")));
        }
        let freed = old.map_or(0, |p| p.previous.as_ref().map_or(0, |x| entries(&x.report)));
        if held.destinations - freed + entries(&r) > MAX_HELD_DESTINATIONS {
            return Err(Refusal::Full(format!("reports of {MAX_HELD_DESTINATIONS} destinations and ejections are held already")));
        }
        let node = r.node.clone();
        let received = Received { at: now, report: r };
        let old = held.proxies.remove(&node);
        held.destinations -= old.as_ref().map_or(0, Pair::destinations);
        let pair = match old {
            Some(p) if p.last.report.started_ms == received.report.started_ms => Pair { previous: Some(p.last), last: received },
            _ => Pair { last: received, previous: None },
        };
        held.destinations += pair.destinations();
        held.proxies.insert(node, pair);
        Ok(())
    }

    /// Every edge the recent reports show, by (source, destination).
    pub fn edges(&self, now: Instant) -> Vec<Edge> {
        let Ok(held) = self.0.lock() else { return Vec::new() };
        let mut edges: BTreeMap<(String, String), Window> = BTreeMap::new();
        for pair in held.proxies.values().filter(|p| now.saturating_duration_since(p.last.at) < STALE_AFTER) {
            let Some(prev) = &pair.previous else { continue };
            let seconds = pair.last.at.saturating_duration_since(prev.at).as_secs_f64();
            let source = source_service(&pair.last.report);
            let earlier = by_service(&prev.report);
            for d in &pair.last.report.destinations {
                if let Some(w) = Window::between(earlier.get(d.service.as_str()).copied(), d, seconds) {
                    edges.entry((source.clone(), d.service.clone())).or_default().add(&w);
                }
            }
        }
        edges.into_iter().map(|((source, destination), window)| Edge { source, destination, window }).collect()
    }

    /// Per service (its host), the mean number of requests its sidecars' inbound
    /// listeners were serving between their last two reports, added over its sidecars
    /// (Little's law: the time spent in requests over the time between the reports).
    pub fn inbound_concurrency(&self, now: Instant) -> BTreeMap<String, f64> {
        let Ok(held) = self.0.lock() else { return BTreeMap::new() };
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for pair in held.proxies.values().filter(|p| now.saturating_duration_since(p.last.at) < STALE_AFTER) {
            let Some(prev) = &pair.previous else { continue };
            let (Some(later), Some(earlier)) = (&pair.last.report.inbound, &prev.report.inbound) else { continue };
            let seconds = pair.last.at.saturating_duration_since(prev.at).as_secs_f64();
            if seconds <= 0.0 || !later.grew_from(earlier) {
                continue;
            }
            let busy = (later.duration_sum_us - earlier.duration_sum_us) as f64 / 1e6;
            *out.entry(source_service(&pair.last.report)).or_default() += busy / seconds;
        }
        out
    }

    /// The endpoints the proxies' last reports say are ejected: (node, ejection).
    pub fn ejected(&self, now: Instant) -> Vec<(String, Ejected)> {
        let Ok(held) = self.0.lock() else { return Vec::new() };
        let fresh = held.proxies.iter().filter(|(_, p)| now.saturating_duration_since(p.last.at) < STALE_AFTER);
        fresh.flat_map(|(node, p)| p.last.report.ejected.iter().map(|e| (node.clone(), e.clone()))).collect()
    }

    /// Proxies whose reports are held (tests, and bounds).
    pub fn held(&self) -> (usize, usize) {
        self.0.lock().map(|h| (h.proxies.len(), h.destinations)).unwrap_or_default()
    }
}

impl Held {
    /// Drops the reports of proxies silent for [`FORGET_AFTER_MS`].
    fn forget(&mut self, now: Instant) {
        if self.pruned.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.pruned = Some(now);
        let after = Duration::from_millis(FORGET_AFTER_MS);
        self.proxies.retain(|_, p| now.saturating_duration_since(p.last.at) < after);
        self.destinations = self.proxies.values().map(Pair::destinations).sum();
    }
}

/// A later report of the same start must not count less than the one before.
fn check_grew(last: &Report, r: &Report) -> Result<(), Refusal> {
    let earlier = by_service(last);
    for d in &r.destinations {
        if let Some(before) = earlier.get(d.service.as_str()) {
            if !d.grew_from(before) {
                let name = weft_api::truncate(&d.service, 64);
                return Err(Refusal::Invalid(format!("destination {name:?}: counters went down since the last report of this start")));
            }
        }
    }
    if let (Some(before), Some(now)) = (&last.inbound, &r.inbound) {
        if !now.grew_from(before) {
            return Err(Refusal::Invalid("inbound: counters went down since the last report of this start".into()));
        }
    }
    Ok(())
}

/// A report's destinations by service (each is there once: checked when decoded).
fn by_service(r: &Report) -> HashMap<&str, &DestinationCounts> {
    r.destinations.iter().map(|d| (d.service.as_str(), d)).collect()
}

/// The service a proxy stands beside, as a host (`reviews` in `default`:
/// `reviews.default.svc.cluster.local`), the way destinations are named.
pub fn source_service(r: &Report) -> String {
    if r.service.contains('.') {
        r.service.to_ascii_lowercase()
    } else {
        format!("{}.{}.svc.{}", r.service.to_ascii_lowercase(), r.namespace, weft_config::names::CLUSTER_DOMAIN)
    }
}

#[cfg(test)]
mod tests;
