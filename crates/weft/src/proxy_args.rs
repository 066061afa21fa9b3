//! `weft proxy`'s (and `weft gateway`'s) flags, and the proxy options they make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{ctl, parse_dur, parse_label, parse_locality, tracing_args};

#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    /// A multi-document YAML file of Istio resources (repeatable).
    #[arg(long = "config", short = 'c', required_unless_present = "control_plane")]
    pub(crate) config: Vec<PathBuf>,
    /// Follow this control plane (e.g. http://127.0.0.1:15010) for the mesh, instead of files.
    #[arg(long, conflicts_with = "config")]
    pub(crate) control_plane: Option<String>,
    /// Following a control plane: `on-demand` holds the mesh's names and asks for a
    /// service's routes, policies and endpoints when a request first needs it; `eager`
    /// holds the whole mesh (what its Sidecar admits).
    #[arg(long, value_enum, default_value = "on-demand")]
    pub(crate) discovery: DiscoveryMode,
    /// How long a request waits for a service asked for on demand (then 503, flag NC).
    #[arg(long, default_value = "5s", value_parser = parse_dur)]
    pub(crate) discovery_timeout: Duration,
    /// A service asked for on demand and unused this long is dropped (asked again when needed).
    #[arg(long, default_value = "10m", value_parser = parse_dur)]
    pub(crate) discovery_idle: Duration,
    /// A file holding the token this proxy presents to the control plane (a workload
    /// token from `weft token create --namespace NS --service-account SA`; default
    /// $WEFT_TOKEN_FILE, or the token itself in $WEFT_TOKEN).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// The mesh root bundle (PEM) an https:// control plane is verified with: its
    /// <ca-dir>/root-cert.pem (default: $WEFT_CA_FILE).
    #[arg(long, env = "WEFT_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// This proxy's ID at the control plane (default: hostname-pid).
    #[arg(long)]
    pub(crate) node: Option<String>,
    /// Address for traffic (HTTP/1.1 and h2c on the same port).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub(crate) listen: SocketAddr,
    /// Address for /metrics, /ready, /config_dump, /clusters.
    #[arg(long)]
    pub(crate) admin: Option<SocketAddr>,
    /// The inbound listener (a sidecar's, e.g. 0.0.0.0:15006): every request on it goes
    /// to --app. Needs --app.
    #[arg(long, requires = "app")]
    pub(crate) inbound: Option<SocketAddr>,
    /// The local app behind the inbound listener (plaintext HTTP/1.1), e.g. 127.0.0.1:8080.
    #[arg(long, requires = "inbound")]
    pub(crate) app: Option<SocketAddr>,
    /// The app's network namespace, e.g. /proc/PID/task/TID/ns/net (set by `weft run
    /// --intercept`): --listen and the connections to --app are opened in it, and
    /// --listen's connections are intercepted ones (their original destination decides).
    #[arg(long, requires = "app")]
    pub(crate) intercept_netns: Option<std::path::PathBuf>,
    /// The service account of the workload (its SPIFFE identity's `sa`; default: --service).
    /// Following a control plane with --inbound or this flag, the proxy gets a certificate
    /// for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> before it serves.
    #[arg(long)]
    pub(crate) service_account: Option<String>,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub(crate) trust_domain: String,
    /// Worker threads (default 1, as a sidecar; 0 = one per core, for a per-host proxy).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// The workload this proxy stands beside (metrics' source_workload).
    #[arg(long, default_value = "unknown")]
    pub(crate) service: String,
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Print an access log line per request on stdout.
    #[arg(long)]
    pub(crate) access_log: bool,
    /// How long SIGTERM waits for in-flight requests and open tunnels (WebSocket, CONNECT,
    /// TLS passthrough), e.g. "10s".
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    pub(crate) drain_timeout: Duration,
    /// X-Forwarded-For hops to trust for the client's address in AuthorizationPolicy
    /// (remoteIpBlocks, remote.ip; Istio's numTrustedProxies); 0: the peer's address.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub(crate) xff_trusted_hops: u32,
    /// Close client connections whose request head takes longer than this to arrive
    /// whole (nginx's client_header_timeout); 0s disables.
    #[arg(long, default_value = "60s", value_parser = parse_dur)]
    pub(crate) header_read_timeout: Duration,
    /// Close client connections with no request in flight and no traffic for this long
    /// (Envoy's idle_timeout); 0s disables.
    #[arg(long, default_value = "1h", value_parser = parse_dur)]
    pub(crate) idle_timeout: Duration,
    /// Client connections held at most (all workers together); past it new ones are
    /// closed at once. Default 10000, or half the open-file limit if lower; 0: no limit.
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// How often config files are checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value = "500ms", value_parser = parse_dur)]
    pub(crate) watch_interval: Duration,
    /// This proxy's locality, "region/zone/subzone", for locality-aware balancing.
    #[arg(long, value_parser = parse_locality)]
    pub(crate) locality: Option<weft_balance::locality::Locality>,
    /// A label of the workload beside this proxy, "key=value" (repeatable), matched by
    /// a DestinationRule's failoverPriority.
    #[arg(long = "label", value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,
    /// End a request whose upstream sends nothing for this long: before the response
    /// head, when no route or per-try timeout is set (408, flag SI), and between body
    /// chunks (the response is cut off). Envoy's stream_idle_timeout; 0s disables.
    #[arg(long, default_value = "5m", value_parser = parse_dur)]
    pub(crate) stream_idle_timeout: Duration,
    /// How request paths are normalized before routing and forwarding (Istio's
    /// pathNormalization): base decodes unreserved escapes, turns \ into / and resolves
    /// . and .. (encoded NUL or control characters: 400); merge-slashes also merges
    /// runs of /; decode-and-merge-slashes also decodes %2F and %5C.
    #[arg(long, value_enum, default_value = "base")]
    pub(crate) path_normalization: PathNormalizationArg,
    #[command(flatten)]
    pub(crate) tracing: tracing_args::TracingArgs,
    /// Give every request without one an x-request-id (a UUID v4), as Envoy does, even
    /// with tracing off (with tracing on it is always done).
    #[arg(long)]
    pub(crate) request_id: bool,
    /// Push the metrics (those of /metrics) to InfluxDB in line protocol, e.g.
    /// http://127.0.0.1:8086/write?db=weft (its v1 write API).
    #[arg(long)]
    pub(crate) influxdb_url: Option<String>,
    /// How often the metrics are pushed to --influxdb-url (at least 1s).
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    pub(crate) influxdb_interval: Duration,
    /// A file holding an InfluxDB token, sent as `Authorization: Token …` (InfluxDB 2).
    #[arg(long)]
    pub(crate) influxdb_token_file: Option<PathBuf>,
    /// Serve mesh DNS on this address, UDP and TCP (e.g. 127.0.0.1:15053): mesh service
    /// names (reviews, reviews.default, reviews.default.svc.cluster.local, ServiceEntry
    /// hosts) answer with the service's address or a stable virtual IP; other names are
    /// forwarded to --dns-upstream.
    #[arg(long, conflicts_with = "dns_fds")]
    pub(crate) dns: Option<SocketAddr>,
    /// Serve mesh DNS on inherited sockets instead of binding --dns: "UDP,TCP", the file
    /// descriptors of a UDP socket and a listening TCP socket (made by interception inside
    /// the app's network namespace).
    #[arg(long, value_parser = parse_fds)]
    pub(crate) dns_fds: Option<(i32, i32)>,
    /// Where mesh DNS forwards other names, IP[:PORT] (port 53 by default); default: the
    /// first nameserver of /etc/resolv.conf.
    #[arg(long, value_parser = parse_upstream)]
    pub(crate) dns_upstream: Option<SocketAddr>,
}

/// `--dns-fds`: two distinct open file descriptors, "UDP,TCP".
fn parse_fds(s: &str) -> Result<(i32, i32), String> {
    let bad = || format!("{s:?} is not UDP_FD,TCP_FD (two open file descriptors, e.g. 3,4)");
    let (u, t) = s.split_once(',').ok_or_else(bad)?;
    let (u, t): (i32, i32) = (u.trim().parse().map_err(|_| bad())?, t.trim().parse().map_err(|_| bad())?);
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed one answers -1.
    let open = |fd: i32| fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
    if u == t || !open(u) || !open(t) {
        return Err(bad());
    }
    Ok((u, t))
}

/// `--dns-upstream`: an address with a port, or an IP alone (port 53).
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not IP[:PORT] (e.g. 10.0.0.2, 127.0.0.1:5353, [::1]:53)"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PathNormalizationArg {
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl From<PathNormalizationArg> for weft_proxy::normalize::PathNormalization {
    fn from(a: PathNormalizationArg) -> Self {
        use weft_proxy::normalize::PathNormalization as P;
        match a {
            PathNormalizationArg::None => P::None,
            PathNormalizationArg::Base => P::Base,
            PathNormalizationArg::MergeSlashes => P::MergeSlashes,
            PathNormalizationArg::DecodeAndMergeSlashes => P::DecodeAndMergeSlashes,
        }
    }
}

impl ProxyArgs {
    pub(crate) fn into_options(self) -> Result<weft_proxy::ProxyOptions, String> {
        let intercepting = self.intercept_netns.is_some();
        let tracing = self.tracing.resolve()?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(weft_proxy::ProxyOptions {
            files: self.config,
            listen: self.listen,
            admin: self.admin,
            // A sidecar takes one core unless told otherwise; 0 means all of them.
            workers: match self.workers {
                Some(0) => cores,
                Some(n) => n,
                None => 1,
            },
            want_identity: None,
            identity: None,
            inbound: self.inbound.zip(self.app).map(|(listen, app)| {
                (listen, weft_config::InboundSpec { app, service: self.service.clone(), namespace: self.namespace.clone() })
            }),
            service: self.service,
            namespace: self.namespace,
            access_log: self.access_log,
            drain: self.drain_timeout,
            xff_trusted_hops: self.xff_trusted_hops,
            header_read_timeout: Some(self.header_read_timeout).filter(|d| !d.is_zero()),
            idle_timeout: Some(self.idle_timeout).filter(|d| !d.is_zero()),
            max_connections: self.max_connections.unwrap_or_else(default_max_connections),
            watch_interval: self.watch_interval.max(Duration::from_millis(10)),
            node: weft_proxy::cluster::Node::new(self.locality, self.labels.into_iter().collect()),
            stream_idle_timeout: Some(self.stream_idle_timeout).filter(|d| !d.is_zero()),
            path_normalization: self.path_normalization.into(),
            otlp: tracing,
            trace_sampling: self.tracing.trace_sampling,
            request_id: self.request_id,
            influxdb: self.influxdb_url.map(|url| weft_proxy::influx::InfluxOptions {
                url,
                interval: self.influxdb_interval,
                token_file: self.influxdb_token_file,
            }),
            intercept_netns: self.intercept_netns,
            discovery: matches!(self.discovery, DiscoveryMode::OnDemand).then_some((
                self.discovery_timeout.clamp(Duration::from_millis(10), Duration::from_secs(60)),
                self.discovery_idle.max(Duration::from_secs(1)),
            )),
            control_plane_token: None,
            control_plane_ca: None,
            role: weft_config::Role::Sidecar,
            gateway_tls: None,
            dns: match (self.dns, self.dns_fds) {
                // Bound in the app's namespace once the proxy has entered it.
                (Some(_), _) if intercepting => None,
                (Some(a), _) => Some(weft_proxy::DnsSockets::bind(a).map_err(|e| format!("cannot listen on {a} (dns): {e}"))?),
                // SAFETY: parse_fds checked both are open and distinct (and not stdio); this
                // process owns what it inherited and nothing else here uses them.
                (None, Some((u, t))) => Some(unsafe { weft_proxy::DnsSockets::from_raw_fds(u, t) }.map_err(|e| format!("--dns-fds: {e}"))?),
                (None, None) => None,
            },
            dns_upstream: self.dns_upstream,
            dns_in_netns: self.dns.filter(|_| intercepting),
            control_plane: self.control_plane.map(|url| {
                let host = ctl::hostname();
                (url, self.node.unwrap_or_else(|| format!("{host}-{}", std::process::id())))
            }),
        })
    }
}

/// 10,000, or half the soft open-file limit when that is lower (the other half is for
/// upstream connections, config files and the admin endpoint).
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let half = if ok && lim.rlim_cur != libc::RLIM_INFINITY { (lim.rlim_cur / 2) as usize } else { usize::MAX };
    weft_proxy::DEFAULT_MAX_CONNECTIONS.min(half).max(1)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum DiscoveryMode {
    OnDemand,
    Eager,
}
