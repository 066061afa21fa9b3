//! The mesh's mTLS on the outbound side: `ISTIO_MUTUAL` clusters, and **auto mTLS** as
//! Istio does it — an endpoint labelled `security.istio.io/tlsMode: istio` (one a
//! workload registered with its own identity) gets mTLS with this proxy's workload
//! certificate unless a DestinationRule says anything about `tls`. The peer must prove
//! one of the service's `subjectAltNames` (the DestinationRule's, else the
//! ServiceEntry's; any identity of the mesh when neither names one).
//!
//! A cluster whose endpoints are all in the mesh speaks HTTP/2 to them (ALPN `h2`): the
//! peer is a weft sidecar, and one multiplexed connection replaces a pool. An upgrade
//! (WebSocket) to such a cluster takes its own mTLS connection offering only `http/1.1`
//! (speaking HTTP/1.1 after agreeing on `h2` would work with a weft peer, which sniffs
//! the preface, but not with a strict one). A mixed cluster keeps its protocol, and the
//! ALPN offered matches it.
//!
//! Client configs are built at config install, one per (expected identities, ALPN), and
//! kept across reloads with their session caches; the certificate inside rotates on its
//! own. Without a workload certificate nothing here applies, and an explicit
//! `ISTIO_MUTUAL` fails closed (never plaintext).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use weft_config::{ClusterSpec, EndpointSpec, PoolSettings, TlsMode, UpstreamProtocol, UpstreamTls};
use weft_telemetry::{Metrics, PeerId, PeerLabels};
use weft_tls::{SpiffeId, WorkloadIdentity};

/// Istio's endpoint label for an endpoint that speaks mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Client configs by (expected identities, h2?).
type Configs = HashMap<(Vec<String>, bool), Arc<ClientConfig>>;

pub struct MeshTls {
    identity: Arc<WorkloadIdentity>,
    /// Touched only while a config is installed, never by a request.
    configs: Mutex<Configs>,
}

impl MeshTls {
    pub fn new(identity: Arc<WorkloadIdentity>) -> MeshTls {
        MeshTls { identity, configs: Mutex::new(HashMap::new()) }
    }

    fn config(&self, sans: &[String], h2: bool) -> Option<Arc<ClientConfig>> {
        let key = (sans.to_vec(), h2);
        let mut configs = self.configs.lock().ok()?;
        if let Some(c) = configs.get(&key) {
            return Some(c.clone());
        }
        let expected: Vec<SpiffeId> = sans.iter().filter_map(|s| SpiffeId::parse(s).ok()).collect();
        let expected = (!expected.is_empty()).then_some(expected);
        let mut cfg = match weft_tls::client_config(self.identity.clone(), expected) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("mesh mTLS client config: {e}");
                return None;
            }
        };
        cfg.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        let cfg = Arc::new(cfg);
        configs.insert(key, cfg.clone());
        Some(cfg)
    }

    /// `spec` as this proxy runs it: an explicit `ISTIO_MUTUAL` with its client config,
    /// or a cluster wholly in the mesh turned to mTLS over HTTP/2.
    pub fn cluster(&self, spec: &ClusterSpec) -> ClusterSpec {
        let mut spec = spec.clone();
        let explicit = spec.pool.tls.as_ref().is_some_and(|t| t.mode == TlsMode::IstioMutual);
        let all_in_mesh = !spec.pool.tls_set && !spec.endpoints.is_empty() && spec.endpoints.iter().all(in_mesh);
        if explicit || all_in_mesh {
            spec.pool.protocol = UpstreamProtocol::Http2;
            let sans = expected(&spec);
            let mut tls = UpstreamTls::istio_mutual(sans.clone(), UpstreamProtocol::Http2);
            tls.client_config = self.config(&sans, true);
            tls.upgrade_client_config = self.config(&sans, false);
            spec.pool.tls = Some(tls);
        }
        spec
    }

    /// An endpoint's pool settings in a cluster `spec` (as [`MeshTls::cluster`] made
    /// it): auto mTLS for an in-mesh endpoint of a mixed cluster.
    pub fn endpoint(&self, spec: &ClusterSpec, e: &EndpointSpec) -> Option<PoolSettings> {
        if spec.pool.tls.is_some() || spec.pool.tls_set || !in_mesh(e) {
            return None;
        }
        let h2 = spec.pool.protocol == UpstreamProtocol::Http2;
        let sans = expected(spec);
        let mut tls = UpstreamTls::istio_mutual(sans.clone(), spec.pool.protocol);
        tls.client_config = self.config(&sans, h2);
        Some(PoolSettings { tls: Some(tls), ..spec.pool.clone() })
    }
}

impl MeshTls {
    /// The principals of this proxy's connections made with `pool` for the metrics, as
    /// Istio's `reporter="source"` series label them: this proxy's identity as the
    /// source, and the identity the peer must prove as the destination (`unknown` when
    /// several are allowed). 0 unless `pool` is the mesh's mTLS.
    pub fn principals(&self, pool: &PoolSettings, metrics: &Metrics) -> PeerId {
        match &pool.tls {
            Some(t) if t.mode == TlsMode::IstioMutual && t.client_config.is_some() => {
                let destination_principal = match t.subject_alt_names.as_slice() {
                    [one] => one.clone(),
                    _ => "unknown".to_owned(),
                };
                metrics.peer_id(PeerLabels { source_principal: self.identity.id().to_string(), destination_principal })
            }
            _ => PeerId::default(),
        }
    }
}

fn in_mesh(e: &EndpointSpec) -> bool {
    e.labels.get(TLS_MODE_LABEL).is_some_and(|v| v == "istio")
}

/// The identities a peer of `spec` must prove: the DestinationRule's `subjectAltNames`,
/// else the ServiceEntry's.
fn expected(spec: &ClusterSpec) -> Vec<String> {
    match spec.pool.tls.as_ref().filter(|t| !t.subject_alt_names.is_empty()) {
        Some(t) => t.subject_alt_names.clone(),
        None => spec.subject_alt_names.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.mesh]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]\n  endpoints:\n  - {address: 10.0.0.1, labels: {security.istio.io/tlsMode: istio}}\n";

    fn identity() -> (tempfile::TempDir, Arc<WorkloadIdentity>) {
        weft_tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = weft_tls::Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = SpiffeId::new("cluster.local", "default", "productpage").unwrap();
        let key = weft_tls::WorkloadKey::generate().unwrap();
        let c = ca.sign_csr(&key.csr(&id).unwrap(), &id, weft_tls::ca::DEFAULT_CERT_TTL).unwrap();
        (dir, Arc::new(WorkloadIdentity::new(id, &key, &c.leaf_pem, &c.chain_pem, &c.roots_pem).unwrap()))
    }

    #[test]
    fn a_cluster_wholly_in_the_mesh_offers_h2_and_http1_for_upgrades_and_names_both_principals() {
        let (_dir, id) = identity();
        let (_, snap, diags) = weft_config::build_str("se.yaml", SE);
        assert!(diags.is_ok(), "{diags:?}");
        let mesh = MeshTls::new(id);
        let spec = mesh.cluster(&snap.clusters[0]);
        let tls = spec.pool.tls.as_ref().expect("auto mTLS");
        assert_eq!(spec.pool.protocol, UpstreamProtocol::Http2);
        assert_eq!(tls.client_config.as_ref().unwrap().alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(tls.upgrade_client_config.as_ref().unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
        let metrics = Box::leak(Box::new(Metrics::new("productpage", "default")));
        let peer = mesh.principals(&spec.pool, metrics);
        assert_ne!(peer, PeerId(0));
        let labels = PeerLabels {
            source_principal: "spiffe://cluster.local/ns/default/sa/productpage".into(),
            destination_principal: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        };
        assert_eq!(metrics.peer_id(labels), peer, "interned with these labels");
        assert_eq!(mesh.principals(&snap.clusters[0].pool, metrics), PeerId(0), "plaintext has none");
    }
}
