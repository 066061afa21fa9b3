//! The inbound side of a sidecar: requests that arrive on its inbound listener (from
//! other proxies, or plaintext clients where allowed) all go to the one local app. The
//! proxy adds this to every snapshot it installs, whatever the mesh holds: one cluster
//! (`inbound|<port>||<service>.<namespace>`, Istio's name) with the app as its only
//! endpoint, and one virtual host whose one route forwards everything to it. The
//! filters and policies a route can carry plug in here like on the outbound side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::snapshot::{
    Action, ClusterChoice, ClusterSpec, EndpointSpec, HeaderOps, LbPolicy, Limits, PoolSettings, Route, Snapshot, VirtualHost,
    WeightedClusters, WeightedTarget,
};

/// The workload a sidecar stands beside, as `weft proxy --app --service --namespace` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSpec {
    /// Where the local app listens (plaintext HTTP/1.1).
    pub app: SocketAddr,
    pub service: String,
    pub namespace: String,
}

impl InboundSpec {
    /// Istio's inbound cluster name.
    pub fn cluster_name(&self) -> String {
        format!("{INBOUND_PREFIX}{}||{}.{}", self.app.port(), self.service, self.namespace)
    }
}

/// How an inbound cluster's name starts (metrics report its requests as the destination's).
pub const INBOUND_PREFIX: &str = "inbound|";

impl InboundSpec {}

impl Snapshot {
    /// Adds the inbound cluster and virtual host; `inbound` then names the virtual host.
    /// The AuthorizationPolicies that apply to the workload (its namespace, service and
    /// `labels`) become `inbound_authorization`, and the rules of the
    /// RequestAuthentications that apply, merged, `inbound_request_authn`.
    pub fn add_inbound(&mut self, spec: &InboundSpec, labels: &BTreeMap<String, String>) {
        let workload = weft_authz::scope::Workload { namespace: &spec.namespace, service: &spec.service, labels };
        let mine = self.authorization.iter().filter(|p| p.scope.applies_to(&workload)).map(|p| p.policy.clone());
        let policies = weft_authz::Policies::from_compiled(mine);
        self.inbound_authorization = (!policies.is_empty()).then(|| Arc::new(policies));
        let authns = self.request_authentication.iter().filter(|ra| ra.scope.applies_to(&workload));
        let authn = weft_authz::jwt::Authenticator::merged(authns.map(|ra| &*ra.authn));
        self.inbound_request_authn = (!authn.is_empty()).then(|| Arc::new(authn));
        self.inbound_app = Some(spec.app);
        let cluster = self.clusters.len();
        self.clusters.push(ClusterSpec {
            name: spec.cluster_name(),
            service: format!("{}.{}.svc.cluster.local", spec.service, spec.namespace),
            namespace: spec.namespace.clone(),
            port: spec.app.port(),
            subset: None,
            lb: LbPolicy::RoundRobin,
            pool: PoolSettings::default(),
            outlier: None,
            limits: Limits::default(),
            locality: None,
            dns: false,
            endpoints: vec![EndpointSpec {
                address: spec.app.ip().to_string(),
                port: spec.app.port(),
                weight: 1,
                labels: Default::default(),
                locality: None,
            }],
            subject_alt_names: Vec::new(),
            warmup: None,
            origin: None,
        });
        let target = WeightedTarget {
            cluster: ClusterChoice { default: cluster, by_port: Vec::new() },
            weight: 1,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        };
        // No retries: the app is one local process, and a request the app saw once
        // must not reach it twice.
        let route = Route {
            name: "inbound".into(),
            matches: Vec::new(),
            action: Action::Forward(WeightedClusters { targets: vec![target], cumulative: vec![1], total: 1 }),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            timeout: None,
            rewrite: None,
            mirror: None,
            retry: None,
            fault: None,
        };
        self.inbound = Some(self.vhosts.len());
        self.vhosts.push(VirtualHost {
            name: format!("inbound/{}.{}", spec.service, spec.namespace),
            routes: vec![Arc::new(route)],
            rate_limits: Vec::new(),
            hedging: None,
            compression: Vec::new(),
            response_cache: Vec::new(),
        });
    }
}
