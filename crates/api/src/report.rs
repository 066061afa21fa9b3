//! `POST /v1/report`: what a proxy following the control plane tells it of its traffic
//! every ~10 s, for the web console — per destination service the cumulative requests,
//! 5xx answers and duration histogram it already counts, and the endpoints its outlier
//! detection has ejected. Cumulative, so that a lost report loses nothing but a point:
//! the control plane derives rates from the difference between two.
//!
//! A sidecar also tells what its inbound listener served its own app (`inbound`):
//! the control plane's replica recommendations come from those (Little's law: the
//! time spent in requests over the time between two reports is the mean concurrency).
//!
//! Bounded: at most [`MAX_DESTINATIONS`] destinations and [`MAX_EJECTED`] ejections,
//! [`MAX_REPORT_BYTES`] in all, names without control characters (they are shown in
//! pages and logs), counters consistent (5xx ≤ requests, buckets cumulative).

use serde::{Deserialize, Serialize};

use crate::{check_id, Message};

/// The largest report accepted (1,024 destinations with long names fit).
pub const MAX_REPORT_BYTES: usize = 1 << 20;
/// The most destinations one report may carry.
pub const MAX_DESTINATIONS: usize = 1024;
/// The most ejected endpoints one report may carry.
pub const MAX_EJECTED: usize = 1024;
/// The upper bounds (ms) of the duration buckets a report carries: Istio's default
/// buckets of `istio_request_duration_milliseconds`, which proxies count in.
pub const DURATION_BOUNDS_MS: [f64; 13] = [0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// One proxy's traffic since it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub node: String,
    /// When the proxy started (unix ms): counters only grow within one start.
    pub started_ms: u64,
    /// The service the proxy stands beside (`--service`) and its namespace.
    pub service: String,
    pub namespace: String,
    #[serde(default)]
    pub destinations: Vec<DestinationCounts>,
    #[serde(default)]
    pub ejected: Vec<Ejected>,
    /// What the inbound listener served the app beside it (a sidecar's; none otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundCounts>,
}

/// Requests an inbound listener served its app since the proxy started: also what a
/// sidecar's admin `/stats/inbound` answers (`weft run` scales on it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundCounts {
    pub requests: u64,
    /// Answered 5xx.
    pub errors: u64,
    /// Requests that took at most each of [`DURATION_BOUNDS_MS`] (cumulative).
    pub buckets: Vec<u64>,
    /// The time all of them took together, in microseconds.
    pub duration_sum_us: u64,
}

impl InboundCounts {
    /// Consistent counters: 5xx ≤ requests, buckets cumulative and at most the requests.
    pub fn check(&self) -> Result<(), String> {
        let c =
            DestinationCounts { service: "inbound".into(), requests: self.requests, errors: self.errors, buckets: self.buckets.clone() };
        c.check()
    }

    /// Whether every counter is at least `earlier`'s (the same proxy's previous count).
    pub fn grew_from(&self, earlier: &InboundCounts) -> bool {
        self.requests >= earlier.requests
            && self.errors >= earlier.errors
            && self.duration_sum_us >= earlier.duration_sum_us
            && self.buckets.iter().zip(&earlier.buckets).all(|(now, then)| now >= then)
    }
}

/// Requests to one destination service (all subsets, codes and protocols together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationCounts {
    /// The service host (`reviews.default.svc.cluster.local`).
    pub service: String,
    pub requests: u64,
    /// Answered 5xx.
    pub errors: u64,
    /// Requests that took at most each of [`DURATION_BOUNDS_MS`] (cumulative).
    pub buckets: Vec<u64>,
}

/// `GET /v1/recommendations`: one registered service's replica recommendation (see the
/// control plane's `replicas`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The service host (`reviews.default.svc.cluster.local`).
    pub service: String,
    pub namespace: String,
    /// Endpoints registered now.
    pub endpoints: u64,
    /// Requests its sidecars served at a time, in all (their last two reports); none
    /// when none reported.
    #[serde(default)]
    pub concurrency: Option<f64>,
    /// The target per endpoint (its `weft.io/target-concurrency` label).
    #[serde(default)]
    pub target_concurrency: Option<f64>,
    #[serde(default)]
    pub recommended: Option<u64>,
}

/// An endpoint outlier detection keeps out of its cluster now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ejected {
    /// The cluster's service host.
    pub service: String,
    pub address: String,
    pub reason: String,
    pub remaining_ms: u64,
}

impl Message for Report {
    const WHAT: &'static str = "report";
    const MAX_BYTES: usize = MAX_REPORT_BYTES;

    fn check(&self) -> Result<(), String> {
        check_id("node", &self.node)?;
        check_id("service", &self.service)?;
        check_id("namespace", &self.namespace)?;
        if self.destinations.len() > MAX_DESTINATIONS {
            return Err(format!("{} destinations, over the {MAX_DESTINATIONS} allowed", self.destinations.len()));
        }
        if self.ejected.len() > MAX_EJECTED {
            return Err(format!("{} ejected endpoints, over the {MAX_EJECTED} allowed", self.ejected.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.destinations {
            d.check()?;
            if !seen.insert(d.service.as_str()) {
                return Err(format!("destination {:?} is reported twice", crate::truncate(&d.service, 64)));
            }
        }
        if let Some(i) = &self.inbound {
            i.check()?;
        }
        for e in &self.ejected {
            check_id("ejected service", &e.service)?;
            check_id("ejected address", &e.address)?;
            check_id("ejection reason", &e.reason)?;
        }
        Ok(())
    }
}

impl DestinationCounts {
    fn check(&self) -> Result<(), String> {
        check_id("destination", &self.service)?;
        let name = crate::truncate(&self.service, 64);
        if self.errors > self.requests {
            return Err(format!("destination {name:?}: {} errors of {} requests", self.errors, self.requests));
        }
        if self.buckets.len() != DURATION_BOUNDS_MS.len() {
            return Err(format!("destination {name:?}: {} buckets, {} expected", self.buckets.len(), DURATION_BOUNDS_MS.len()));
        }
        if self.buckets.windows(2).any(|w| w[0] > w[1]) || self.buckets.last().is_some_and(|b| *b > self.requests) {
            return Err(format!("destination {name:?}: the buckets must be cumulative and at most the requests"));
        }
        Ok(())
    }

    /// Whether every counter is at least `earlier`'s (the same proxy's previous report).
    pub fn grew_from(&self, earlier: &DestinationCounts) -> bool {
        self.requests >= earlier.requests
            && self.errors >= earlier.errors
            && self.buckets.iter().zip(&earlier.buckets).all(|(now, then)| now >= then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dests: usize) -> Report {
        let d = |i: usize| DestinationCounts {
            service: format!("s{i}.default.svc.cluster.local"),
            requests: 10,
            errors: 1,
            buckets: vec![5; 13],
        };
        Report {
            node: "p-1".into(),
            started_ms: 1,
            service: "productpage".into(),
            namespace: "default".into(),
            destinations: (0..dests).map(d).collect(),
            ejected: vec![Ejected {
                service: "s0".into(),
                address: "10.0.0.1:80".into(),
                reason: "consecutive_5xx".into(),
                remaining_ms: 9,
            }],
            inbound: Some(InboundCounts { requests: 10, errors: 0, buckets: vec![4; 13], duration_sum_us: 1234 }),
        }
    }

    #[test]
    fn reports_round_trip() {
        let r = report(3);
        assert_eq!(Report::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn hostile_reports_are_refused_clearly() {
        let refused = |r: &Report| Report::decode(&r.encode()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused(&report(MAX_DESTINATIONS + 1)).contains("over the 1024 allowed"));
        let mut r = report(1);
        r.destinations[0].service = "a\nb".into();
        assert!(refused(&r).contains("without control characters"));
        let mut r = report(1);
        r.destinations[0].errors = 11;
        assert!(refused(&r).contains("1 errors of 10") || refused(&r).contains("11 errors of 10"));
        let mut r = report(1);
        r.destinations[0].buckets[3] = 4;
        assert!(refused(&r).contains("cumulative"));
        let mut r = report(1);
        r.destinations[0].buckets.pop();
        assert!(refused(&r).contains("12 buckets"));
        let mut r = report(2);
        r.destinations[1].service = r.destinations[0].service.clone();
        assert!(refused(&r).contains("twice"));
        let mut r = report(1);
        r.inbound.as_mut().unwrap().buckets[12] = 11;
        assert!(refused(&r).contains("at most the requests"));
        let mut r = report(1);
        r.inbound.as_mut().unwrap().errors = 11;
        assert!(refused(&r).contains("11 errors of 10"));
        let negative = String::from_utf8(report(1).encode()).unwrap().replace("\"requests\":10", "\"requests\":-10");
        assert!(Report::decode(negative.as_bytes()).is_err());
        assert!(Report::decode(&vec![b' '; MAX_REPORT_BYTES + 1]).err().unwrap().reason.contains("over the"));
        assert!(Report::decode(b"{\"node\":").is_err());
    }
}
