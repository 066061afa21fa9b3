//! A compact read of the request series per destination service, for the report a
//! proxy sends its control plane (the web console's graph). It reads the same atomics
//! a scrape reads, off the request path; recording is untouched.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::histogram::DURATION_BUCKETS_MS;
use crate::Metrics;

/// What this proxy sent to one destination service since it started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestinationTotals {
    pub requests: u64,
    /// Answered 5xx.
    pub errors: u64,
    /// Requests that took at most each of [`DURATION_BUCKETS_MS`] (cumulative).
    pub buckets: [u64; DURATION_BUCKETS_MS.len()],
}

/// What the inbound listener served its app since the proxy started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboundTotals {
    pub requests: u64,
    pub errors: u64,
    pub buckets: [u64; DURATION_BUCKETS_MS.len()],
    /// The durations added up, in microseconds.
    pub duration_sum_us: u64,
}

impl Metrics {
    /// Inbound requests (every code, protocol and caller added up): what `weft run`
    /// scales on and a sidecar reports.
    pub fn inbound_totals(&self) -> InboundTotals {
        let labels = self.dest_labels.pin();
        let mut t = InboundTotals::default();
        for (key, series) in self.series.pin().iter() {
            if !labels.get(&key.dest).is_some_and(|l| l.inbound) {
                continue;
            }
            let n = series.requests.load(Ordering::Relaxed);
            t.requests = t.requests.saturating_add(n);
            if (500..600).contains(&key.code) {
                t.errors = t.errors.saturating_add(n);
            }
            let (cumulative, _, sum_ms) = series.duration_ms.snapshot();
            for (b, (_, c)) in t.buckets.iter_mut().zip(cumulative) {
                *b = b.saturating_add(c);
            }
            t.duration_sum_us = t.duration_sum_us.saturating_add((sum_ms * 1000.0).round() as u64);
        }
        t
    }

    /// The service this proxy stands beside (`--service`).
    pub fn source_workload(&self) -> &str {
        &self.source_workload
    }

    /// Outbound requests per destination service (subsets, codes and protocols added
    /// up), at most `max` services (the busiest when there are more).
    pub fn outbound_totals(&self, max: usize) -> Vec<(String, DestinationTotals)> {
        let labels = self.dest_labels.pin();
        let mut by_service: BTreeMap<String, DestinationTotals> = BTreeMap::new();
        for (key, series) in self.series.pin().iter() {
            let Some(l) = labels.get(&key.dest).filter(|l| !l.inbound && key.dest.0 != 0) else { continue };
            let t = by_service.entry(l.service.clone()).or_default();
            let n = series.requests.load(Ordering::Relaxed);
            t.requests += n;
            if (500..600).contains(&key.code) {
                t.errors += n;
            }
            let (cumulative, _, _) = series.duration_ms.snapshot();
            for (b, (_, c)) in t.buckets.iter_mut().zip(cumulative) {
                *b += c;
            }
        }
        let mut out: Vec<_> = by_service.into_iter().collect();
        if out.len() > max {
            out.sort_by_key(|(_, t)| std::cmp::Reverse(t.requests));
            out.truncate(max);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DestLabels, Protocol, ResponseFlags, SeriesKey};

    #[test]
    fn totals_add_up_codes_and_subsets_per_service() {
        let m = Metrics::new("productpage", "default");
        let dest = |version: &str| {
            let labels = DestLabels {
                service: "reviews.default.svc.cluster.local".into(),
                namespace: "default".into(),
                version: version.into(),
                inbound: false,
            };
            m.dest_id(labels)
        };
        let key = |dest, code| SeriesKey {
            dest,
            code,
            flags: ResponseFlags::default(),
            protocol: Protocol::Http,
            grpc_status: -1,
            peer: Default::default(),
        };
        m.record(key(dest("v1"), 200), 3.0, 0, 0);
        m.record(key(dest("v2"), 200), 30.0, 0, 0);
        m.record(key(dest("v2"), 503), 300.0, 0, 0);
        let inbound =
            m.dest_id(DestLabels { service: "productpage".into(), namespace: "default".into(), version: "".into(), inbound: true });
        m.record(key(inbound, 200), 1.0, 0, 0);
        m.record(key(inbound, 502), 2.5, 0, 0);
        let i = m.inbound_totals();
        assert_eq!((i.requests, i.errors, i.duration_sum_us, i.buckets[1], i.buckets[2]), (2, 1, 3500, 1, 2));
        let totals = m.outbound_totals(10);
        assert_eq!(totals.len(), 1);
        let (service, t) = &totals[0];
        assert_eq!(service, "reviews.default.svc.cluster.local");
        assert_eq!((t.requests, t.errors), (3, 1));
        assert_eq!(t.buckets[2], 1); // ≤ 5 ms
        assert_eq!(t.buckets[5], 2); // ≤ 50 ms
        assert_eq!((t.buckets[7], t.buckets[8]), (2, 3)); // 300 ms: ≤ 500, not ≤ 250
    }

    /// What building a report's totals costs with 1,024 destination services, each with
    /// four series (`cargo test -p weft-telemetry --release -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn cost_of_the_totals_of_1024_destinations() {
        let m = Metrics::new("productpage", "default");
        for i in 0..1024 {
            let labels = DestLabels {
                service: format!("s{i}.default.svc.cluster.local"),
                namespace: "default".into(),
                version: "v1".into(),
                inbound: false,
            };
            let dest = m.dest_id(labels);
            for code in [200, 404, 500, 503] {
                let key = SeriesKey {
                    dest,
                    code,
                    flags: ResponseFlags::default(),
                    protocol: Protocol::Http,
                    grpc_status: -1,
                    peer: Default::default(),
                };
                m.record(key, 12.0, 100, 1000);
            }
        }
        let rounds = 100;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            assert_eq!(std::hint::black_box(m.outbound_totals(1024)).len(), 1024);
        }
        eprintln!("1,024 destinations, 4,096 series: {:?} per report", t.elapsed() / rounds);
    }
}
