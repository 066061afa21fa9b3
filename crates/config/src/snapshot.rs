//! The runtime snapshot: everything a request needs, compiled once per config
//! change and read without locks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

pub use crate::filter_policy::{CachePolicy, CompressionPolicy, Encoding, Levels};
use crate::matcher::{RequestMatch, RequestView};

/// A compiled configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub vhosts: Vec<VirtualHost>,
    /// Lower-case host (no port) → index into `vhosts`. foldhash: several times
    /// faster than SipHash on the request path, and randomly seeded against HashDoS.
    pub exact_hosts: HashMap<String, usize, foldhash::fast::RandomState>,
    /// `*.example.com` style hosts as (suffix `.example.com`, vhost), longest first.
    pub wildcard_hosts: Vec<(String, usize)>,
    /// A VirtualService for `*`, if any.
    pub catch_all: Option<usize>,
    /// HealthCheck resources: probes of a host's endpoints.
    pub health_checks: Vec<HealthProbe>,
    pub clusters: Vec<ClusterSpec>,
    /// VirtualService `tls[]` routes (TLS passthrough by SNI), in order.
    pub tls_routes: Vec<crate::tls_route::TlsRouteSpec>,
    /// The listeners for opaque TCP service ports, with their `tcp[]` routes.
    pub tcp_listeners: Vec<crate::tcp_route::TcpListenerSpec>,
    /// A gateway's `tcp[]` routes, until its Gateway servers place them on listeners.
    pub gateway_tcp: Vec<crate::tcp_route::GatewayTcpRoute>,
    /// PeerAuthentication policies ([`crate::mtls::mode_for`] resolves a workload's mode).
    pub peer_authentication: Vec<crate::mtls::PeerAuthPolicy>,
    /// The inbound side's virtual host (every request on the inbound listener goes to
    /// it), when the proxy stands beside an app ([`crate::inbound`]).
    pub inbound: Option<usize>,
    /// AuthorizationPolicies, compiled, with the workloads each applies to.
    pub authorization: Vec<crate::authz::ScopedPolicy>,
    /// RequestAuthentications, with the workloads each applies to.
    pub request_authentication: Vec<crate::authz::ScopedRequestAuthn>,
    /// ExtensionProviders (CUSTOM policies' external authorizers) by name.
    pub extension_providers: BTreeMap<String, weft_authz::spec::ExtAuthzHttp>,
    /// The policies of the proxy's own workload, enforced on its inbound side: set by
    /// [`Snapshot::add_inbound`] when any applies.
    pub inbound_authorization: Option<std::sync::Arc<weft_authz::Policies>>,
    /// The JWT rules of the proxy's own workload (every RequestAuthentication that
    /// applies, merged): set by [`Snapshot::add_inbound`] when any applies.
    pub inbound_request_authn: Option<std::sync::Arc<weft_authz::jwt::Authenticator>>,
    /// The local app's address (`destination.ip` / `destination.port` of inbound requests).
    pub inbound_app: Option<std::net::SocketAddr>,
    /// An ingress gateway's TLS listener (`weft gateway --https`); for a gateway the
    /// host tables above are its plain listener's ([`crate::gateway`]).
    pub gateway: Option<crate::gateway::GatewayListeners>,
    /// Tracing by side, from the Telemetry resources that apply to this proxy.
    pub tracing: crate::telemetry::ProxyTracing,
    /// The hosts of the ServiceEntries the proxy sees, sorted, with the DNS names that
    /// reach each from its namespace: what mesh DNS answers ([`crate::dns`]).
    pub services: Vec<crate::dns::MeshService>,
}

impl Snapshot {
    /// The first `tls[]` route for a ClientHello's SNI (lower case) on listener `port`.
    pub fn tls_route(&self, sni: &str, port: u16) -> Option<&crate::tls_route::TlsRouteSpec> {
        self.tls_routes.iter().find(|r| r.matches(sni, port))
    }

    /// The virtual host for a request's host (lower-case, port stripped).
    pub fn vhost(&self, host: &str) -> Option<&VirtualHost> {
        self.vhost_index(host).map(|i| &self.vhosts[i])
    }

    /// [`Snapshot::vhost`]'s index in `vhosts`.
    pub fn vhost_index(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact_hosts.get(host) {
            return Some(i);
        }
        for (suffix, i) in &self.wildcard_hosts {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        self.catch_all
    }
}

/// The routes that serve one host: a VirtualService, or a ServiceEntry's default route.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// `VirtualService/name` or `ServiceEntry/name`.
    pub name: String,
    /// Shared so that a request holds its route for its whole life, whatever reloads.
    pub routes: Vec<std::sync::Arc<Route>>,
    /// RateLimit resources for this host, checked in order before routing.
    pub rate_limits: Vec<RateLimitRule>,
    /// A Hedging resource for this host.
    pub hedging: Option<HedgePolicy>,
    /// Compression resources for this host; the first that applies is used.
    pub compression: Vec<CompressionPolicy>,
    /// ResponseCache resources for this host; the first that applies is used.
    pub response_cache: Vec<CachePolicy>,
}

/// Idempotent requests without a body get another try after `delay` without an answer.
/// (Pure config: the latency window a `delayPercentile` reads lives in the proxy.)
#[derive(Debug, Clone, PartialEq)]
pub struct HedgePolicy {
    pub delay: Duration,
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// `delayPercentile`: the delay follows this percentile of the host's recent
    /// latency (`delay` until enough answers were seen).
    pub percentile: Option<f64>,
}

/// Answers a host needs before its latency percentile replaces the fixed hedge delay.
pub const HEDGE_MIN_SAMPLES: u64 = 100;

/// One HealthCheck, compiled.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    /// `HealthCheck/name`.
    pub name: String,
    /// Lower-case service host whose endpoints are probed.
    pub host: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone)]
pub enum Probe {
    /// GET `path`; healthy when the status is in `expected` (any 2xx when empty).
    Http { path: String, expected: Vec<u16> },
    /// Healthy when a TCP connection opens.
    Tcp,
    /// Healthy when `grpc.health.v1.Health/Check` for `service` answers SERVING (h2c).
    Grpc { service: String },
}

/// One RateLimit: requests that match (all, when `matches` is empty) take a token.
#[derive(Debug, Clone)]
pub struct RateLimitRule {
    /// `RateLimit/name`, for logs and metrics.
    pub name: String,
    pub matches: Vec<RequestMatch>,
    pub limiter: LimiterSpec,
}

/// What a RateLimit limits with. Pure config: the buckets and limiters themselves
/// live in the proxy, which keeps them across reloads while their spec is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum LimiterSpec {
    Token { max_tokens: u32, per_fill: u32, interval: Duration },
    Leaky { rate: f64, queue: u32, max_delay: Duration },
    Adaptive(weft_resilience::adaptive::Settings),
}

impl RateLimitRule {
    pub fn applies(&self, r: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.is_match(r))
    }
}

impl VirtualHost {
    /// The first route whose match list has an entry that matches (Istio's order).
    pub fn route(&self, r: &RequestView<'_>) -> Option<&std::sync::Arc<Route>> {
        self.routes.iter().find(|rt| rt.matches.is_empty() || rt.matches.iter().any(|m| m.is_match(r)))
    }

    /// [`VirtualHost::route`]'s index in `routes`.
    pub fn route_index(&self, r: &RequestView<'_>) -> Option<usize> {
        self.routes.iter().position(|rt| rt.matches.is_empty() || rt.matches.iter().any(|m| m.is_match(r)))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub timeout: Option<Duration>,
    pub rewrite: Option<Rewrite>,
    /// Mirror target and the fraction of requests (0..=1) mirrored.
    pub mirror: Option<(ClusterChoice, f64)>,
    /// `None`: no retries (`attempts: 0`).
    pub retry: Option<RetryPolicy>,
    pub fault: Option<Fault>,
}

/// A route's `retries`, with Istio's defaults filled in.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try (total tries = 1 + attempts).
    pub attempts: u32,
    /// Bound on each try; the route timeout still bounds them all.
    pub per_try_timeout: Option<Duration>,
    pub retry_on: weft_resilience::RetryOn,
    /// `retryRemoteLocalities`: a retry prefers another priority level (locality)
    /// than the tries before it.
    pub remote_localities: bool,
}

impl RetryPolicy {
    /// Istio's mesh default for routes that say nothing: 2 retries on connect failure,
    /// refused stream, and gRPC unavailable / cancelled.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy { attempts: 2, per_try_timeout: None, retry_on: weft_resilience::RetryOn::istio_default(), remote_localities: false }
    }

    /// No retries (a route with `attempts: 0` that still hedges).
    pub fn none() -> RetryPolicy {
        RetryPolicy { attempts: 0, per_try_timeout: None, retry_on: weft_resilience::RetryOn::default(), remote_localities: false }
    }
}

/// A route's `fault`: each part applies to its fraction (0..=1) of requests.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(AbortWith, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    Http(StatusCode),
    /// A gRPC status code, answered as a trailers-only gRPC response.
    Grpc(u8),
}

#[derive(Debug)]
pub enum Action {
    Forward(WeightedClusters),
    Redirect(Redirect),
    Direct { status: StatusCode, body: bytes::Bytes },
}

#[derive(Debug, Clone)]
pub struct WeightedClusters {
    pub targets: Vec<WeightedTarget>,
    /// Running sums of weights, for a pick by one random number.
    pub cumulative: Vec<u32>,
    pub total: u32,
}

impl WeightedClusters {
    /// Picks a target; `r` is uniform in `0..u32::MAX`.
    #[inline]
    pub fn pick(&self, r: u32) -> &WeightedTarget {
        &self.targets[self.pick_index(r)]
    }

    /// [`WeightedClusters::pick`]'s index in `targets`.
    #[inline]
    pub fn pick_index(&self, r: u32) -> usize {
        if self.targets.len() == 1 || self.total == 0 {
            return 0;
        }
        let x = ((r as u64 * self.total as u64) >> 32) as u32;
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.targets.len() - 1)
    }
}

#[derive(Debug, Clone)]
pub struct WeightedTarget {
    pub cluster: ClusterChoice,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// The cluster a destination resolves to; when the destination names no port and the
/// service has several, the request's port chooses.
#[derive(Debug, Clone)]
pub struct ClusterChoice {
    pub default: usize,
    pub by_port: Vec<(u16, usize)>,
}

impl ClusterChoice {
    #[inline]
    pub fn resolve(&self, port: u16) -> usize {
        self.by_port.iter().find(|(p, _)| *p == port).map(|(_, c)| *c).unwrap_or(self.default)
    }
}

#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies remove, then set, then add (Envoy's order for route-level operations).
    pub fn apply(&self, h: &mut http::HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex matches).
    pub uri: Option<String>,
    pub authority: Option<HeaderValue>,
    pub uri_regex: Option<(regex::Regex, String)>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub status: StatusCode,
}

/// An upstream cluster: one (host, port, subset), Envoy's `outbound|port|subset|host`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterSpec {
    pub name: String,
    pub service: String,
    /// The service's namespace, as its metrics name it.
    pub namespace: String,
    pub port: u16,
    pub subset: Option<String>,
    pub lb: LbPolicy,
    pub pool: PoolSettings,
    /// `outlierDetection`, when the DestinationRule sets one.
    pub outlier: Option<weft_resilience::outlier::Settings>,
    /// `connectionPool` limits (circuit breakers).
    pub limits: Limits,
    /// `localityLbSetting` as it applies (see [`LocalityLb`]).
    pub locality: Option<LocalityLb>,
    pub dns: bool,
    pub endpoints: Vec<EndpointSpec>,
    /// The ServiceEntry's `subjectAltNames`: the identities its endpoints must prove over
    /// mTLS (auto mTLS and `ISTIO_MUTUAL` verify the peer against them).
    pub subject_alt_names: Vec<String>,
    /// Slow start for endpoints added to the cluster (`loadBalancer.warmup`).
    pub warmup: Option<Warmup>,
    /// The ServiceEntry its endpoints come from and the subset's labels (none: not from a
    /// ServiceEntry's own endpoints), for updates in place ([`crate::endpoints`]).
    #[serde(skip)]
    pub origin: Option<std::sync::Arc<crate::endpoints::Origin>>,
}

/// Slow start, Envoy's: an endpoint added to a running cluster gets, `t` after it was
/// added, the share `weight × max(minimum, (t / window)^(1 / aggression))` until `window`
/// has passed. Applies to ROUND_ROBIN and LEAST_REQUEST (as in Envoy).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Warmup {
    pub window: Duration,
    /// 0 to 1.
    pub minimum: f64,
    /// Greater than 0.
    pub aggression: f64,
}

impl Warmup {
    /// The share of its weight an endpoint added `age` ago gets (1: warmed up).
    pub fn factor(&self, age: Duration) -> f64 {
        if age >= self.window || self.window.is_zero() {
            return 1.0;
        }
        let t = age.as_secs_f64() / self.window.as_secs_f64();
        t.powf(1.0 / self.aggression).max(self.minimum).min(1.0)
    }
}

/// Locality-aware balancing. Istio turns failover on by default once the
/// DestinationRule has `outlierDetection` (failover needs failure detection);
/// `distribute` applies with or without it; `enabled: false` turns both off.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum LocalityLb {
    /// Priority levels by closeness to the proxy (or by `failoverPriority` labels).
    Failover { failover: Vec<(String, String)>, priority_labels: Vec<String> },
    /// `(from, [(to, weight)])`: the first rule whose `from` takes in the proxy's
    /// locality shares the traffic among localities by weight.
    Distribute(Vec<(String, Vec<(String, u32)>)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct EndpointSpec {
    /// An IP address, or a name resolved at connect time for `resolution: DNS`.
    pub address: String,
    pub port: u16,
    pub weight: u32,
    pub labels: crate::Labels,
    pub locality: Option<String>,
}

impl EndpointSpec {
    pub fn authority(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    PeakEwma,
    Passthrough,
    Hash { key: HashKey, algorithm: HashAlgorithm },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum HashKey {
    Header(String),
    Cookie { name: String, path: Option<String>, ttl: Option<Duration> },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum HashAlgorithm {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

/// What the upstream connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// The same as the downstream request (`useClientProtocol`).
    Client,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub max_connection_duration: Option<Duration>,
    pub keepalive: Option<Keepalive>,
    /// HTTP/2 PINGs on upstream connections (`http2KeepAlive`): (interval, timeout);
    /// none: a PING every 30 s while streams are open, 20 s to answer (hyper's default).
    pub h2_keepalive: Option<(Duration, Duration)>,
    pub protocol: UpstreamProtocol,
    /// DestinationRule `tls`: TLS originated on every connection (none for `DISABLE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::UpstreamTls>,
    /// Whether a DestinationRule said anything about `tls` (`DISABLE` included): then auto
    /// mTLS keeps out, as in Istio.
    pub tls_set: bool,
}

/// Connections (HTTP/1.1 requests in flight) and pending requests a cluster allows when its
/// `connectionPool` does not say: Envoy's defaults. Istio raises them to 2^32 − 1; weft keeps
/// Envoy's bound so that one client cannot make the proxy open thousands of connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_MAX_PENDING: u32 = 1024;

/// Circuit-breaker limits from `connectionPool`; unset requests and retries are unlimited
/// (Istio's 2^32 − 1), unset connections and pending requests are 1,024 (Envoy's defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limits {
    /// `http.http2MaxRequests`: requests in flight to the cluster, any protocol.
    pub max_requests: u32,
    /// `tcp.maxConnections`: HTTP/1.1 requests in flight (each holds a connection).
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests allowed to wait for a connection.
    pub max_pending: u32,
    /// `http.maxRetries`: retries in flight to the cluster.
    pub max_retries: u32,
    /// `trafficPolicy.retryBudget`: (fraction of requests in flight, minimum retry concurrency).
    pub retry_budget: Option<(f64, u32)>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests: u32::MAX,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending: DEFAULT_MAX_PENDING,
            max_retries: u32::MAX,
            retry_budget: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Keepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_requests_per_connection: 0,
            max_connection_duration: None,
            keepalive: None,
            h2_keepalive: None,
            protocol: UpstreamProtocol::Http1,
            tls: None,
            tls_set: false,
        }
    }
}
