//! The proxy's live state that config describes but must not hold: rate-limit
//! buckets, adaptive concurrency limiters and hedging latency windows. The config
//! snapshot stays pure; on every reload the filter chains are compiled again and
//! each piece of state is carried over while its spec is unchanged (as endpoints
//! keep their load and connections, [`crate::state::Runtime::build`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weft_config::{Action, HashKey, HedgePolicy, LbPolicy, LimiterSpec, Route, Snapshot, VirtualHost, HEDGE_MIN_SAMPLES};
use weft_resilience::adaptive::Adaptive;
use weft_resilience::bucket::{LeakyBucket, TokenBucket};
use weft_resilience::latency::LatencyWindow;

use crate::cluster::Cluster;
use crate::filters::cache::{CacheStore, Coalescer, ResponseCache};
use crate::filters::compression::Compression;
use crate::filters::rate_limit::{Limiter, RateLimit};
use crate::filters::{fault, hash_cookie, header_ops, mirror, Chain, Filter};

/// How much recent latency a `delayPercentile` reads.
const HEDGE_WINDOW: Duration = Duration::from_secs(10);

/// A host's hedging policy and the latency window its `delayPercentile` reads.
pub struct Hedge {
    pub policy: HedgePolicy,
    pub window: Option<Arc<LatencyWindow>>,
}

impl Hedge {
    /// The delay before the next hedge.
    pub fn current_delay(&self) -> Duration {
        match (&self.window, self.policy.percentile) {
            (Some(w), Some(p)) => w.percentile(p, HEDGE_MIN_SAMPLES).unwrap_or(self.policy.delay),
            _ => self.policy.delay,
        }
    }
}

/// Live state by owner: (virtual host, RateLimit) for limiters, virtual host for
/// hedging windows, (virtual host, ResponseCache) for caches and their coalescing.
#[derive(Default)]
pub struct LiveState {
    limiters: HashMap<(String, String), (LimiterSpec, Limiter)>,
    hedges: HashMap<String, (HedgePolicy, Arc<LatencyWindow>)>,
    caches: HashMap<(String, String), ResponseCache>,
    /// `jwksUri` fetchers by URI (RequestAuthentication on the inbound side).
    jwks: HashMap<String, Arc<crate::jwks::JwksFetcher>>,
}

impl LiveState {
    /// The caches held, for the admin page: (virtual host, ResponseCache, bytes held).
    pub fn caches(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.caches.iter().map(|((vh, name), c)| (vh.as_str(), name.as_str(), c.store.weighted_size()))
    }
}

/// The chains of every route, indexed `[vhost][route]` as in `snap`, and the live
/// state they use (taken from `prev` where the spec is unchanged).
pub fn build(
    snap: &Snapshot,
    clusters: &[Arc<Cluster>],
    prev: Option<&LiveState>,
    metrics: &'static weft_telemetry::Metrics,
) -> (Vec<Vec<Arc<Chain>>>, LiveState) {
    let empty = LiveState::default();
    let prev = prev.unwrap_or(&empty);
    let mut live = LiveState::default();
    let chains = snap.vhosts.iter().enumerate().map(|(vi, vh)| vhost_chains(snap, vi, vh, clusters, prev, &mut live, metrics)).collect();
    (chains, live)
}

/// The chains of the routes of a virtual host compiled in place
/// ([`weft_config::routes_in_place`]): it carries no policy with live state, so none is
/// made or taken.
pub fn new_vhost_chains(
    snap: &Snapshot,
    vi: usize,
    clusters: &[Arc<Cluster>],
    metrics: &'static weft_telemetry::Metrics,
) -> Vec<Arc<Chain>> {
    let empty = LiveState::default();
    vhost_chains(snap, vi, &snap.vhosts[vi], clusters, &empty, &mut LiveState::default(), metrics)
}

/// The chains of virtual host `vi`'s routes, `[route]`.
fn vhost_chains(
    snap: &Snapshot,
    vi: usize,
    vh: &VirtualHost,
    clusters: &[Arc<Cluster>],
    prev: &LiveState,
    live: &mut LiveState,
    metrics: &'static weft_telemetry::Metrics,
) -> Vec<Arc<Chain>> {
    let mut host_filters = host_filters(vh, prev, live, metrics);
    if snap.inbound == Some(vi) {
        // Authorization first: a denied request costs nothing else.
        if let (Some(policies), Some(app)) = (&snap.inbound_authorization, snap.inbound_app) {
            let providers = Arc::new(snap.extension_providers.iter().map(|(k, v)| (k.clone(), Arc::new(v.clone()))).collect());
            let authz = crate::filters::authz::Authz { policies: policies.clone(), destination: app, providers };
            host_filters.insert(0, Filter::Authz(authz));
        }
        // JWT before authorization: the policies read the verified token.
        if let Some(authn) = &snap.inbound_request_authn {
            host_filters.insert(0, Filter::Jwt(jwt_filter(authn, prev, live, metrics)));
        }
    }
    let hedge = vh.hedging.as_ref().map(|h| Arc::new(hedge(&vh.name, h, prev, live)));
    vh.routes
        .iter()
        .enumerate()
        .map(|(ri, route)| {
            let mut filters = host_filters.clone();
            for f in &mut filters {
                if let Filter::Cache(c) = f {
                    c.route = format!("{}#{ri}", vh.name).into();
                }
            }
            route_filters(route, clusters, &mut filters);
            Arc::new(Chain { filters: filters.into_boxed_slice(), hedge: hedge.clone() })
        })
        .collect()
}

/// The inbound side's RequestAuthentication, with the fetchers of its `jwksUri`s (taken
/// from `prev` where the URI and timeout are unchanged, so the keys held carry over).
fn jwt_filter(
    authn: &Arc<weft_authz::jwt::Authenticator>,
    prev: &LiveState,
    live: &mut LiveState,
    metrics: &'static weft_telemetry::Metrics,
) -> crate::filters::jwt::Jwt {
    let mut remote = crate::jwks::RemoteJwks::default();
    for (uri, timeout) in authn.remote_uris() {
        let fetcher = match (live.jwks.get(uri), prev.jwks.get(uri)) {
            (Some(f), _) => f.clone(),
            (None, Some(f)) if f.timeout == timeout => f.clone(),
            _ => crate::jwks::JwksFetcher::start(uri, timeout, metrics),
        };
        remote.0.insert(uri.to_owned(), fetcher.cache.clone());
        live.jwks.insert(uri.to_owned(), fetcher);
    }
    crate::filters::jwt::Jwt::new(authn.clone(), Arc::new(remote))
}

/// Host-level filters: the host's RateLimits in order, then its Compression and its
/// ResponseCache (so that a cached response is compressed on the way out, and the
/// cache keeps bodies as the upstream sent them).
fn host_filters(vh: &VirtualHost, prev: &LiveState, live: &mut LiveState, metrics: &'static weft_telemetry::Metrics) -> Vec<Filter> {
    let mut out = Vec::new();
    for rule in &vh.rate_limits {
        let key = (vh.name.clone(), rule.name.clone());
        let limiter = match prev.limiters.get(&key) {
            Some((spec, l)) if *spec == rule.limiter => l.clone(),
            _ => new_limiter(&rule.limiter),
        };
        live.limiters.insert(key, (rule.limiter.clone(), limiter.clone()));
        out.push(Filter::RateLimit(RateLimit { name: rule.name.clone(), matches: rule.matches.clone(), limiter }));
    }
    // The first policy of each kind that applies acts; one filter per policy, each
    // checking its own match, keeps that (a request matching an earlier one is
    // compressed by it; a later one finds the coding already chosen).
    for p in &vh.compression {
        out.push(Filter::Compression(Compression { policy: Arc::new(p.clone()) }));
    }
    for p in &vh.response_cache {
        let key = (vh.name.clone(), p.name.clone());
        let cache = match prev.caches.get(&key) {
            Some(old) if *old.policy == *p => old.clone(),
            _ => ResponseCache {
                policy: Arc::new(p.clone()),
                store: Arc::new(CacheStore::counted(p, Some(&metrics.counters.cache_evictions))),
                coalescer: Coalescer::new(),
                route: Arc::from(""),
            },
        };
        live.caches.insert(key, cache.clone());
        out.push(Filter::Cache(cache));
    }
    out
}

fn new_limiter(spec: &LimiterSpec) -> Limiter {
    match spec {
        LimiterSpec::Token { max_tokens, per_fill, interval } => {
            Limiter::Token(Arc::new(TokenBucket::new(*max_tokens, *per_fill, *interval)))
        }
        LimiterSpec::Leaky { rate, queue, max_delay } => Limiter::Leaky(Arc::new(LeakyBucket::new(*rate, *queue, *max_delay))),
        LimiterSpec::Adaptive(s) => Limiter::Adaptive(Arc::new(Adaptive::new(*s))),
    }
}

fn hedge(host: &str, policy: &HedgePolicy, prev: &LiveState, live: &mut LiveState) -> Hedge {
    let window = policy.percentile.map(|_| {
        let w = match prev.hedges.get(host) {
            Some((p, w)) if p == policy => w.clone(),
            _ => Arc::new(LatencyWindow::new(HEDGE_WINDOW)),
        };
        live.hedges.insert(host.to_owned(), (policy.clone(), w.clone()));
        w
    });
    Hedge { policy: policy.clone(), window }
}

/// Route-level filters: fault, header operations, mirroring, the hash cookie.
fn route_filters(route: &Route, clusters: &[Arc<Cluster>], out: &mut Vec<Filter>) {
    if let Some(f) = &route.fault {
        out.push(Filter::Fault(fault::Fault(f.clone())));
    }
    let destinations: Vec<weft_config::HeaderOps> = match &route.action {
        Action::Forward(wc) => wc.targets.iter().map(|t| t.response_headers.clone()).collect(),
        _ => Vec::new(),
    };
    if !route.request_headers.is_empty() || !route.response_headers.is_empty() || destinations.iter().any(|d| !d.is_empty()) {
        out.push(Filter::HeaderOps(header_ops::HeaderOps {
            request: route.request_headers.clone(),
            response: route.response_headers.clone(),
            destinations,
        }));
    }
    if let Some((choice, fraction)) = &route.mirror {
        if let Some(default) = clusters.get(choice.default) {
            let by_port = choice.by_port.iter().filter_map(|(p, c)| Some((*p, clusters.get(*c)?.clone()))).collect();
            out.push(Filter::Mirror(mirror::Mirror { default: default.clone(), by_port, fraction: *fraction }));
        }
    }
    if let Action::Forward(wc) = &route.action {
        let cookie = |c: usize| {
            clusters.get(c).is_some_and(|c| matches!(&c.spec.lb, LbPolicy::Hash { key: HashKey::Cookie { ttl: Some(_), .. }, .. }))
        };
        if wc.targets.iter().any(|t| cookie(t.cluster.default) || t.cluster.by_port.iter().any(|(_, c)| cookie(*c))) {
            out.push(Filter::HashCookie(hash_cookie::HashCookie));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::filters::rate_limit::Limiter;
    use crate::filters::Filter;
    use crate::state::Runtime;

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web}\nspec:\n  hosts: [web.mesh]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]\n";

    fn runtime(extra: &str, prev: Option<&Runtime>) -> Runtime {
        let metrics = Box::leak(Box::new(weft_telemetry::Metrics::new("t", "default")));
        let (resources, snap, diags) = weft_config::build_str("t", &format!("{SE}---\n{extra}"));
        assert!(diags.is_ok(), "{:?}", diags.errors);
        Runtime::build(resources, snap, prev, 1, metrics, 1, &Default::default(), &crate::transport::Transport::Tcp, None)
    }

    fn filters(rt: &Runtime) -> &[Filter] {
        &rt.chains[0][0].filters
    }

    fn bucket(rt: &Runtime) -> Arc<weft_resilience::bucket::TokenBucket> {
        match filters(rt).iter().find_map(|f| if let Filter::RateLimit(r) = f { Some(&r.limiter) } else { None }) {
            Some(Limiter::Token(b)) => b.clone(),
            _ => panic!("no token bucket in the chain"),
        }
    }

    fn cache(rt: &Runtime) -> Arc<crate::filters::cache::CacheStore> {
        filters(rt).iter().find_map(|f| if let Filter::Cache(c) = f { Some(c.store.clone()) } else { None }).expect("a cache")
    }

    const RL: &str = "apiVersion: policy.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: rl}\nspec: {host: web.mesh, tokenBucket: {maxTokens: 5, fillInterval: 1s}}\n";
    const RC: &str =
        "apiVersion: policy.weft.dev/v1alpha1\nkind: ResponseCache\nmetadata: {name: rc}\nspec: {host: web.mesh, maxBytes: 100000}\n";

    #[test]
    fn live_state_is_kept_across_reloads_while_its_spec_is_unchanged() {
        let a = runtime(&format!("{RL}---\n{RC}"), None);
        let b = runtime(&format!("{RL}---\n{RC}"), Some(&a));
        assert!(Arc::ptr_eq(&bucket(&a), &bucket(&b)), "an unchanged RateLimit keeps its bucket");
        assert!(Arc::ptr_eq(&cache(&a), &cache(&b)), "an unchanged ResponseCache keeps its entries");
        let c = runtime(&format!("{}---\n{}", RL.replace("maxTokens: 5", "maxTokens: 6"), RC.replace("100000", "200000")), Some(&b));
        assert!(!Arc::ptr_eq(&bucket(&b), &bucket(&c)), "a changed RateLimit starts a new bucket");
        assert!(!Arc::ptr_eq(&cache(&b), &cache(&c)), "a changed ResponseCache starts empty");
    }

    #[test]
    fn unconfigured_filters_are_in_no_chain() {
        let rt = runtime("", None);
        assert!(filters(&rt).is_empty(), "a plain route has an empty chain");
        let rt = runtime(RC, None);
        assert_eq!(filters(&rt).len(), 1);
    }
}
