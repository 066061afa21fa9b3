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
mod proxy_args;
mod run;
mod table;
mod tracing_args;
mod views;

/// mimalloc: measured ~10 % more requests/s than glibc malloc through the proxy.
/// Built with `MI_DEFAULT_ARENA_EAGER_COMMIT=0` (.cargo/config.toml) so memory is
/// committed as used, not an arena up front (that cost ~10 MB of RSS). The feature
/// `system-allocator` builds with the C library's malloc instead, for heap profilers that
/// hook it (`heaptrack`, valgrind's massif).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proxy_args::ProxyArgs;

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
    /// API connections held at once (default 8,192; lowered to fit the open-file limit).
    /// Past it, the oldest connection not yet proven by a call with valid credentials is
    /// closed for the new one; one source address holds at most a thirty-second of the
    /// cap unproven, one credential a quarter of it proven (README: "Security model and
    /// limits").
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: Option<u32>,
    #[command(flatten)]
    tracing: tracing_args::TracingArgs,
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

fn parse_locality(s: &str) -> Result<weft_balance::locality::Locality, String> {
    weft_balance::locality::Locality::parse(s).ok_or_else(|| format!("{s:?} is not region/zone/subzone"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
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

/// The API's connection cap that fits the open-file limit, after raising the soft limit to
/// the hard one: a cap past the limit would let idle connections run the process out of
/// descriptors (every accept failing) before any of them is closed to make room. A
/// quarter of the limit, 16 to 64 descriptors, is kept for the store, etcd and the rest
/// (an idle control plane holds 13).
fn api_connection_cap(given: Option<usize>) -> usize {
    let wanted = given.unwrap_or(weft_control::MAX_API_CONNECTIONS);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return wanted;
    }
    let soft = lim.rlim_cur as usize;
    let fits = soft.saturating_sub((soft / 4).clamp(16, 64)).max(1);
    if given.is_some_and(|n| n > fits) {
        eprintln!("warning: --max-connections {wanted} is past the open-file limit ({soft}): the API holds at most {fits} connections");
    }
    wanted.min(fits)
}

/// mimalloc's `mi_option_purge_delay` (the `mi_option_t` value in mimalloc 2's header;
/// `libmimalloc-sys` names no constant for it).
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once instead of after a delay that only
/// passes while the allocator is busy: a control plane is idle after a large apply (its
/// transient documents freed), and kept them resident (measured at 10,000 services:
/// 375–581 MB from run to run, 358 MB purged at once; 1,000 changes/s unaffected).
fn return_freed_memory_at_once() {
    // (`MIMALLOC_PURGE_DELAY` in the environment, as mimalloc reads it, is left to rule.)
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    #[cfg(not(feature = "system-allocator"))]
    // SAFETY: sets a process-wide allocator option, read by mimalloc on each purge.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0)
    };
}

fn control_plane(a: ControlPlaneArgs) -> ExitCode {
    return_freed_memory_at_once();
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
    match weft_control::run(weft_control::Options {
        store,
        listen: a.listen,
        access,
        ca,
        api_names: a.api_names,
        tracing,
        zookeeper,
        max_connections: api_connection_cap(a.max_connections.map(|n| n as usize)),
    }) {
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
