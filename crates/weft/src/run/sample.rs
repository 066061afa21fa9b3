//! What `weft run --replicas` scales on, read from each instance's sidecar: its admin
//! `/stats/inbound` (the inbound listener's cumulative requests, duration histogram
//! and the time they took in all), sampled every [`SAMPLE_EVERY`]. Between two samples:
//! the mean concurrency (Little's law: time spent in requests over the time between),
//! and the p95 of the requests that ended (the histogram's difference, interpolated as
//! Prometheus's `histogram_quantile` does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use weft_api::report::DURATION_BOUNDS_MS;
use weft_api::InboundCounts;

/// How often the instances' sidecars are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The largest `/stats/inbound` answer read (it is ~200 bytes).
const MAX_ANSWER: u64 = 64 << 10;

/// What the instances did between the last two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Requests in progress at a time, all instances together (a mean over the period).
    pub concurrency: f64,
    /// The p95 of the requests that ended in the period (ms); none without requests.
    pub p95_ms: Option<f64>,
}

/// The last sample of each instance (by index).
#[derive(Default)]
pub struct Sampler {
    last: BTreeMap<usize, (Instant, InboundCounts)>,
}

impl Sampler {
    /// This period's samples, (instance, when, counts); `live` are the instances running
    /// now (the others are forgotten). None before a second sample of any.
    pub fn observe(&mut self, samples: Vec<(usize, Instant, InboundCounts)>, live: &[usize]) -> Option<Observed> {
        self.last.retain(|i, _| live.contains(i));
        let (mut concurrency, mut requests, mut buckets, mut any) = (0.0, 0u64, vec![0u64; DURATION_BOUNDS_MS.len()], false);
        for (i, at, counts) in samples {
            if let Some((then, before)) = self.last.get(&i) {
                let seconds = at.saturating_duration_since(*then).as_secs_f64();
                if seconds > 0.0 && counts.grew_from(before) && counts.buckets.len() == buckets.len() {
                    any = true;
                    concurrency += (counts.duration_sum_us - before.duration_sum_us) as f64 / 1e6 / seconds;
                    requests = requests.saturating_add(counts.requests - before.requests);
                    for (b, (now, then)) in buckets.iter_mut().zip(counts.buckets.iter().zip(&before.buckets)) {
                        *b = b.saturating_add(now - then);
                    }
                }
            }
            self.last.insert(i, (at, counts));
        }
        let p95_ms = weft_control::console::stats::quantile(0.95, &DURATION_BOUNDS_MS, &buckets, requests);
        any.then_some(Observed { concurrency, p95_ms })
    }
}

/// One instance's sidecar counts, from its admin at `admin` (a second at most); none
/// when it does not answer, or answers nonsense.
pub async fn fetch(admin: SocketAddr) -> Option<InboundCounts> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(format!("GET /stats/inbound HTTP/1.0\r\nhost: {admin}\r\n\r\n").as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut answer).await.ok()?;
        parse(&answer)
    };
    tokio::time::timeout(Duration::from_secs(1), exchange).await.ok().flatten()
}

/// A `200` answer's JSON body, checked.
fn parse(answer: &[u8]) -> Option<InboundCounts> {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&answer[..at]).ok()?.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    let counts: InboundCounts = serde_json::from_slice(&answer[at + 4..]).ok()?;
    counts.check().ok().map(|_| counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, busy_ms: u64, slow: u64) -> InboundCounts {
        // `slow` of them took (250, 500] ms, the rest (5, 10].
        let fast = requests - slow;
        let mut buckets = vec![0, 0, 0, fast, fast, fast, fast, fast];
        buckets.extend([requests; 5]);
        InboundCounts { requests, errors: 0, buckets, duration_sum_us: busy_ms * 1000 }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_and_p95_come_from_two_samples() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(vec![(0, t0, counts(0, 0, 0)), (1, t0, counts(10, 0, 0))], &[0, 1]), None, "one sample is no period");
        tokio::time::advance(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        // 2 s: instance 0 busy 4 s (2 at a time), instance 1 busy 1 s; 100 requests, 10 slow.
        let o = s.observe(vec![(0, t1, counts(50, 4000, 10)), (1, t1, counts(60, 1000, 0))], &[0, 1]).unwrap();
        assert_eq!(o.concurrency, 2.5);
        // The 95th of 100: the 5th of the 10 slow ones, half-way into (250, 500].
        assert_eq!(o.p95_ms, Some(375.0));
        // Counters that went down (a restarted sidecar) count nothing; a gone instance is forgotten.
        tokio::time::advance(Duration::from_secs(1)).await;
        let o = s.observe(vec![(0, Instant::now(), counts(1, 0, 0))], &[0]).unwrap_or(Observed { concurrency: -1.0, p95_ms: None });
        assert_eq!(o.concurrency, -1.0, "no period to speak of");
        assert!(!s.last.contains_key(&1));
        // No requests in the period: no p95, no concurrency.
        tokio::time::advance(Duration::from_secs(1)).await;
        let o = s.observe(vec![(0, Instant::now(), counts(1, 0, 0))], &[0]).unwrap();
        assert_eq!(o, Observed { concurrency: 0.0, p95_ms: None });
    }

    #[test]
    fn answers_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"requests\":2,\"errors\":0,\"buckets\":[0,0,0,0,0,0,0,0,0,0,0,0,2],\"durationSumUs\":5}";
        assert_eq!(parse(ok).map(|c| c.duration_sum_us), Some(5));
        let inconsistent = String::from_utf8_lossy(ok).replace("\"requests\":2", "\"requests\":1");
        assert_eq!(parse(inconsistent.as_bytes()), None);
        assert_eq!(parse(b"HTTP/1.1 404 Not Found\r\n\r\n{}"), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\n{\"requests\":-1}"), None);
        assert_eq!(parse(&[b'x'; 100_000]), None);
    }
}
