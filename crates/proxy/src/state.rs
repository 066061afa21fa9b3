//! The live configuration: one immutable [`Runtime`] behind an `ArcSwap`, replaced
//! whole on reload. Requests load it once and never lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use weft_config::{Diagnostics, Resource, Snapshot};
use weft_telemetry::Metrics;

use crate::cluster::{Cluster, Endpoint};

pub struct Runtime {
    pub snap: Snapshot,
    pub clusters: Vec<Cluster>,
    pub resources: Vec<Resource>,
    pub revision: u64,
}

/// Process-wide state, created once and shared by every worker as `&'static`.
pub struct Shared {
    pub current: ArcSwap<Runtime>,
    pub metrics: &'static Metrics,
    pub files: Vec<PathBuf>,
    pub workers: usize,
    pub access_log: bool,
    pub draining: std::sync::atomic::AtomicBool,
    /// How long SIGTERM waits for in-flight requests.
    pub drain: std::time::Duration,
    /// Close client connections whose request head takes longer (slowloris guard).
    pub header_read_timeout: Option<std::time::Duration>,
    pub node: crate::cluster::Node,
    /// A stream with no activity this long ends (Envoy's stream_idle_timeout).
    pub stream_idle: Option<std::time::Duration>,
}

impl Runtime {
    pub fn build(
        resources: Vec<Resource>,
        snap: Snapshot,
        prev: Option<&Runtime>,
        workers: usize,
        metrics: &'static Metrics,
        revision: u64,
        node: &crate::cluster::Node,
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
        let clusters = snap.clusters.iter().map(|s| Cluster::build(s, &old, breakers.get(&s.name), workers, metrics, node)).collect();
        Runtime { snap, clusters, resources, revision }
    }
}

impl Shared {
    /// Loads the config files; on success swaps the new runtime in and returns its
    /// warnings; on failure keeps the running one and returns every error.
    pub fn reload(&self) -> Result<Diagnostics, Diagnostics> {
        let (resources, snap, diags) = weft_config::build(&self.files);
        self.install(resources, snap, diags)
    }

    /// The same from a mesh in memory (from the control plane).
    pub fn install_text(&self, name: &str, yaml: &str) -> Result<Diagnostics, Diagnostics> {
        let (resources, snap, diags) = weft_config::build_str(name, yaml);
        self.install(resources, snap, diags)
    }

    /// Swaps in resources already compiled (by the caller, e.g. from the control
    /// plane's documents kept parsed); refused when `diags` has errors.
    pub fn install_built(&self, resources: Vec<Resource>, snap: Snapshot, diags: Diagnostics) -> Result<Diagnostics, Diagnostics> {
        self.install(resources, snap, diags)
    }

    fn install(&self, resources: Vec<Resource>, snap: Snapshot, diags: Diagnostics) -> Result<Diagnostics, Diagnostics> {
        let c = &self.metrics.counters;
        if !diags.is_ok() {
            c.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(diags);
        }
        let prev = self.current.load();
        let rev = prev.revision + 1;
        let rt = Runtime::build(resources, snap, Some(&prev), self.workers, self.metrics, rev, &self.node);
        self.current.store(Arc::new(rt));
        c.reloads_ok.fetch_add(1, Ordering::Relaxed);
        c.config_revision.store(rev, Ordering::Relaxed);
        Ok(diags)
    }
}
