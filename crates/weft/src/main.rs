//! `weft`: one binary for the proxy, config validation, the demo and its backends.

mod backend;
mod bench;
mod cpbench;
mod cpchurn;
mod ctl;
mod demo;
mod get;
mod incrbench;
mod manifest;
mod run;
mod table;
mod tracing_args;
mod views;

/// mimalloc: measured ~10 % more requests/s than glibc malloc through the proxy.
/// Built with `MI_DEFAULT_ARENA_EAGER_COMMIT=0` (.cargo/config.toml) so memory is
/// committed as used, not an arena up front (that cost ~10 MB of RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version, about = "A fast service mesh that reads Istio's YAML")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve traffic routed by Istio resources read from files.
    Proxy(Box<ProxyArgs>),
    /// An Istio ingress gateway: serve the Gateways whose selector --gateway-labels match,
    /// with the VirtualServices bound to them (HTTP servers on --listen, HTTPS/TLS on --https).
    Gateway(Box<GatewayArgs>),
    /// Check config files without serving; exit 1 on any error.
    Validate {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Check as an ingress gateway with these labels would (its Gateways' servers,
        /// credentials read from --credentials-dir), "key=value[,key=value]" (repeatable).
        #[arg(long = "gateway-labels", value_parser = parse_labels)]
        gateway_labels: Vec<Vec<(String, String)>>,
        /// Where a gateway reads credentialName NAME: DIR/NAME/tls.crt, tls.key, ca.crt.
        #[arg(long, requires = "gateway_labels")]
        credentials_dir: Option<PathBuf>,
    },
    /// Run an app with its sidecar: started, registered when ready, restarted when it
    /// crashes, deregistered and drained on SIGTERM (`weft run --service S --port P -- CMD…`).
    Run(Box<run::RunArgs>),
    /// Start demo backends and a proxy in front of them, send traffic, show the result.
    Demo(demo::DemoArgs),
    /// (`weft x backend`, kept for scripts.)
    #[command(hide = true)]
    Backend(backend::BackendArgs),
    /// Load-test a URL: closed loop (-c) or open loop at a fixed rate (-q), HTTP/1.1 or h2c.
    Bench(bench::BenchArgs),
    /// Compare two targets in interleaved rounds: differences with confidence intervals and a verdict.
    Ab(bench::AbArgs),
    /// Run the control plane: registry and config store (embedded, durable) behind an HTTP API.
    ControlPlane(ControlPlaneArgs),
    /// Validate and store resources in the control plane (all files or none).
    Apply(ctl::ApplyArgs),
    /// List resources of a kind (or one by name), the registry's endpoints and
    /// services, or the proxies: a table, or -o wide|name|yaml|json.
    Get(get::GetArgs),
    /// Delete a stored resource (KIND NAME), or every one a file declares (-f).
    Delete(ctl::DeleteArgs),
    /// List the control plane's revisions: when, what, by which client.
    History(ctl::ServerArg),
    /// Restore the config as of a revision (a new revision).
    Rollback(ctl::RollbackArgs),
    /// Register an endpoint of a service (with --ttl it must heartbeat).
    Register(ctl::RegisterArgs),
    /// Remove a registered endpoint.
    Deregister(ctl::DeregisterArgs),
    /// The proxies following the control plane: acknowledged revision, lag, NACKs.
    Status(ctl::ServerArg),
    /// (`weft x bench-control-plane`, kept for scripts.)
    #[command(hide = true)]
    BenchControlPlane(cpbench::CpBenchArgs),
    /// Developer tools (as `istioctl x`): a demo backend, the control plane's push benchmark.
    #[command(subcommand)]
    X(XCmd),
    /// API tokens: `weft token create --role read|write|admin`, or
    /// `--namespace NS --service-account SA` for a workload (a proxy's bootstrap token).
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand)]
enum XCmd {
    /// A demo backend: answers every request with its name, with optional latency and errors.
    Backend(backend::BackendArgs),
    /// Measure push propagation to many simulated proxy streams (--churn: registry churn).
    BenchControlPlane(cpbench::CpBenchArgs),
    /// Measure what endpoint changes cost a proxy following the whole mesh (in process).
    BenchIncremental(incrbench::IncrBenchArgs),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Ask the control plane for a new token (needs an admin token) and print it.
    Create(ctl::TokenArgs),
}

#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// Where the embedded store keeps its file (weft.redb).
    #[arg(long, required_if_eq("store", "embedded"))]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:15010")]
    listen: SocketAddr,
    /// embedded: one durable file under --data-dir; etcd: an etcd cluster that several
    /// control planes share.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "etcd"])]
    store: String,
    /// The etcd cluster's client URLs, comma-separated (with --store etcd).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// The key prefix weft's data lives under in etcd (one mesh per prefix).
    #[arg(long, default_value = "/weft/")]
    etcd_prefix: String,
    /// Revisions between checkpoints of the whole store in etcd (a control plane
    /// starts from the latest and replays the records after it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    etcd_checkpoint_every: u64,
    /// The key that signs API tokens (default <data-dir>/token-key; made on first start
    /// with an admin token in <data-dir>/admin-token, or beside the key without a data
    /// directory). Control planes sharing an etcd store must share this file.
    #[arg(long)]
    token_key: Option<PathBuf>,
    /// Serve the API to anyone, asking no credentials (local demos only).
    #[arg(long)]
    insecure: bool,
    /// The mesh CA's files (Istio's layout: root-cert.pem, ca-cert.pem, ca-key.pem,
    /// cert-chain.pem): an operator's root/intermediate, or generated here on first
    /// start. Default <data-dir>/ca.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The trust domain of the SPIFFE identities issued.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Another name (DNS name or address) the API's certificate is valid for, beside the
    /// listen address, localhost and the hostname (repeatable).
    #[arg(long = "api-name")]
    api_names: Vec<String>,
    /// ZooKeeper servers to discover services from (`host:2181[,host:2181…]`): Curator
    /// instances under --zookeeper-root and Dubbo providers under /dubbo become
    /// registered endpoints.
    #[arg(long)]
    zookeeper: Option<String>,
    /// Curator's service-discovery root path (with --zookeeper).
    #[arg(long, default_value = "/services", requires = "zookeeper")]
    zookeeper_root: String,
    #[command(flatten)]
    tracing: tracing_args::TracingArgs,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// A multi-document YAML file of Istio resources (repeatable).
    #[arg(long = "config", short = 'c', required_unless_present = "control_plane")]
    config: Vec<PathBuf>,
    /// Follow this control plane (e.g. http://127.0.0.1:15010) for the mesh, instead of files.
    #[arg(long, conflicts_with = "config")]
    control_plane: Option<String>,
    /// Following a control plane: `on-demand` holds the mesh's names and asks for a
    /// service's routes, policies and endpoints when a request first needs it; `eager`
    /// holds the whole mesh (what its Sidecar admits).
    #[arg(long, value_enum, default_value = "on-demand")]
    discovery: DiscoveryMode,
    /// How long a request waits for a service asked for on demand (then 503, flag NC).
    #[arg(long, default_value = "5s", value_parser = parse_dur)]
    discovery_timeout: Duration,
    /// A service asked for on demand and unused this long is dropped (asked again when needed).
    #[arg(long, default_value = "10m", value_parser = parse_dur)]
    discovery_idle: Duration,
    /// A file holding the token this proxy presents to the control plane (a workload
    /// token from `weft token create --namespace NS --service-account SA`; default
    /// $WEFT_TOKEN_FILE, or the token itself in $WEFT_TOKEN).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The mesh root bundle (PEM) an https:// control plane is verified with: its
    /// <ca-dir>/root-cert.pem (default: $WEFT_CA_FILE).
    #[arg(long, env = "WEFT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// This proxy's ID at the control plane (default: hostname-pid).
    #[arg(long)]
    node: Option<String>,
    /// Address for traffic (HTTP/1.1 and h2c on the same port).
    #[arg(long, default_value = "127.0.0.1:15001")]
    listen: SocketAddr,
    /// Address for /metrics, /ready, /config_dump, /clusters.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The inbound listener (a sidecar's, e.g. 0.0.0.0:15006): every request on it goes
    /// to --app. Needs --app.
    #[arg(long, requires = "app")]
    inbound: Option<SocketAddr>,
    /// The local app behind the inbound listener (plaintext HTTP/1.1), e.g. 127.0.0.1:8080.
    #[arg(long, requires = "inbound")]
    app: Option<SocketAddr>,
    /// The app's network namespace, e.g. /proc/PID/task/TID/ns/net (set by `weft run
    /// --intercept`): --listen and the connections to --app are opened in it, and
    /// --listen's connections are intercepted ones (their original destination decides).
    #[arg(long, requires = "app")]
    intercept_netns: Option<std::path::PathBuf>,
    /// The service account of the workload (its SPIFFE identity's `sa`; default: --service).
    /// Following a control plane with --inbound or this flag, the proxy gets a certificate
    /// for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> before it serves.
    #[arg(long)]
    service_account: Option<String>,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Worker threads (default 1, as a sidecar; 0 = one per core, for a per-host proxy).
    #[arg(long)]
    workers: Option<usize>,
    /// The workload this proxy stands beside (metrics' source_workload).
    #[arg(long, default_value = "unknown")]
    service: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Print an access log line per request on stdout.
    #[arg(long)]
    access_log: bool,
    /// How long SIGTERM waits for in-flight requests and open tunnels (WebSocket, CONNECT,
    /// TLS passthrough), e.g. "10s".
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    drain_timeout: Duration,
    /// X-Forwarded-For hops to trust for the client's address in AuthorizationPolicy
    /// (remoteIpBlocks, remote.ip; Istio's numTrustedProxies); 0: the peer's address.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=32))]
    xff_trusted_hops: u32,
    /// Close client connections whose request head takes longer than this to arrive
    /// whole (nginx's client_header_timeout); 0s disables.
    #[arg(long, default_value = "60s", value_parser = parse_dur)]
    header_read_timeout: Duration,
    /// Close client connections with no request in flight and no traffic for this long
    /// (Envoy's idle_timeout); 0s disables.
    #[arg(long, default_value = "1h", value_parser = parse_dur)]
    idle_timeout: Duration,
    /// Client connections held at most (all workers together); past it new ones are
    /// closed at once. Default 10000, or half the open-file limit if lower; 0: no limit.
    #[arg(long)]
    max_connections: Option<usize>,
    /// How often config files are checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value = "500ms", value_parser = parse_dur)]
    watch_interval: Duration,
    /// This proxy's locality, "region/zone/subzone", for locality-aware balancing.
    #[arg(long, value_parser = parse_locality)]
    locality: Option<weft_balance::locality::Locality>,
    /// A label of the workload beside this proxy, "key=value" (repeatable), matched by
    /// a DestinationRule's failoverPriority.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// End a request whose upstream sends nothing for this long: before the response
    /// head, when no route or per-try timeout is set (408, flag SI), and between body
    /// chunks (the response is cut off). Envoy's stream_idle_timeout; 0s disables.
    #[arg(long, default_value = "5m", value_parser = parse_dur)]
    stream_idle_timeout: Duration,
    /// How request paths are normalized before routing and forwarding (Istio's
    /// pathNormalization): base decodes unreserved escapes, turns \ into / and resolves
    /// . and .. (encoded NUL or control characters: 400); merge-slashes also merges
    /// runs of /; decode-and-merge-slashes also decodes %2F and %5C.
    #[arg(long, value_enum, default_value = "base")]
    path_normalization: PathNormalizationArg,
    #[command(flatten)]
    tracing: tracing_args::TracingArgs,
    /// Give every request without one an x-request-id (a UUID v4), as Envoy does, even
    /// with tracing off (with tracing on it is always done).
    #[arg(long)]
    request_id: bool,
    /// Push the metrics (those of /metrics) to InfluxDB in line protocol, e.g.
    /// http://127.0.0.1:8086/write?db=weft (its v1 write API).
    #[arg(long)]
    influxdb_url: Option<String>,
    /// How often the metrics are pushed to --influxdb-url (at least 1s).
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    influxdb_interval: Duration,
    /// A file holding an InfluxDB token, sent as `Authorization: Token …` (InfluxDB 2).
    #[arg(long)]
    influxdb_token_file: Option<PathBuf>,
    /// Serve mesh DNS on this address, UDP and TCP (e.g. 127.0.0.1:15053): mesh service
    /// names (reviews, reviews.default, reviews.default.svc.cluster.local, ServiceEntry
    /// hosts) answer with the service's address or a stable virtual IP; other names are
    /// forwarded to --dns-upstream.
    #[arg(long, conflicts_with = "dns_fds")]
    dns: Option<SocketAddr>,
    /// Serve mesh DNS on inherited sockets instead of binding --dns: "UDP,TCP", the file
    /// descriptors of a UDP socket and a listening TCP socket (made by interception inside
    /// the app's network namespace).
    #[arg(long, value_parser = parse_fds)]
    dns_fds: Option<(i32, i32)>,
    /// Where mesh DNS forwards other names, IP[:PORT] (port 53 by default); default: the
    /// first nameserver of /etc/resolv.conf.
    #[arg(long, value_parser = parse_upstream)]
    dns_upstream: Option<SocketAddr>,
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

#[derive(clap::Args)]
struct GatewayArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    /// The TLS listener: the Gateways' HTTPS servers (TLS terminated with the server's
    /// certificate, chosen by SNI) and TLS PASSTHROUGH servers (e.g. 0.0.0.0:8443).
    #[arg(long)]
    https: Option<SocketAddr>,
    /// This gateway's labels, "key=value[,key=value]" (repeatable): it serves every
    /// Gateway whose selector they all satisfy (e.g. istio=ingressgateway).
    #[arg(long = "gateway-labels", value_parser = parse_labels, required = true)]
    gateway_labels: Vec<Vec<(String, String)>>,
    /// Where credentialName NAME is read: DIR/NAME/tls.crt, DIR/NAME/tls.key and, for
    /// MUTUAL, DIR/NAME/ca.crt (or DIR/NAME-cacert/ca.crt): a Kubernetes TLS secret's keys.
    #[arg(long)]
    credentials_dir: Option<PathBuf>,
}

fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',').map(parse_label).collect()
}

fn gateway_role(labels: Vec<Vec<(String, String)>>, credentials_dir: Option<PathBuf>) -> weft_config::Role {
    weft_config::Role::Gateway(weft_config::GatewayRole { labels: labels.into_iter().flatten().collect(), credentials_dir })
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PathNormalizationArg {
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

fn parse_locality(s: &str) -> Result<weft_balance::locality::Locality, String> {
    weft_balance::locality::Locality::parse(s).ok_or_else(|| format!("{s:?} is not region/zone/subzone"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

impl ProxyArgs {
    fn into_options(self) -> Result<weft_proxy::ProxyOptions, String> {
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
enum DiscoveryMode {
    OnDemand,
    Eager,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    weft_config::duration::parse_duration(s)
}

fn main() -> ExitCode {
    weft_tls::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Proxy(a) => run_proxy(*a, weft_config::Role::Sidecar, None),
        Cmd::Gateway(g) => {
            let g = *g;
            if g.proxy.inbound.is_some() {
                eprintln!("error: a gateway has no inbound listener (--inbound, --app are a sidecar's)");
                return ExitCode::from(2);
            }
            run_proxy(g.proxy, gateway_role(g.gateway_labels, g.credentials_dir), g.https)
        }
        Cmd::Validate { files, gateway_labels, credentials_dir } => {
            let role = match gateway_labels.is_empty() {
                true => weft_config::Role::Sidecar,
                false => gateway_role(gateway_labels, credentials_dir),
            };
            validate(&files, &role)
        }
        Cmd::Demo(a) => demo::run(a),
        Cmd::Run(a) => run::run(*a),
        Cmd::Backend(a) | Cmd::X(XCmd::Backend(a)) => backend::run(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Ab(a) => bench::ab(a),
        Cmd::ControlPlane(a) => control_plane(a),
        Cmd::Apply(a) => ctl::apply(a),
        Cmd::Get(a) => get::get(a),
        Cmd::Delete(a) => ctl::delete(a),
        Cmd::History(a) => ctl::history(a),
        Cmd::Rollback(a) => ctl::rollback(a),
        Cmd::Register(a) => ctl::register(a),
        Cmd::Deregister(a) => ctl::deregister(a),
        Cmd::Status(a) => ctl::status(a),
        Cmd::BenchControlPlane(a) | Cmd::X(XCmd::BenchControlPlane(a)) => cpbench::run(a),
        Cmd::X(XCmd::BenchIncremental(a)) => incrbench::run(a),
        Cmd::Token(TokenCmd::Create(a)) => ctl::token_create(a),
    }
}

/// `weft proxy` and `weft gateway`: the same proxy, its config compiled for `role`.
fn run_proxy(a: ProxyArgs, role: weft_config::Role, gateway_tls: Option<SocketAddr>) -> ExitCode {
    let token = match a.control_plane.as_ref().map(|_| ctl::read_token(a.token_file.as_deref())) {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(t)) => t,
        None => None,
    };
    // Following a control plane, a sidecar (or a proxy given its service account)
    // gets a mesh identity.
    let want_identity = match a.control_plane.is_some() && (a.inbound.is_some() || a.service_account.is_some()) {
        false => None,
        true => match weft_tls::SpiffeId::new(&a.trust_domain, &a.namespace, a.service_account.as_deref().unwrap_or(&a.service)) {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!("error: no SPIFFE identity from --trust-domain, --namespace and --service-account/--service: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let ca = match a.ca_file.as_ref().map(|f| std::fs::read_to_string(f).map_err(|e| format!("--ca-file {}: {e}", f.display()))) {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(pem)) => Some(pem),
        None => None,
    };
    let base = match a.into_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = weft_proxy::ProxyOptions { control_plane_token: token, control_plane_ca: ca, want_identity, role, gateway_tls, ..base };
    match weft_proxy::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn control_plane(a: ControlPlaneArgs) -> ExitCode {
    let access = match (a.insecure, &a.token_key, &a.data_dir) {
        (true, _, _) => weft_control::Access::Insecure,
        (false, Some(key), dir) => {
            // The first admin token goes to the data directory, else beside the key.
            let first = dir.clone().or_else(|| key.parent().map(PathBuf::from)).unwrap_or_default().join("admin-token");
            weft_control::Access::Tokens { key: key.clone(), first_admin: Some(first) }
        }
        (false, None, Some(dir)) => weft_control::Access::Tokens { key: dir.join("token-key"), first_admin: Some(dir.join("admin-token")) },
        (false, None, None) => {
            eprintln!("error: the API's tokens need a key: give --data-dir or --token-key (or --insecure for a local demo)");
            return ExitCode::from(2);
        }
    };
    let ca = a.ca_dir.clone().or_else(|| a.data_dir.as_ref().map(|d| d.join("ca"))).map(|d| (d, a.trust_domain.clone()));
    let tracing = match a.tracing.resolve() {
        Ok(t) => {
            t.map(|(endpoint, protocol)| weft_control::api_trace::TraceOptions { endpoint, protocol, sampling: a.tracing.trace_sampling })
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match (a.store.as_str(), a.data_dir) {
        ("etcd", _) => {
            weft_control::StoreKind::Etcd { endpoints: a.etcd_endpoints, prefix: a.etcd_prefix, checkpoint_every: a.etcd_checkpoint_every }
        }
        (_, Some(dir)) => weft_control::StoreKind::Embedded(dir),
        (_, None) => {
            eprintln!("error: --data-dir is required with the embedded store");
            return ExitCode::from(2);
        }
    };
    let zookeeper = a.zookeeper.map(|servers| weft_control::zookeeper::Options { servers, root: a.zookeeper_root });
    match weft_control::run(weft_control::Options { store, listen: a.listen, access, ca, api_names: a.api_names, tracing, zookeeper }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(files: &[PathBuf], role: &weft_config::Role) -> ExitCode {
    let (resources, snap, diags) = weft_config::build_for(files, &weft_config::View::default(), role);
    for w in &diags.warnings {
        eprintln!("warning: {w}");
    }
    for e in &diags.errors {
        eprintln!("{e}");
    }
    if let (true, Some(g)) = (diags.is_ok(), &snap.gateway) {
        let http = snap.exact_hosts.len() + snap.wildcard_hosts.len() + usize::from(snap.catch_all.is_some());
        println!(
            "{} resources OK: a gateway with {http} HTTP hosts, {} TLS servers, {} clusters",
            resources.len(),
            g.tls_servers.len(),
            snap.clusters.len()
        );
        ExitCode::SUCCESS
    } else if diags.is_ok() {
        println!(
            "{} resources OK: {} hosts, {} clusters",
            resources.len(),
            snap.exact_hosts.len() + snap.wildcard_hosts.len(),
            snap.clusters.len()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
