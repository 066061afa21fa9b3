//! The live configuration: one immutable [`Runtime`] behind an `ArcSwap`, replaced
//! whole on reload by its one owner, the [`ConfigSource`]. Requests load it once,
//! never lock, and take `Arc`s of what they use (route, chain, cluster) so that a swap
//! in the middle of a request changes nothing for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use weft_config::{ClusterSpec, Diagnostics, Resource, Snapshot};
use weft_telemetry::Metrics;

use crate::cluster::{Cluster, Endpoint};
use crate::filters::Chain;
use crate::live::LiveState;

pub struct Runtime {
    /// The compiled config, shared by the runtimes an update in place makes from this
    /// one; its clusters are taken out into `specs`.
    pub snap: Arc<Snapshot>,
    /// The clusters as compiled (`clusters` holds them as run, with mesh mTLS applied).
    pub specs: Vec<Arc<ClusterSpec>>,
    pub clusters: Vec<Arc<Cluster>>,
    /// Each route's filter chain, `[vhost][route]` as in `snap.vhosts`.
    pub chains: Arc<Vec<Vec<Arc<Chain>>>>,
    /// The filters' live state, carried over to the next runtime.
    pub live: Arc<LiveState>,
    pub resources: Vec<Arc<Resource>>,
    pub revision: u64,
    /// The mesh's names and addresses (VIPs): what mesh DNS answers, and what
    /// transparent interception maps an original destination back to a service with
    /// (`shared.current.load().vips.host_for(ip)`). Built from `snap.services` once per
    /// installed config.
    pub vips: Arc<weft_config::dns::VipTable>,
}

/// Where the live configuration comes from; only it swaps the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// Files, re-read when they change and on SIGHUP.
    Files(Vec<PathBuf>),
    /// A control plane (its URL), followed by [`crate::follow`]; SIGHUP re-reads nothing.
    ControlPlane(String),
}

/// Process-wide state, created once and shared by every worker as `&'static`.
pub struct Shared {
    pub current: ArcSwap<Runtime>,
    pub metrics: &'static Metrics,
    pub source: ConfigSource,
    pub workers: usize,
    pub access_log: bool,
    pub draining: std::sync::atomic::AtomicBool,
    /// `X-Forwarded-For` hops trusted for the client's address (`remoteIpBlocks`,
    /// `remote.ip`); 0: the peer's address (Istio's `numTrustedProxies` default).
    pub xff_trusted_hops: u32,
    /// How long SIGTERM waits for in-flight requests and open tunnels.
    pub drain: std::time::Duration,
    /// The tunnels (TLS passthrough, WebSocket, CONNECT): a drain waits for them too,
    /// up to `drain`, as it does for HTTP connections.
    pub tunnels: tokio_util::task::TaskTracker,
    /// Close client connections whose request head takes longer (slowloris guard;
    /// the watchdog's, [`crate::watchdog`]).
    pub header_read_timeout: Option<std::time::Duration>,
    /// Close client connections with no request and no traffic this long.
    pub idle_timeout: Option<std::time::Duration>,
    /// Client connections beyond this are closed at accept (0: no limit).
    pub max_connections: usize,
    pub node: crate::cluster::Node,
    /// Tracing, when a collector is configured (`--otlp-endpoint`).
    pub tracer: Option<crate::trace::Tracer>,
    /// Give requests without one an `x-request-id` (with tracing, or `--request-id`).
    pub request_id: bool,
    /// Whose view of the mesh the proxy compiles: its namespace's.
    pub view: weft_config::View,
    /// A stream with no activity this long ends (Envoy's stream_idle_timeout).
    pub stream_idle: Option<std::time::Duration>,
    /// How request paths are normalized before routing (`--path-normalization`).
    pub path_normalization: crate::normalize::PathNormalization,
    /// How upstream connections are opened (every endpoint holds a copy).
    pub transport: crate::transport::Transport,
    /// The app this proxy stands beside: added to every snapshot installed.
    pub inbound: Option<weft_config::InboundSpec>,
    /// This proxy's mesh identity (SPIFFE certificate, rotated in place), when it has one:
    /// the inbound listener terminates mTLS with it, ISTIO_MUTUAL clusters originate it.
    pub identity: Option<Arc<weft_tls::WorkloadIdentity>>,
    /// The outbound side's mesh mTLS (ISTIO_MUTUAL, auto mTLS), with that identity.
    pub mesh_tls: Option<crate::mesh_tls::MeshTls>,
    /// The inbound listener's TLS config, built once from `identity` (which it reads
    /// per handshake, so rotation needs no rebuild); none without an identity.
    pub inbound_tls: Option<Arc<rustls::ServerConfig>>,
    /// Whom the config is compiled for: a sidecar, or an ingress gateway (its labels
    /// select the Gateways it serves).
    pub role: weft_config::Role,
    /// The outbound listener receives intercepted connections (`weft run --intercept`):
    /// each is classified by its original destination ([`crate::intercept`]).
    pub intercepting: bool,
    /// On-demand discovery (a sidecar following a control plane, `--discovery on-demand`).
    pub discovery: Option<crate::discovery::Discovery>,
}

impl Runtime {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        resources: Vec<Resource>,
        snap: Snapshot,
        prev: Option<&Runtime>,
        workers: usize,
        metrics: &'static Metrics,
        revision: u64,
        node: &crate::cluster::Node,
        transport: &crate::transport::Transport,
        mesh: Option<&crate::mesh_tls::MeshTls>,
    ) -> Runtime {
        let mut old: HashMap<(String, String), Arc<Endpoint>> = HashMap::new();
        let mut breakers = HashMap::new();
        if let Some(p) = prev {
            for c in &p.clusters {
                breakers.insert(c.spec.name.clone(), c.breaker.clone());
                for e in &c.endpoints {
                    old.insert((c.spec.name.clone(), e.id.clone()), e.clone());
                }
            }
        }
        let mut snap = snap;
        let specs: Vec<Arc<ClusterSpec>> = std::mem::take(&mut snap.clusters).into_iter().map(Arc::new).collect();
        let clusters: Vec<Arc<Cluster>> = specs
            .iter()
            .map(|s| match mesh {
                Some(m) => Arc::new(m.cluster(s)),
                None => s.clone(),
            })
            .map(|s| Arc::new(Cluster::build(&s, &old, breakers.get(&s.name), workers, metrics, node, transport, mesh)))
            .collect();
        let (chains, live) = crate::live::build(&snap, &clusters, prev.map(|p| &*p.live), metrics);
        let resources = resources.into_iter().map(Arc::new).collect();
        let vips = weft_config::dns::VipTable::build(&snap.services);
        if vips.unallocated() > 0 {
            tracing::warn!(
                "{} services got no virtual IP: the range 240.240.0.0/16 holds {} (mesh DNS answers them with no address)",
                vips.unallocated(),
                weft_config::dns::VIP_SLOTS
            );
        }
        Runtime {
            snap: Arc::new(snap),
            specs,
            clusters,
            chains: Arc::new(chains),
            live: Arc::new(live),
            resources,
            revision,
            vips: Arc::new(vips),
        }
    }
}

impl Shared {
    /// Re-reads the config files (when files are the source); on success swaps the new
    /// runtime in and returns its warnings; on failure keeps the running one and
    /// returns every error. A proxy following a control plane has nothing to re-read:
    /// `None`.
    pub fn reload_files(&self) -> Option<Result<Diagnostics, Diagnostics>> {
        let ConfigSource::Files(files) = &self.source else { return None };
        let (resources, snap, diags) = weft_config::build_for(files, &self.view, &self.role);
        Some(self.install(resources, snap, diags))
    }

    /// Swaps in resources already compiled (by the control-plane follower, from the
    /// documents it keeps parsed); refused when `diags` has errors.
    pub fn install_built(&self, resources: Vec<Resource>, snap: Snapshot, diags: Diagnostics) -> Result<Diagnostics, Diagnostics> {
        self.install(resources, snap, diags)
    }

    fn install(&self, resources: Vec<Resource>, snap: Snapshot, diags: Diagnostics) -> Result<Diagnostics, Diagnostics> {
        let c = &self.metrics.counters;
        if !diags.is_ok() {
            c.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(diags);
        }
        let mut snap = snap;
        if let Some(i) = &self.inbound {
            snap.add_inbound(i, &self.node.labels);
        }
        let prev = self.current.load();
        let rev = prev.revision + 1;
        let rt = Runtime::build(
            resources,
            snap,
            Some(&prev),
            self.workers,
            self.metrics,
            rev,
            &self.node,
            &self.transport,
            self.mesh_tls.as_ref(),
        );
        self.current.store(Arc::new(rt));
        c.reloads_ok.fetch_add(1, Ordering::Relaxed);
        c.config_revision.store(rev, Ordering::Relaxed);
        Ok(diags)
    }
}
