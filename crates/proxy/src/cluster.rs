//! Runtime clusters: a compiled [`ClusterSpec`] plus its balancer and its endpoints'
//! live state (load, counters, connection pools).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use weft_balance::{Balancer, EndpointLoad, HasLoad, LeastRequest, Maglev, PeakEwma, PickCtx, RingHash, RoundRobin, WeightedRandom};
use weft_config::{ClusterSpec, EndpointSpec, HashAlgorithm, LbPolicy, PoolSettings};
use weft_resilience::outlier;
use weft_telemetry::{DestId, DestLabels, Metrics};

use crate::pool::Pool;

/// Where to connect.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Addr(SocketAddr),
    /// Resolved at connect time (`resolution: DNS`).
    Name(String, u16),
}

pub struct Endpoint {
    pub spec: EndpointSpec,
    /// `address:port`, the endpoint's identity for hashing and display.
    pub id: String,
    pub target: Target,
    pub load: EndpointLoad,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// One pool per worker thread.
    pub pools: Box<[Pool]>,
    pub pool_settings: PoolSettings,
    pub metrics: &'static Metrics,
    pub dest: DestId,
    /// The cluster's `outlierDetection`, and this endpoint's detector state.
    pub outlier: Option<outlier::Settings>,
    pub health: outlier::State,
    /// Active health checking (HealthCheck); healthy until a check says otherwise.
    pub checked: weft_resilience::health::Checked,
}

impl HasLoad for Endpoint {
    #[inline]
    fn load(&self) -> &EndpointLoad {
        &self.load
    }
}

pub struct Cluster {
    pub spec: ClusterSpec,
    pub dest: DestId,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub breaker: Arc<crate::breaker::Breaker>,
    /// When latency outliers were last looked for (clock ns).
    pub interval_checked: AtomicU64,
}

/// Monotonic nanoseconds since the process started (the peak-EWMA clock).
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

impl Cluster {
    /// Builds a cluster, keeping the live state of endpoints that `prev` already had
    /// (same cluster, address and pool settings), so a reload keeps warm connections.
    pub fn build(
        spec: &ClusterSpec,
        prev: &HashMap<(String, String), Arc<Endpoint>>,
        prev_breaker: Option<&Arc<crate::breaker::Breaker>>,
        workers: usize,
        metrics: &'static Metrics,
    ) -> Cluster {
        let namespace = spec.service.split('.').nth(1).unwrap_or("unknown").to_owned();
        let dest = metrics.dest_id(DestLabels {
            service: spec.service.clone(),
            namespace,
            version: spec.subset.clone().unwrap_or_else(|| "unknown".into()),
        });
        let endpoints: Vec<Arc<Endpoint>> = spec
            .endpoints
            .iter()
            .map(|e| {
                let id = e.authority();
                if let Some(old) = prev.get(&(spec.name.clone(), id.clone())) {
                    if old.pool_settings == spec.pool && old.spec == *e && old.pools.len() == workers && old.outlier == spec.outlier {
                        return old.clone();
                    }
                }
                let target = match e.address.parse::<std::net::IpAddr>() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, e.port)),
                    Err(_) => Target::Name(e.address.clone(), e.port),
                };
                Arc::new(Endpoint {
                    spec: e.clone(),
                    id,
                    target,
                    load: EndpointLoad::default(),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    pools: (0..workers).map(|_| Pool::default()).collect(),
                    pool_settings: spec.pool.clone(),
                    metrics,
                    dest,
                    outlier: spec.outlier,
                    health: outlier::State::default(),
                    checked: Default::default(),
                })
            })
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.spec.weight).collect();
        let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
        let balancer = match &spec.lb {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            LbPolicy::Random => Balancer::Random(WeightedRandom::new(&weights)),
            LbPolicy::LeastRequest | LbPolicy::Passthrough => Balancer::LeastRequest(LeastRequest::new(&weights)),
            LbPolicy::PeakEwma => Balancer::PeakEwma(PeakEwma::new(&weights, now_ns)),
            LbPolicy::Hash { algorithm: HashAlgorithm::RingHash { minimum_ring_size }, .. } => {
                Balancer::RingHash(RingHash::new(&ids, &weights, *minimum_ring_size))
            }
            LbPolicy::Hash { algorithm: HashAlgorithm::Maglev { table_size }, .. } => {
                Balancer::Maglev(Maglev::new(&ids, &weights, *table_size))
            }
        };
        let breaker = match prev_breaker {
            Some(b) if b.limits == spec.limits => b.clone(),
            _ => Arc::new(crate::breaker::Breaker::new(spec.limits)),
        };
        Cluster { spec: spec.clone(), dest, endpoints, balancer, breaker, interval_checked: AtomicU64::new(now_ns()) }
    }
}

impl Cluster {
    /// The balancer's pick, passing over endpoints that outlier detection ejected or
    /// that fail their health check, unless none (or, for ejections, too few) are
    /// left in service (panic routing: all are used).
    pub fn pick(&self, hash: Option<u64>) -> Option<usize> {
        let pick = || self.balancer.pick(&PickCtx { hash, loads: &self.endpoints });
        let i = pick()?;
        if self.spec.outlier.is_none() && self.endpoints[i].checked.is_healthy() {
            return Some(i);
        }
        let now = now_ns();
        let out_of_service = |j: usize| !self.endpoints[j].checked.is_healthy() || self.endpoints[j].health.is_ejected(now);
        if !out_of_service(i) {
            return Some(i);
        }
        let n = self.endpoints.len();
        let out = (0..n).filter(|&j| out_of_service(j)).count();
        let panic = self.spec.outlier.as_ref().is_some_and(|s| outlier::panic(s, out, n));
        if out >= n || panic {
            return Some(i);
        }
        for _ in 0..3 {
            match pick() {
                Some(j) if !out_of_service(j) => return Some(j),
                _ => {}
            }
        }
        // A hash policy keeps naming the same endpoint: the next one in service takes its keys.
        (1..n).map(|k| (i + k) % n).find(|&j| !out_of_service(j)).or(Some(i))
    }

    /// Ejects `ep` for `reason` if the cluster's ejection cap allows; returns how long.
    pub fn try_eject(&self, ep: &Endpoint, reason: outlier::Reason) -> Option<std::time::Duration> {
        let settings = self.spec.outlier.as_ref()?;
        let now = now_ns();
        let out = self.endpoints.iter().filter(|e| e.health.is_ejected(now)).count();
        if ep.health.is_ejected(now) || !outlier::may_eject(settings, out, self.endpoints.len()) {
            return None;
        }
        Some(ep.health.eject(settings, reason, now))
    }
}
