//! Wiring: load the config, start workers and the admin runtime, reload on file
//! change or SIGHUP, drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use weft_telemetry::Metrics;

use weft_config::{Resource, Snapshot};

use crate::state::{ConfigSource, Runtime, Shared};
use crate::transport::Transport;

pub struct ProxyOptions {
    pub files: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub workers: usize,
    /// The workload this proxy stands beside (`source_workload` in metrics).
    pub service: String,
    pub namespace: String,
    pub access_log: bool,
    /// How long SIGTERM waits for in-flight requests and open tunnels.
    pub drain: Duration,
    /// `X-Forwarded-For` hops trusted for the client's address in AuthorizationPolicy
    /// (`remoteIpBlocks`, `remote.ip`); 0 (Istio's default): the peer's address.
    pub xff_trusted_hops: u32,
    /// A request head must arrive whole within this (nginx's `client_header_timeout`,
    /// 60 s); None disables.
    pub header_read_timeout: Option<Duration>,
    /// A client connection with no request and no traffic this long is closed (Envoy's
    /// `idle_timeout`, 1 h); None disables.
    pub idle_timeout: Option<Duration>,
    /// Client connections the proxy holds at most (all workers together); 0: no limit.
    pub max_connections: usize,
    /// How often config files are checked for changes.
    pub watch_interval: Duration,
    /// Locality and labels, for locality-aware balancing.
    pub node: crate::cluster::Node,
    /// None disables.
    pub stream_idle_timeout: Option<Duration>,
    /// Follow this control plane (URL, node ID) instead of files.
    pub control_plane: Option<(String, String)>,
    /// The token presented to the control plane.
    pub control_plane_token: Option<String>,
    /// The mesh root bundle (PEM) an `https://` control plane is verified with (`--ca-file`).
    pub control_plane_ca: Option<String>,
    /// The inbound listener's address and the app behind it (a sidecar); none: outbound only.
    pub inbound: Option<(SocketAddr, weft_config::InboundSpec)>,
    /// The mesh identity (set by [`run`] from the control plane's CA, or by tests).
    pub identity: Option<Arc<weft_tls::WorkloadIdentity>>,
    /// The SPIFFE ID to ask the control plane's CA for, before serving (a sidecar's).
    pub want_identity: Option<weft_tls::SpiffeId>,
    /// Istio's path normalization; `base` by default.
    pub path_normalization: crate::normalize::PathNormalization,
    /// A sidecar, or an ingress gateway (`weft gateway`: the Gateways its labels select).
    pub role: weft_config::Role,
    /// An ingress gateway's TLS listener (`--https`): its Gateways' HTTPS and TLS servers.
    pub gateway_tls: Option<SocketAddr>,
    /// Where spans go (an OTLP collector's URL, e.g. http://collector:4318/v1/traces)
    /// and how (HTTP/protobuf or gRPC).
    pub otlp: Option<(String, weft_telemetry::trace::Protocol)>,
    /// Percent of new traces sampled (Istio's default: 1).
    pub trace_sampling: f64,
    /// Generate `x-request-id` for requests without one even with tracing off.
    pub request_id: bool,
    /// Push the metrics to InfluxDB (`--influxdb-url`).
    pub influxdb: Option<crate::influx::InfluxOptions>,
    /// The app's network namespace (`weft run --intercept`): the outbound listener and
    /// the connections to the app are opened in it, and the outbound listener's
    /// connections are intercepted ones.
    pub intercept_netns: Option<PathBuf>,
    /// On-demand discovery when following a control plane as a sidecar: (how long a
    /// request waits for a service asked for, how long an unused one is kept); None: the
    /// whole mesh (eager).
    pub discovery: Option<(Duration, Duration)>,
    /// Mesh DNS ([`crate::dns`]) on these sockets: bound by `--dns`, or made elsewhere
    /// (transparent interception, inside the app's network namespace) and handed in.
    pub dns: Option<crate::dns::DnsSockets>,
    /// Where mesh DNS forwards names that are not the mesh's (`--dns-upstream`); None:
    /// the first `nameserver` of /etc/resolv.conf.
    pub dns_upstream: Option<SocketAddr>,
    /// Mesh DNS on this address inside the app's network namespace (`--intercept-netns`
    /// with `--dns`: where the namespace's rules send its DNS).
    pub dns_in_netns: Option<SocketAddr>,
}

/// `--max-connections`' default: 10,000 client connections per proxy (`weft proxy`
/// lowers it to half the process's open-file limit when that is lower). A sidecar
/// serves one workload whose callers keep a few pooled connections each, so honest
/// load stays far below it; below the file descriptor limit, so that idle or
/// half-sent connections cannot take every descriptor (a client connection costs one,
/// often two with its upstream) and leave none for upstreams, config and admin while
/// the header and idle timeouts reap them. Per proxy rather than per worker: the file
/// descriptor limit is per process, and a sidecar has one worker anyway.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for ProxyOptions {
    /// `weft proxy`'s defaults (no config files, no admin endpoint).
    fn default() -> Self {
        ProxyOptions {
            files: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 15001)),
            admin: None,
            workers: 1,
            service: "unknown".into(),
            namespace: "default".into(),
            access_log: false,
            drain: Duration::from_secs(10),
            xff_trusted_hops: 0,
            header_read_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            watch_interval: Duration::from_millis(500),
            node: Default::default(),
            stream_idle_timeout: Some(Duration::from_secs(300)),
            control_plane: None,
            control_plane_token: None,
            control_plane_ca: None,
            inbound: None,
            identity: None,
            want_identity: None,
            path_normalization: Default::default(),
            role: weft_config::Role::Sidecar,
            gateway_tls: None,
            otlp: None,
            trace_sampling: 1.0,
            request_id: false,
            influxdb: None,
            intercept_netns: None,
            discovery: None,
            dns: None,
            dns_upstream: None,
            dns_in_netns: None,
        }
    }
}

/// The proxy's process-wide state, built from a config already compiled (and checked):
/// no threads, no sockets, no runtime. [`run`] serves it on its workers; the in-process
/// harness ([`crate::testing`]) serves it on the test's runtime. Leaked: it lives as
/// long as the process, and every worker holds it as `&'static`.
pub fn build_shared(
    resources: Vec<Resource>,
    snap: Snapshot,
    source: ConfigSource,
    opts: &ProxyOptions,
    transport: Transport,
) -> &'static Shared {
    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new(&opts.service, &opts.namespace)));
    metrics.counters.config_revision.store(1, Ordering::Relaxed);
    let workers = opts.workers.max(1);
    let inbound = opts.inbound.as_ref().map(|(_, spec)| spec.clone());
    let mut snap = snap;
    if let Some(i) = &inbound {
        snap.add_inbound(i, &opts.node.labels);
    }
    let mesh_tls = opts.identity.clone().map(crate::mesh_tls::MeshTls::new);
    let rt = Runtime::build(resources, snap, None, workers, metrics, 1, &opts.node, &transport, mesh_tls.as_ref());
    Box::leak(Box::new(Shared {
        current: ArcSwap::from_pointee(rt),
        metrics,
        source,
        workers,
        access_log: opts.access_log,
        draining: AtomicBool::new(false),
        drain: opts.drain,
        tunnels: tokio_util::task::TaskTracker::new(),
        xff_trusted_hops: opts.xff_trusted_hops,
        header_read_timeout: opts.header_read_timeout,
        idle_timeout: opts.idle_timeout,
        max_connections: opts.max_connections,
        node: opts.node.clone(),
        view: weft_config::View::proxy(&opts.namespace).with_labels(opts.node.labels.clone()),
        request_id: opts.request_id || opts.otlp.is_some(),
        tracer: opts.otlp.as_ref().and_then(|(e, protocol)| {
            let c = &metrics.counters;
            let started = weft_telemetry::trace::Target::parse(e, *protocol).and_then(|target| {
                let resource = crate::trace::resource(&opts.service, &opts.namespace);
                weft_telemetry::trace::Exporter::start(target, resource, &c.spans_exported, &c.spans_dropped)
            });
            match started {
                Ok(exporter) => {
                    let node =
                        opts.control_plane.as_ref().map_or_else(|| format!("{}.{}", opts.service, opts.namespace), |(_, n)| n.clone());
                    Some(crate::trace::Tracer { sampling: opts.trace_sampling.clamp(0.0, 100.0), exporter, node })
                }
                Err(e) => {
                    tracing::error!("tracing off: {e}");
                    None
                }
            }
        }),
        stream_idle: opts.stream_idle_timeout,
        path_normalization: opts.path_normalization,
        transport,
        inbound,
        identity: opts.identity.clone(),
        mesh_tls,
        inbound_tls: crate::inbound_tls::server_config(opts.identity.as_ref()),
        role: opts.role.clone(),
        intercepting: opts.intercept_netns.is_some(),
        discovery: opts
            .discovery
            .filter(|_| opts.control_plane.is_some() && matches!(opts.role, weft_config::Role::Sidecar))
            .map(|(timeout, idle)| crate::discovery::Discovery::new(&opts.namespace, timeout, idle)),
    }))
}

/// Runs the proxy until SIGTERM or SIGINT; returns an error message if it cannot start.
pub fn run(mut opts: ProxyOptions) -> Result<(), String> {
    if let Some((e, protocol)) = &opts.otlp {
        weft_telemetry::trace::Target::parse(e, *protocol)?;
    }
    let influx = opts.influxdb.as_ref().map(crate::influx::Pusher::new).transpose()?;
    // Stamped before reading, so a change made while we load is not missed.
    let initial_stamps = stamps(&opts.files);
    // A sidecar's identity first: without it, it could not take part in mTLS.
    let mut renew = None;
    if let (Some(id), Some((url, _))) = (opts.want_identity.clone(), &opts.control_plane) {
        let cp = crate::follow::ControlPlane::new(url, opts.control_plane_token.clone(), opts.control_plane_ca.as_deref(), None)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let identity = rt
            .block_on(crate::identity::obtain(&cp, &id, Duration::from_secs(10)))
            .map_err(|e| format!("no mesh identity for {id}: {e}"))?;
        let s = identity.summary();
        tracing::info!("mesh identity {id} (serial {}), valid until {:?}", s.serial, s.not_after);
        opts.identity = Some(identity.clone());
        // From now on the proxy is known by its certificate, not its bootstrap token (which
        // may expire): renewals and the follower present the certificate alone.
        let cp = crate::follow::ControlPlane::new(url, None, opts.control_plane_ca.as_deref(), Some(identity.clone()))?;
        renew = Some((cp, identity));
    }
    // From a control plane: its mesh now if it answers soon, else start empty and follow.
    let mut followed = None;
    let (resources, snap, diags) = match &opts.control_plane {
        Some((url, _)) => {
            let ca = opts.control_plane_ca.as_deref();
            // (With a certificate, the proxy calls as its workload without the token.)
            let token = if opts.identity.is_some() { None } else { opts.control_plane_token.clone() };
            let authority = crate::follow::ControlPlane::new(url, token, ca, opts.identity.clone())?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let identity = crate::follow::identity_query(&opts.namespace, &opts.node.labels);
            let on_demand = opts.discovery.is_some() && matches!(opts.role, weft_config::Role::Sidecar);
            match rt.block_on(crate::follow::fetch(&authority, &identity, on_demand, Duration::from_secs(3))) {
                Ok((rev, docs)) => {
                    let built =
                        docs.build_for(&weft_config::View::proxy(&opts.namespace).with_labels(opts.node.labels.clone()), &opts.role);
                    if built.2.is_ok() {
                        followed = Some((authority, rev, docs));
                        built
                    } else {
                        // Refused through the follower (a NACK with the reason) once it runs.
                        followed = Some((authority, 0, Default::default()));
                        weft_config::build_str("control-plane", "")
                    }
                }
                Err(e) => {
                    tracing::warn!("control plane {url} unreachable ({e}): starting with no routes, following it");
                    followed = Some((authority, 0, Default::default()));
                    weft_config::build_str("control-plane", "")
                }
            }
        }
        None => weft_config::build_for(
            &opts.files,
            &weft_config::View::proxy(&opts.namespace).with_labels(opts.node.labels.clone()),
            &opts.role,
        ),
    };
    for w in &diags.warnings {
        tracing::warn!("{w}");
    }
    if !diags.is_ok() {
        return Err(diags.to_string());
    }
    let source = match &opts.control_plane {
        Some((url, _)) => ConfigSource::ControlPlane(url.clone()),
        None => ConfigSource::Files(opts.files.clone()),
    };
    let app_netns = app_netns(&opts)?;
    let transport = app_netns.clone().map_or(Transport::Tcp, Transport::AppNetns);
    let shared = build_shared(resources, snap, source, &opts, transport);
    if let Some((_, rev, docs)) = &mut followed {
        shared.metrics.counters.control_plane_revision.store(*rev, Ordering::Relaxed);
        // On demand, the names known before the first request (not once following starts).
        if let (Some(d), Some(names)) = (&shared.discovery, docs.names.take()) {
            d.installed(0, Some(&names));
            shared.metrics.counters.discovery_names.store(d.names_len() as u64, Ordering::Relaxed);
        }
    }
    let workers = shared.workers;

    let ns = app_netns.as_ref().map(|a| &a.ns);
    if let (Some(ns), Some(a)) = (ns, opts.dns_in_netns) {
        opts.dns =
            Some(crate::dns::DnsSockets::bind_in(ns, a).map_err(|e| format!("cannot listen on {a} (dns, in the app's namespace): {e}"))?);
    }
    let (addr, listeners) =
        crate::server::bind_in(ns, opts.listen, workers).map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let (inbound_addr, mut inbound_listeners) = match &opts.inbound {
        Some((a, _)) => {
            let (addr, ls) = crate::server::bind(*a, workers).map_err(|e| format!("cannot listen on {a} (inbound): {e}"))?;
            (Some(addr), ls.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    let (gateway_tls_addr, mut gateway_tls_listeners) = match &opts.gateway_tls {
        Some(a) => {
            let (addr, ls) = crate::server::bind(*a, workers).map_err(|e| format!("cannot listen on {a} (https): {e}"))?;
            (Some(addr), ls.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    let admin_listener = match opts.admin {
        Some(a) => Some(crate::admin::bind(a).map_err(|e| format!("cannot listen on {a} (admin): {e}"))?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let dns_addr = match opts.dns.take() {
        Some(sockets) => {
            let upstream = opts.dns_upstream.or_else(crate::dns::system_upstream);
            if upstream.is_none() {
                tracing::warn!(
                    "dns: no upstream resolver (no nameserver in /etc/resolv.conf, no --dns-upstream): names outside the mesh get SERVFAIL"
                );
            }
            Some(crate::dns::start(shared, sockets, upstream)?)
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for (i, l) in listeners.into_iter().enumerate() {
        let rx = stop_rx.clone();
        let inbound = inbound_listeners.get_mut(i).and_then(Option::take);
        let gateway_tls = gateway_tls_listeners.get_mut(i).and_then(Option::take);
        let t = std::thread::Builder::new()
            .name(format!("weft-worker-{i}"))
            .spawn(move || crate::server::run_worker(shared, i, l, inbound, gateway_tls, rx))
            .map_err(|e| format!("cannot start worker: {e}"))?;
        threads.push(t);
    }
    let what = if matches!(opts.role, weft_config::Role::Gateway(_)) { "gateway" } else { "proxy" };
    tracing::info!(
        "weft {what} listening on {addr} with {workers} workers{}{}{}{}",
        inbound_addr.zip(opts.inbound.as_ref()).map(|(a, (_, s))| format!(", inbound on {a} for {}", s.app)).unwrap_or_default(),
        gateway_tls_addr.map(|a| format!(", https on {a}")).unwrap_or_default(),
        admin_addr.map(|a| format!(", admin on {a}")).unwrap_or_default(),
        dns_addr.map(|a| format!(", dns on {a}")).unwrap_or_default()
    );

    let admin_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    admin_rt.block_on(async move {
        if let Some(l) = admin_listener {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::spawn(crate::admin::serve(shared, l));
                }
                Err(e) => tracing::error!("admin: {e}"),
            }
        }
        tokio::spawn(reap(shared));
        if let Some(p) = influx {
            tokio::spawn(p.run(shared.metrics));
        }
        if let (Some((authority, rev, docs)), Some((_, node))) = (followed, opts.control_plane.clone()) {
            let ack = (rev > 0).then_some(Ok(rev));
            tokio::spawn(crate::report::run(shared, authority.clone(), node.clone()));
            tokio::spawn(crate::follow::run(shared, authority, node, rev, docs, ack));
        }
        tokio::spawn(crate::health::run(shared));
        if let Some((cp, identity)) = renew {
            tokio::spawn(crate::identity::renew(cp, identity, shared.metrics));
        }
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut seen = initial_stamps;
        let first = tokio::time::Instant::now() + opts.watch_interval;
        let mut tick = tokio::time::interval_at(first, opts.watch_interval);
        loop {
            tokio::select! {
                _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                    if matches!(shared.source, ConfigSource::Files(_)) {
                        tracing::info!("SIGHUP: reloading config");
                        reload(shared);
                        seen = stamps(&opts.files);
                    } else {
                        tracing::info!("SIGHUP: following a control plane, there are no files to re-read");
                    }
                }
                _ = tick.tick() => {
                    let now = stamps(&opts.files);
                    if now != seen {
                        seen = now;
                        tracing::info!("config file changed: reloading");
                        reload(shared);
                    }
                }
                _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => break,
                _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => break,
            }
        }
        tracing::info!("draining: finishing in-flight requests (at most {:?})", opts.drain);
        shared.draining.store(true, Ordering::Relaxed);
        // (Closed: the workers' wait ends once the open tunnels have.)
        shared.tunnels.close();
    });
    let _ = stop_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("weft proxy stopped");
    Ok(())
}

fn reload(shared: &'static Shared) {
    match shared.reload_files() {
        None => {}
        Some(Ok(d)) => {
            for w in &d.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("config revision {} active", shared.current.load().revision);
        }
        Some(Err(d)) => {
            for e in &d.errors {
                tracing::error!("config rejected, keeping revision {}: {e}", shared.current.load().revision);
            }
        }
    }
}

/// (modified time, length) of each file: a change in either means a reload.
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// Closes idle upstream connections past their idle timeout.
async fn reap(shared: &'static Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rt: Arc<Runtime> = shared.current.load_full();
        for c in &rt.clusters {
            for e in &c.endpoints {
                for p in e.pools.iter() {
                    for _ in 0..p.reap(&e.pool_settings) {
                        e.metrics.tcp_connection(e.dest, e.peer, false);
                    }
                }
            }
        }
    }
}

/// The app's network namespace, entered (`--intercept-netns`), with the app's address.
fn app_netns(opts: &ProxyOptions) -> Result<Option<Arc<crate::transport::AppNetns>>, String> {
    let Some(path) = &opts.intercept_netns else { return Ok(None) };
    let Some((_, inbound)) = &opts.inbound else {
        return Err("--intercept-netns needs --inbound and --app (the app whose namespace it is)".into());
    };
    let ns = crate::netns::NetNs::enter(path).map_err(|e| format!("cannot enter the app's network namespace: {e}"))?;
    Ok(Some(Arc::new(crate::transport::AppNetns { app: inbound.app, ns })))
}
