//! weft's configuration: Istio resources as users write them, validated with field
//! paths, and compiled into the immutable [`Snapshot`] the proxy reads per request.

pub mod authz;
mod compile;
mod compression;
mod delegate;
pub mod dns;
pub mod duration;
pub mod endpoints;
pub mod error;
mod filter_policy;
pub mod gateway;
mod healthcheck;
pub mod inbound;
pub mod istio;
pub mod load;
pub mod matcher;
pub mod mtls;
pub mod names;
mod policy;
mod ratelimit;
mod response_cache;
pub mod routes_in_place;
mod routes_splice;
mod rule_checks;
pub mod rules;
mod service_entry;
pub mod snapshot;
pub mod tcp_route;
pub mod telemetry;
pub mod tls;
pub mod tls_route;
mod vhost;
pub mod weft_kinds;

pub use compile::{compile, compile_in, View};

/// An endpoint's labels, shared: a clone is a reference count, and the equal label sets
/// of one ServiceEntry's endpoints are one map ([`istio::share_maps`]).
pub type Labels = std::sync::Arc<std::collections::BTreeMap<String, String>>;
pub use error::{ConfigError, Diagnostics, Source};
pub use gateway::{compile_for, GatewayRole, Role};
pub use inbound::InboundSpec;
pub use load::{load_files, load_str, Resource, Spec};
pub use snapshot::*;
pub use tls::{TlsMode, UpstreamTls};

/// Loads and compiles files; the snapshot is usable only when `diags.is_ok()`.
pub fn build(paths: &[impl AsRef<std::path::Path>]) -> (Vec<Resource>, Snapshot, Diagnostics) {
    build_in(paths, &View::default())
}

/// Loads and compiles files as `view` sees them.
pub fn build_in(paths: &[impl AsRef<std::path::Path>], view: &View) -> (Vec<Resource>, Snapshot, Diagnostics) {
    let (resources, mut diags) = load_files(paths);
    let snap = compile_in(&resources, view, &mut diags);
    (resources, snap, diags)
}

/// [`build_in`] for `role`: a sidecar's snapshot, or an ingress gateway's ([`gateway`]).
pub fn build_for(paths: &[impl AsRef<std::path::Path>], view: &View, role: &Role) -> (Vec<Resource>, Snapshot, Diagnostics) {
    let (resources, mut diags) = load_files(paths);
    let snap = compile_for(&resources, view, role, &mut diags);
    (resources, snap, diags)
}

/// [`build_str`] for `role` (everything visible, from namespace `default`).
pub fn build_str_for(file: &str, text: &str, role: &Role) -> (Vec<Resource>, Snapshot, Diagnostics) {
    let mut resources = Vec::new();
    let mut diags = Diagnostics::default();
    load_str(file, text, &mut resources, &mut diags);
    let snap = compile_for(&resources, &View::default(), role, &mut diags);
    (resources, snap, diags)
}

/// The same from in-memory text (tests, the control plane later).
pub fn build_str(file: &str, text: &str) -> (Vec<Resource>, Snapshot, Diagnostics) {
    build_str_in(file, text, &View::default())
}

/// In-memory text compiled as `view` sees it.
pub fn build_str_in(file: &str, text: &str, view: &View) -> (Vec<Resource>, Snapshot, Diagnostics) {
    let mut resources = Vec::new();
    let mut diags = Diagnostics::default();
    load_str(file, text, &mut resources, &mut diags);
    let snap = compile_in(&resources, view, &mut diags);
    (resources, snap, diags)
}
