//! Runtime clusters: a compiled [`ClusterSpec`] plus its balancer and its endpoints'
//! live state (load, counters, connection pools).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use weft_balance::locality::{self, Locality};
use weft_balance::{Balancer, EndpointLoad, HasLoad, LeastRequest, Maglev, PeakEwma, PickCtx, RingHash, RoundRobin, WeightedRandom};
use weft_config::{ClusterSpec, EndpointSpec, HashAlgorithm, LbPolicy, LocalityLb, PoolSettings};
use weft_resilience::outlier;
use weft_telemetry::{DestId, DestLabels, Metrics, PeerId};

use crate::pool::Pool;
use crate::transport::Transport;

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
    /// The cluster's (one allocation for all its endpoints) or, for an in-mesh endpoint of
    /// a mixed cluster, its own (auto mTLS).
    pub pool_settings: Arc<PoolSettings>,
    /// How connections to it are opened (plain TCP outside tests).
    pub transport: Transport,
    pub metrics: &'static Metrics,
    pub dest: DestId,
    /// The principals of this proxy's mTLS to it (`ISTIO_MUTUAL`, auto or explicit),
    /// for the `reporter="source"` metrics; 0 when it is not reached over the mesh's mTLS.
    pub peer: PeerId,
    /// The cluster's `outlierDetection`, and this endpoint's detector state.
    pub outlier: Option<outlier::Settings>,
    pub health: outlier::State,
    /// Active health checking (HealthCheck); healthy until a check says otherwise.
    pub checked: weft_resilience::health::Checked,
    /// When it joined a running cluster ([`now_ns`]), for slow start; 0: it was there
    /// when the cluster was made (no slow start, as in Envoy).
    pub added_ns: u64,
}

impl HasLoad for Endpoint {
    #[inline]
    fn load(&self) -> &EndpointLoad {
        &self.load
    }
}

/// Who this proxy is, for locality-aware balancing: `--locality` and `--label`s (the
/// locality also shows as the topology labels, as Istio adds them to workloads).
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub locality: Option<Locality>,
    pub labels: BTreeMap<String, String>,
}

impl Node {
    pub fn new(locality: Option<Locality>, mut labels: BTreeMap<String, String>) -> Node {
        if let Some(l) = &locality {
            topology_labels(l, &mut labels);
        }
        Node { locality, labels }
    }
}

fn topology_labels(l: &Locality, labels: &mut BTreeMap<String, String>) {
    for (k, v) in [(TOPOLOGY_REGION, &l.region), (TOPOLOGY_ZONE, &l.zone), (TOPOLOGY_SUBZONE, &l.subzone)] {
        if !v.is_empty() {
            labels.entry(k.to_owned()).or_insert_with(|| v.clone());
        }
    }
}

const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
const TOPOLOGY_SUBZONE: &str = "topology.istio.io/subzone";

/// Priority levels (locality failover) or locality weights (distribute): each level a
/// balancer over its members. Endpoints in no level (a distribute rule gives their
/// locality no weight) get no traffic.
pub struct Levels {
    pub levels: Vec<Level>,
    /// Each endpoint's level (`u8::MAX`: none).
    pub level_of: Vec<u8>,
    /// Cached share per level (millionths) and when it was computed (clock ns; 0 = stale).
    shares: Box<[AtomicU32]>,
    shares_at: AtomicU64,
}

pub struct Level {
    /// Indexes into the cluster's endpoints.
    pub members: Vec<usize>,
    eps: Vec<Arc<Endpoint>>,
    balancer: Balancer,
}

/// How long level shares are reused before health is counted again (an ejection
/// recounts at once).
const SHARES_TTL_NS: u64 = 50_000_000;

pub struct Cluster {
    /// Shared with the runtime's specs when nothing (mesh mTLS) changed it.
    pub spec: Arc<ClusterSpec>,
    pub dest: DestId,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub levels: Option<Levels>,
    pub breaker: Arc<crate::breaker::Breaker>,
    /// When latency outliers were last looked for (clock ns).
    pub interval_checked: AtomicU64,
}

/// Monotonic nanoseconds since the process started (the peak-EWMA and slow-start
/// clock). tokio's `Instant`: the same as std's in a build, and paused with the runtime's
/// clock in tests (`test-util`), so that time-dependent balancing is tested without sleeping.
pub fn now_ns() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    START.get_or_init(tokio::time::Instant::now).elapsed().as_nanos() as u64 + 1
}

/// A pick under slow start: while an endpoint is warming up, endpoints are picked at
/// random by `weight × factor` (Envoy's effective weights: a new endpoint's share grows
/// from its minimum to its weight over the window); otherwise the balancer picks as
/// usual. O(endpoints) per pick, during a warm-up only.
fn slow_start(w: &weft_config::Warmup, eps: &[Arc<Endpoint>], pick: impl Fn() -> Option<usize>) -> Option<usize> {
    let now = now_ns();
    let factor = |e: &Endpoint| match e.added_ns {
        0 => 1.0,
        added => w.factor(std::time::Duration::from_nanos(now.saturating_sub(added))),
    };
    if eps.iter().all(|e| factor(e) >= 1.0) {
        return pick();
    }
    let effective = |e: &Arc<Endpoint>| f64::from(e.spec.weight) * factor(e);
    let total: f64 = eps.iter().map(effective).sum();
    let mut r = fastrand::f64() * total;
    for (i, e) in eps.iter().enumerate() {
        r -= effective(e);
        if r < 0.0 {
            return Some(i);
        }
    }
    eps.len().checked_sub(1)
}

impl Cluster {
    /// Builds a cluster, keeping the live state of endpoints that `prev` already had
    /// (same cluster, address and pool settings), so a reload keeps warm connections.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        spec: &Arc<ClusterSpec>,
        prev: &HashMap<(String, String), Arc<Endpoint>>,
        prev_breaker: Option<&Arc<crate::breaker::Breaker>>,
        workers: usize,
        metrics: &'static Metrics,
        node: &Node,
        transport: &Transport,
        mesh: Option<&crate::mesh_tls::MeshTls>,
    ) -> Cluster {
        let dest = metrics.dest_id(DestLabels {
            service: spec.service.clone(),
            namespace: spec.namespace.clone(),
            version: spec.subset.clone().unwrap_or_else(|| "unknown".into()),
            inbound: spec.name.starts_with(weft_config::inbound::INBOUND_PREFIX),
        });
        // A cluster the previous config had (it has its breaker): endpoints new to it are
        // in slow start.
        let running = prev_breaker.is_some();
        let cluster_pool = Arc::new(spec.pool.clone());
        let endpoints: Vec<Arc<Endpoint>> = spec
            .endpoints
            .iter()
            .map(|e| {
                let id = e.authority();
                let added_ns = match prev.get(&(spec.name.clone(), id.clone())) {
                    Some(old) => old.added_ns,
                    None if running => now_ns(),
                    None => 0,
                };
                let pool = mesh.and_then(|m| m.endpoint(spec, e)).map(Arc::new).unwrap_or_else(|| cluster_pool.clone());
                if let Some(old) = prev.get(&(spec.name.clone(), id.clone())) {
                    if old.pool_settings == pool && old.spec == *e && old.pools.len() == workers && old.outlier == spec.outlier {
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
                    peer: mesh.map(|m| m.principals(&pool, metrics)).unwrap_or_default(),
                    pool_settings: pool,
                    transport: transport.clone(),
                    metrics,
                    dest,
                    outlier: spec.outlier,
                    health: outlier::State::default(),
                    checked: Default::default(),
                    added_ns,
                })
            })
            .collect();
        if let Some(t) = spec.pool.tls.as_ref().filter(|t| t.insecure_skip_verify) {
            // Once per cluster and config that set it (a reload that keeps it stays quiet).
            let kept = endpoints.iter().any(|e| prev.get(&(spec.name.clone(), e.id.clone())).is_some_and(|o| Arc::ptr_eq(o, e)));
            if !kept {
                tracing::warn!(cluster = %spec.name, mode = ?t.mode, "tls.insecureSkipVerify: the upstream's certificate is not verified");
            }
        }
        let weights: Vec<u32> = endpoints.iter().map(|e| e.spec.weight).collect();
        let balancer = balancer(&spec.lb, &endpoints, &weights);
        let levels = spec.locality.as_ref().and_then(|l| levels(l, &spec.lb, &endpoints, node));
        let breaker = match prev_breaker {
            Some(b) if b.limits == spec.limits => b.clone(),
            _ => Arc::new(crate::breaker::Breaker::new(spec.limits)),
        };
        Cluster { spec: spec.clone(), dest, endpoints, balancer, levels, breaker, interval_checked: AtomicU64::new(now_ns()) }
    }
}

fn balancer(lb: &LbPolicy, endpoints: &[Arc<Endpoint>], weights: &[u32]) -> Balancer {
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    match lb {
        LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)),
        LbPolicy::Random => Balancer::Random(WeightedRandom::new(weights)),
        LbPolicy::LeastRequest | LbPolicy::Passthrough => Balancer::LeastRequest(LeastRequest::new(weights)),
        LbPolicy::PeakEwma => Balancer::PeakEwma(PeakEwma::new(weights, now_ns)),
        LbPolicy::Hash { algorithm: HashAlgorithm::RingHash { minimum_ring_size }, .. } => {
            Balancer::RingHash(RingHash::new(&ids, weights, *minimum_ring_size))
        }
        LbPolicy::Hash { algorithm: HashAlgorithm::Maglev { table_size }, .. } => Balancer::Maglev(Maglev::new(&ids, weights, *table_size)),
    }
}

/// The cluster's priority levels for this proxy, or `None` when locality does not
/// apply (no proxy locality, no endpoint localities, or one level holding everything).
fn levels(l: &LocalityLb, lb: &LbPolicy, endpoints: &[Arc<Endpoint>], node: &Node) -> Option<Levels> {
    let me = node.locality.as_ref()?;
    let locs: Vec<Option<Locality>> = endpoints.iter().map(|e| e.spec.locality.as_deref().and_then(Locality::parse)).collect();
    if locs.iter().all(Option::is_none) {
        return None;
    }
    // (level, weight) per endpoint.
    let placed: Vec<Option<(usize, u32)>> = match l {
        LocalityLb::Failover { failover, priority_labels } if !priority_labels.is_empty() => endpoints
            .iter()
            .zip(&locs)
            .map(|(e, loc)| {
                let mut labels = BTreeMap::clone(&e.spec.labels);
                if let Some(loc) = loc {
                    topology_labels(loc, &mut labels);
                }
                let p = locality::label_priority(&node.labels, &labels, priority_labels) as usize;
                // Past the labels, Istio's failover order still sorts the rest.
                let rest = if p == priority_labels.len() { locality::failover_priority(me, loc.as_ref(), failover) as usize } else { 0 };
                Some((p + rest, e.spec.weight))
            })
            .collect(),
        LocalityLb::Failover { failover, .. } => endpoints
            .iter()
            .zip(&locs)
            .map(|(e, loc)| Some((locality::failover_priority(me, loc.as_ref(), failover) as usize, e.spec.weight)))
            .collect(),
        LocalityLb::Distribute(rules) => {
            let (_, to) = rules.iter().find(|(from, _)| me.matches(from))?;
            // Each `to` locality's share is split among its endpoints by their weights.
            let group: Vec<Option<usize>> = locs
                .iter()
                .map(|loc| {
                    let loc = loc.as_ref()?;
                    to.iter()
                        .enumerate()
                        .filter(|(_, (p, _))| loc.matches(p))
                        .max_by_key(|(_, (p, _))| Locality::specificity(p))
                        .map(|(i, _)| i)
                })
                .collect();
            let mut group_weight = vec![0u64; to.len()];
            for (g, e) in group.iter().zip(endpoints) {
                if let Some(g) = g {
                    group_weight[*g] += u64::from(e.spec.weight);
                }
            }
            group
                .iter()
                .zip(endpoints)
                .map(|(g, e)| {
                    let g = (*g)?;
                    let w = u64::from(to[g].1) * u64::from(e.spec.weight) * 10_000 / group_weight[g].max(1);
                    (w > 0).then_some((0, w.min(u64::from(u32::MAX)) as u32))
                })
                .collect()
        }
    };
    let n_levels = placed.iter().flatten().map(|(lvl, _)| lvl + 1).max()?;
    let mut levels: Vec<Level> =
        (0..n_levels).map(|_| Level { members: Vec::new(), eps: Vec::new(), balancer: balancer(lb, &[], &[]) }).collect();
    let mut weights: Vec<Vec<u32>> = vec![Vec::new(); n_levels];
    let mut level_of = vec![u8::MAX; endpoints.len()];
    for (i, p) in placed.iter().enumerate() {
        if let Some((lvl, w)) = p {
            levels[*lvl].members.push(i);
            levels[*lvl].eps.push(endpoints[i].clone());
            weights[*lvl].push(*w);
            level_of[i] = (*lvl).min(254) as u8;
        }
    }
    let distribute = matches!(l, LocalityLb::Distribute(_));
    if !distribute && levels.iter().filter(|l| !l.members.is_empty()).count() < 2 {
        return None;
    }
    for (level, w) in levels.iter_mut().zip(&weights) {
        level.balancer = balancer(lb, &level.eps, w);
    }
    let shares = (0..n_levels).map(|_| AtomicU32::new(0)).collect();
    Some(Levels { levels, level_of, shares, shares_at: AtomicU64::new(0) })
}

impl Cluster {
    fn out_of_service(&self, j: usize, now: u64) -> bool {
        !self.endpoints[j].checked.is_healthy() || self.endpoints[j].health.is_ejected(now)
    }

    /// The balancer's pick, passing over endpoints that outlier detection ejected or
    /// that fail their health check, unless none (or, for ejections, too few) are
    /// left in service (panic routing: all are used). With priority levels, a level
    /// is chosen first by the levels' health.
    pub fn pick(&self, hash: Option<u64>) -> Option<usize> {
        self.pick_avoiding(hash, &[])
    }

    /// [`Cluster::pick`] treating the priority levels in `avoid` as empty while others
    /// have healthy endpoints (`retryRemoteLocalities`).
    pub fn pick_avoiding(&self, hash: Option<u64>, avoid: &[u8]) -> Option<usize> {
        let Some(lv) = &self.levels else {
            return self.pick_in(&self.balancer, &self.endpoints, None, hash, false);
        };
        let now = now_ns();
        let at = lv.shares_at.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) > SHARES_TTL_NS {
            let counts: Vec<(u32, u32)> = lv
                .levels
                .iter()
                .map(|l| {
                    let healthy = l.members.iter().filter(|&&j| !self.out_of_service(j, now)).count();
                    (healthy as u32, l.members.len() as u32)
                })
                .collect();
            for (s, share) in lv.shares.iter().zip(locality::level_loads(&counts)) {
                s.store((share * 1e6) as u32, Ordering::Relaxed);
            }
            lv.shares_at.store(now, Ordering::Relaxed);
        }
        let mut shares: Vec<f64> = lv.shares.iter().map(|s| f64::from(s.load(Ordering::Relaxed))).collect();
        if !avoid.is_empty() {
            let kept: Vec<f64> = shares.iter().enumerate().map(|(i, s)| if avoid.contains(&(i as u8)) { 0.0 } else { *s }).collect();
            if kept.iter().sum::<f64>() > 0.0 {
                shares = kept;
            } else if let Some(i) = (0..lv.levels.len()).find(|i| !avoid.contains(&(*i as u8)) && !lv.levels[*i].members.is_empty()) {
                // The other levels are all down: still try one of them rather than the same again.
                shares = (0..lv.levels.len()).map(|k| if k == i { 1.0 } else { 0.0 }).collect();
            }
        }
        let total: f64 = shares.iter().sum();
        let level = &lv.levels[locality::choose_level(&shares, fastrand::f64() * total)];
        // A level under half healthy is used whole (Envoy's panic threshold).
        let healthy = level.members.iter().filter(|&&j| !self.out_of_service(j, now)).count();
        let panic = healthy * 100 < locality::PANIC_PERCENT as usize * level.members.len();
        self.pick_in(&level.balancer, &level.eps, Some(&level.members), hash, panic)
    }

    /// A pick among `eps` (the members `map` names, or all endpoints), skipping those
    /// out of service unless `panic`.
    fn pick_in(&self, balancer: &Balancer, eps: &[Arc<Endpoint>], map: Option<&[usize]>, hash: Option<u64>, panic: bool) -> Option<usize> {
        let idx = |k: usize| map.map_or(k, |m| m[k]);
        let pick = || balancer.pick(&PickCtx { hash, loads: eps });
        let i = match &self.spec.warmup {
            None => pick()?,
            Some(w) => slow_start(w, eps, pick)?,
        };
        if panic || (self.spec.outlier.is_none() && eps[i].checked.is_healthy()) {
            return Some(idx(i));
        }
        let now = now_ns();
        let out_of_service = |k: usize| self.out_of_service(idx(k), now);
        if !out_of_service(i) {
            return Some(idx(i));
        }
        let n = eps.len();
        let out = (0..n).filter(|&k| out_of_service(k)).count();
        let panic = self.spec.outlier.as_ref().is_some_and(|s| outlier::panic(s, out, n));
        if out >= n || panic {
            return Some(idx(i));
        }
        for _ in 0..3 {
            match pick() {
                Some(k) if !out_of_service(k) => return Some(idx(k)),
                _ => {}
            }
        }
        // A hash policy keeps naming the same endpoint: the next one in service takes its keys.
        (1..n).map(|k| (i + k) % n).find(|&k| !out_of_service(k)).or(Some(i)).map(idx)
    }

    /// Ejects `ep` for `reason` if the cluster's ejection cap allows; returns how long.
    pub fn try_eject(&self, ep: &Endpoint, reason: outlier::Reason) -> Option<std::time::Duration> {
        let settings = self.spec.outlier.as_ref()?;
        let now = now_ns();
        let out = self.endpoints.iter().filter(|e| e.health.is_ejected(now)).count();
        if ep.health.is_ejected(now) || !outlier::may_eject(settings, out, self.endpoints.len()) {
            return None;
        }
        if let Some(lv) = &self.levels {
            lv.shares_at.store(0, Ordering::Relaxed);
        }
        Some(ep.health.eject(settings, reason, now))
    }
}
