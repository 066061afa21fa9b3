use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::histogram::{Histogram, BYTES_BUCKETS, DURATION_BUCKETS_MS};
use crate::ResponseFlags;

/// An interned destination (service + subset); small and `Copy` so a request's
/// series key costs nothing to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DestId(pub u32);

/// The destination labels of Istio's standard metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestLabels {
    /// The service host as configured (`reviews.default.svc.cluster.local`).
    pub service: String,
    pub namespace: String,
    /// The subset, reported as `destination_version` like Istio's `version` label.
    pub version: String,
    /// Requests that came in on the inbound side for this proxy's own app: reported
    /// as Istio's `reporter="destination"`, the caller unknown (until peers are identified).
    pub inbound: bool,
}

impl DestLabels {
    /// The labels for requests that reached no destination (no route).
    pub fn unknown() -> Self {
        DestLabels { service: "unknown".into(), namespace: "unknown".into(), version: "unknown".into(), inbound: false }
    }

    pub fn short_name(&self) -> &str {
        self.service.split('.').next().unwrap_or(&self.service)
    }
}

/// An interned pair of principals for requests that came over mTLS (the peer's SPIFFE
/// ID, this proxy's); 0 (the default) is a plaintext request. Small and `Copy` like
/// [`DestId`], so that it costs a request's series key 4 bytes and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerId(pub u32);

/// The security labels of Istio's standard metrics for an mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    /// The client's SPIFFE ID (`spiffe://cluster.local/ns/default/sa/productpage`).
    pub source_principal: String,
    /// The server's SPIFFE ID: this proxy's own on the inbound side; on the outbound
    /// side the one the upstream must prove (`unknown` when several may).
    pub destination_principal: String,
}

/// Why the inbound listener refused a TLS connection: the `reason` label of
/// `weft_inbound_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client's certificate does not chain to the mesh roots.
    UnknownCa,
    /// The client's certificate has expired (or is not valid yet).
    Expired,
    /// The client presented no certificate (mTLS requires one).
    NoClientCert,
    /// Any other certificate problem (no SPIFFE ID, bad usage, revoked).
    BadCertificate,
    /// The handshake (or its first byte) did not arrive in time.
    Timeout,
    /// This proxy has no mesh identity, so it cannot terminate TLS.
    NoIdentity,
    /// A protocol error, or the client went away mid-handshake.
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::UnknownCa,
        HandshakeFailure::Expired,
        HandshakeFailure::NoClientCert,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::Timeout,
        HandshakeFailure::NoIdentity,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NoClientCert => "no_client_cert",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NoIdentity => "no_identity",
            HandshakeFailure::Other => "other",
        }
    }
}

/// How mesh DNS (`weft proxy --dns`) answered a query: the `result` label of
/// `weft_dns_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResult {
    /// A mesh name, answered from the VIP table (addresses or NODATA).
    Local,
    /// Another name, answered by the upstream resolver (whatever its answer).
    Forwarded,
    /// Answered with an error of the proxy's (FORMERR, NOTIMP, SERVFAIL) or dropped;
    /// `weft_dns_failures_total` says why.
    Failed,
}

impl DnsResult {
    pub const ALL: [DnsResult; 3] = [DnsResult::Local, DnsResult::Forwarded, DnsResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsResult::Local => "local",
            DnsResult::Forwarded => "forwarded",
            DnsResult::Failed => "failed",
        }
    }
}

/// Why mesh DNS failed a query (or refused a connection): the `reason` label of
/// `weft_dns_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// Not a DNS query (answered FORMERR when its header can be read, else dropped), or
    /// not exactly one question (FORMERR).
    Malformed,
    /// An opcode other than QUERY (NOTIMP).
    NotImplemented,
    /// A query over the size limit (a UDP datagram, or a TCP frame: the connection is closed).
    TooLarge,
    /// Too many forwards in flight (SERVFAIL).
    Overload,
    /// The upstream resolver did not answer in time (SERVFAIL).
    UpstreamTimeout,
    /// The upstream resolver could not be reached or answered nonsense (SERVFAIL).
    UpstreamError,
    /// No upstream resolver (none in /etc/resolv.conf, no --dns-upstream): SERVFAIL.
    NoUpstream,
    /// A TCP connection closed at accept: the connection limit was reached.
    ConnectionLimit,
    /// A mesh name asked for on demand did not arrive in time (SERVFAIL: never
    /// forwarded, the name is the mesh's).
    Discovery,
}

impl DnsFailure {
    pub const ALL: [DnsFailure; 9] = [
        DnsFailure::Malformed,
        DnsFailure::NotImplemented,
        DnsFailure::TooLarge,
        DnsFailure::Overload,
        DnsFailure::UpstreamTimeout,
        DnsFailure::UpstreamError,
        DnsFailure::NoUpstream,
        DnsFailure::ConnectionLimit,
        DnsFailure::Discovery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsFailure::Malformed => "malformed",
            DnsFailure::NotImplemented => "not_implemented",
            DnsFailure::TooLarge => "too_large",
            DnsFailure::Overload => "overload",
            DnsFailure::UpstreamTimeout => "upstream_timeout",
            DnsFailure::UpstreamError => "upstream_error",
            DnsFailure::NoUpstream => "no_upstream",
            DnsFailure::ConnectionLimit => "connection_limit",
            DnsFailure::Discovery => "discovery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Identifies one series of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub dest: DestId,
    pub code: u16,
    pub flags: ResponseFlags,
    pub protocol: Protocol,
    /// `grpc-status`, or -1 when the response carried none.
    pub grpc_status: i16,
    /// Who called over mTLS (inbound); 0: plaintext.
    pub peer: PeerId,
}

pub(crate) struct Series {
    pub requests: AtomicU64,
    pub duration_ms: Histogram<13>,
    pub request_bytes: Histogram<10>,
    pub response_bytes: Histogram<10>,
}

#[derive(Default)]
pub(crate) struct TcpSeries {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// The kinds of intercepted connections, in the order of [`Counters::intercepted`]:
/// HTTP (routed by host), an opaque TCP service (by original destination), passed
/// through to their original destination, closed (a mesh address with no TCP route).
pub const INTERCEPTED_KINDS: [&str; 4] = ["http", "tcp", "passthrough", "closed"];

/// weft's own counters: what Istio's metrics do not say.
#[derive(Debug, Default)]
pub struct Counters {
    pub downstream_connections: AtomicU64,
    pub downstream_connections_active: AtomicU64,
    /// Client connections closed at accept: the proxy held --max-connections.
    pub downstream_overflow: AtomicU64,
    /// Plaintext connections refused by the inbound listener: PeerAuthentication STRICT.
    pub inbound_plaintext_refused: AtomicU64,
    /// Workload certificates renewed, and when the current one expires (unix seconds; 0: none).
    pub identity_renewals: AtomicU64,
    pub identity_expiry: AtomicU64,
    /// TLS connections the inbound listener refused, by [`HandshakeFailure`] (its index).
    pub inbound_tls_handshake_failures: [AtomicU64; 7],
    /// mTLS handshakes the inbound listener completed: full, then resumed (tickets).
    pub inbound_tls_handshakes: [AtomicU64; 2],
    /// Client connections closed idle (--idle-timeout) or with their request head
    /// overdue (--header-read-timeout).
    pub downstream_idle_timeouts: AtomicU64,
    pub downstream_header_timeouts: AtomicU64,
    /// Accepts that failed for want of file descriptors or memory (each followed by a pause).
    pub accept_exhausted: AtomicU64,
    /// Requests answered 404 because no route matched their host.
    pub no_route: AtomicU64,
    /// Connections transparent interception brought to the outbound listener, by what
    /// they turned out to be: [`INTERCEPTED_KINDS`].
    pub intercepted: [AtomicU64; 4],
    /// Requests that waited in vain for a service asked for on demand (503, flag NC).
    pub discovery_timeouts: AtomicU64,
    /// Services asked for on demand now, and the mesh's names known.
    pub discovery_hosts: AtomicU64,
    pub discovery_names: AtomicU64,
    /// Requests answered 503 because their cluster had no endpoint.
    pub no_endpoint: AtomicU64,
    /// Malformed requests hyper rejected (bad request line, bad header, bad framing).
    pub bad_request: AtomicU64,
    /// Requests whose headers exceeded the limit (answered 431).
    pub header_too_large: AtomicU64,
    /// Clients that went away before their response finished.
    pub downstream_reset: AtomicU64,
    /// Upstream connections that could not be made or broke mid-request.
    pub upstream_connect_failure: AtomicU64,
    pub upstream_reset: AtomicU64,
    pub upstream_timeout: AtomicU64,
    /// Requests whose stream went idle past --stream-idle-timeout (flag SI).
    pub stream_idle_timeouts: AtomicU64,
    /// Tries after the first, made by a route's retry policy.
    pub retries: AtomicU64,
    /// Requests whose retries ran out on a still-retriable outcome (flag URX).
    pub retry_limit_reached: AtomicU64,
    /// Requests delayed (flag DI) and aborted (flag FI) by a route's `fault`.
    pub faults_delayed: AtomicU64,
    pub faults_aborted: AtomicU64,
    /// Hedged tries started (a Hedging policy's extra tries).
    pub hedges: AtomicU64,
    /// Requests refused by a circuit breaker (flag UO).
    pub overflow: AtomicU64,
    /// Retries not made because of `maxRetries` or the retry budget.
    pub retry_overflow: AtomicU64,
    /// Retries not made because the request body outgrew the replay buffer (or the
    /// client broke it off).
    pub retry_body_unreplayable: AtomicU64,
    /// Requests shed by adaptive concurrency (503, flag UO).
    pub shed: AtomicU64,
    /// Requests answered 429 by a RateLimit (flag RL).
    pub rate_limited: AtomicU64,
    /// Requests denied by an AuthorizationPolicy (403, flag RBAC), and those an AUDIT
    /// policy matched.
    pub authz_denied: AtomicU64,
    pub authz_audited: AtomicU64,
    /// Requests the dry-run (`istio.io/dry-run`) policies would have denied.
    pub authz_dry_run_denied: AtomicU64,
    /// RequestAuthentication: JWTs verified, and those refused (401).
    pub jwt_verified: AtomicU64,
    pub jwt_refused: AtomicU64,
    /// jwksUri fetches that brought keys, and those that failed (keys kept, retried).
    pub jwks_fetched: AtomicU64,
    pub jwks_fetch_failed: AtomicU64,
    /// Tracing: spans sent to the OTLP collector, and those dropped (queue full, or the
    /// collector failed or refused them).
    pub spans_exported: AtomicU64,
    pub spans_dropped: AtomicU64,
    /// `--influxdb-url`: pushes InfluxDB took, and those that failed (or timed out).
    pub influxdb_pushes: AtomicU64,
    pub influxdb_push_failures: AtomicU64,
    /// ResponseCache: requests answered from the cache (fresh, or revalidated upstream).
    pub cache_hits: AtomicU64,
    /// ResponseCache: cacheable requests that went upstream for want of a usable entry.
    pub cache_misses: AtomicU64,
    /// ResponseCache: entries pushed out to make room.
    pub cache_evictions: AtomicU64,
    /// Endpoints ejected by outlier detection.
    pub outlier_ejections: AtomicU64,
    pub mirrored: AtomicU64,
    pub upgrades: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Incremented with every config swap: the active config's revision.
    pub config_revision: AtomicU64,
    /// The control plane's revision this proxy runs (0 without a control plane).
    pub control_plane_revision: AtomicU64,
    /// Meshes from the control plane this proxy refused (it kept the last good one).
    pub control_plane_nacks: AtomicU64,
    /// Answers from the control plane: whole meshes, deltas, and their bytes.
    pub control_plane_full: AtomicU64,
    pub control_plane_deltas: AtomicU64,
    pub control_plane_bytes: AtomicU64,
    /// Deltas applied in place (only the clusters whose endpoints changed rebuilt, only
    /// the virtual hosts of the VirtualServices changed recompiled).
    pub control_plane_in_place: AtomicU64,
    /// Of those, deltas that changed VirtualServices.
    pub control_plane_routes_in_place: AtomicU64,
    /// Mesh DNS: queries by [`DnsResult`], failures by [`DnsFailure`] (their indexes).
    pub dns_queries: [AtomicU64; 3],
    pub dns_failures: [AtomicU64; 9],
}

impl Counters {
    /// Counts a mesh DNS query answered locally or forwarded.
    pub fn dns(&self, result: DnsResult) {
        self.dns_queries[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a mesh DNS failure: a failed query, or a refused TCP connection (which is no query).
    pub fn dns_failed(&self, why: DnsFailure) {
        if why != DnsFailure::ConnectionLimit {
            self.dns_queries[DnsResult::Failed as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.dns_failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The process's metrics.
pub struct Metrics {
    pub(crate) source_workload: String,
    pub(crate) source_namespace: String,
    /// Looked up once per request: foldhash instead of SipHash.
    pub(crate) series: papaya::HashMap<SeriesKey, Series, foldhash::fast::RandomState>,
    pub(crate) tcp: papaya::HashMap<(DestId, PeerId), TcpSeries>,
    pub(crate) dests: papaya::HashMap<DestLabels, DestId>,
    pub(crate) dest_labels: papaya::HashMap<DestId, DestLabels>,
    pub(crate) peers: papaya::HashMap<PeerLabels, PeerId>,
    pub(crate) peer_labels: papaya::HashMap<PeerId, PeerLabels>,
    next_peer: AtomicU32,
    pub counters: Counters,
}

impl Metrics {
    /// `source_workload` is the service this proxy stands beside (`--service`).
    /// The namespace this proxy runs in (`--namespace`).
    pub fn source_namespace(&self) -> &str {
        &self.source_namespace
    }

    pub fn new(source_workload: &str, source_namespace: &str) -> Self {
        let m = Metrics {
            source_workload: source_workload.to_owned(),
            source_namespace: source_namespace.to_owned(),
            series: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            tcp: papaya::HashMap::new(),
            dests: papaya::HashMap::new(),
            dest_labels: papaya::HashMap::new(),
            peers: papaya::HashMap::new(),
            peer_labels: papaya::HashMap::new(),
            next_peer: AtomicU32::new(1),
            counters: Counters::default(),
        };
        m.dest_id(DestLabels::unknown());
        m
    }

    /// Interns destination labels (at config time, not per request). Id 0 is "unknown".
    pub fn dest_id(&self, labels: DestLabels) -> DestId {
        let dests = self.dests.pin();
        if let Some(id) = dests.get(&labels) {
            return *id;
        }
        let id = DestId(dests.len() as u32);
        let id = *dests.get_or_insert(labels.clone(), id);
        self.dest_labels.pin().insert(id, labels);
        id
    }

    /// Interns the principals of an mTLS connection (once per connection, from any
    /// worker; never per request). Ids start at 1: [`PeerId`] 0 is plaintext.
    pub fn peer_id(&self, labels: PeerLabels) -> PeerId {
        let peers = self.peers.pin();
        if let Some(id) = peers.get(&labels) {
            return *id;
        }
        // Labels go in first, so a series recorded under the id always finds them; a
        // worker that loses the race to intern the same pair drops its own id.
        let mine = PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed));
        let table = self.peer_labels.pin();
        table.insert(mine, labels.clone());
        let id = *peers.get_or_insert(labels, mine);
        if id != mine {
            table.remove(&mine);
        }
        id
    }

    /// A failed inbound TLS handshake, by reason.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.counters.inbound_tls_handshake_failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one finished request.
    #[inline]
    pub fn record(&self, key: SeriesKey, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        let map = self.series.pin();
        let s = map.get_or_insert_with(key, || Series {
            requests: AtomicU64::new(0),
            duration_ms: Histogram::new(&DURATION_BUCKETS_MS),
            request_bytes: Histogram::new(&BYTES_BUCKETS),
            response_bytes: Histogram::new(&BYTES_BUCKETS),
        });
        s.requests.fetch_add(1, Ordering::Relaxed);
        s.duration_ms.observe(duration_ms);
        s.request_bytes.observe(request_bytes as f64);
        s.response_bytes.observe(response_bytes as f64);
    }

    /// An upstream connection to `dest` opened (`true`) or closed; `peer`: its mTLS
    /// principals (0: plaintext).
    pub fn tcp_connection(&self, dest: DestId, peer: PeerId, opened: bool) {
        let map = self.tcp.pin();
        let s = map.get_or_insert_with((dest, peer), TcpSeries::default);
        if opened { &s.opened } else { &s.closed }.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes carried by a tunnel (WebSocket upgrade, CONNECT) to `dest`; `peer`: the
    /// tunnel's mTLS principals (the caller's on the inbound side, 0: plaintext).
    pub fn tcp_bytes(&self, dest: DestId, peer: PeerId, sent: u64, received: u64) {
        let map = self.tcp.pin();
        let s = map.get_or_insert_with((dest, peer), TcpSeries::default);
        s.sent.fetch_add(sent, Ordering::Relaxed);
        s.received.fetch_add(received, Ordering::Relaxed);
    }

    /// Total requests recorded for a destination service (all codes), for tests and `/clusters`.
    pub fn requests_to(&self, service: &str) -> u64 {
        let labels = self.dest_labels.pin();
        self.series
            .pin()
            .iter()
            .filter(|(k, _)| labels.get(&k.dest).is_some_and(|l| l.service == service))
            .map(|(_, s)| s.requests.load(Ordering::Relaxed))
            .sum()
    }
}
