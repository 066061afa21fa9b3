//! DestinationRule traffic policies: merging (top level → port level → subset →
//! subset port level, field by field as Istio does) and conversion to runtime settings.

use std::time::Duration;

use weft_resilience::outlier;

use crate::istio::*;
use crate::snapshot::{HashAlgorithm, HashKey, Keepalive, LbPolicy, Limits, LocalityLb, PoolSettings, UpstreamProtocol, Warmup};

/// The policy that applies to one (port, subset).
#[derive(Debug, Default)]
pub(crate) struct Effective {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub retry_budget: Option<RetryBudget>,
    /// `tls`, with the path of the field it came from (for errors).
    pub tls: Option<(ClientTlsSettings, String)>,
}

fn apply(eff: &mut Effective, tp: &TrafficPolicy, path: &str, port: u16) {
    if let Some(t) = &tp.tls {
        eff.tls = Some((t.clone(), format!("{path}.tls")));
    }
    if tp.load_balancer.is_some() {
        eff.load_balancer = tp.load_balancer.clone();
    }
    if tp.connection_pool.is_some() {
        eff.connection_pool = tp.connection_pool.clone();
    }
    if tp.outlier_detection.is_some() {
        eff.outlier_detection = tp.outlier_detection.clone();
    }
    if tp.retry_budget.is_some() {
        eff.retry_budget = tp.retry_budget.clone();
    }
    if let Some((i, pl)) = tp.port_level_settings.iter().enumerate().find(|(_, p)| p.port.map(|s| s.number) == Some(port as u32)) {
        if let Some(t) = &pl.tls {
            eff.tls = Some((t.clone(), format!("{path}.portLevelSettings[{i}].tls")));
        }
        if pl.load_balancer.is_some() {
            eff.load_balancer = pl.load_balancer.clone();
        }
        if pl.connection_pool.is_some() {
            eff.connection_pool = pl.connection_pool.clone();
        }
        if pl.outlier_detection.is_some() {
            eff.outlier_detection = pl.outlier_detection.clone();
        }
    }
}

/// `outlierDetection` with Istio's defaults for what it leaves out.
pub(crate) fn outlier_settings(od: Option<&OutlierDetection>) -> Option<weft_resilience::outlier::Settings> {
    let od = od?;
    let d = weft_resilience::outlier::Settings::default();
    let pct = |v: Option<i32>, default: u32| v.map(|p| p.clamp(0, 100) as u32).unwrap_or(default);
    Some(weft_resilience::outlier::Settings {
        consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
        consecutive_gateway: od.consecutive_gateway_errors.or(od.consecutive_errors).unwrap_or(d.consecutive_gateway),
        consecutive_local_origin: od.consecutive_local_origin_failures.unwrap_or(d.consecutive_local_origin),
        split_local_origin: od.split_external_local_origin_errors.unwrap_or(false),
        interval: od.interval.map(|v| v.0).filter(|v| !v.is_zero()).unwrap_or(d.interval),
        base_ejection: od.base_ejection_time.map(|v| v.0).filter(|v| !v.is_zero()).unwrap_or(d.base_ejection),
        max_ejection_percent: pct(od.max_ejection_percent, d.max_ejection_percent),
        min_health_percent: pct(od.min_health_percent, d.min_health_percent),
        latency_mad_factor: od.latency_mad_factor.filter(|k| k.is_finite() && *k > 0.0),
        success_rate: od.success_rate.as_ref().map(|sr| {
            let d = outlier::SuccessRate::default();
            outlier::SuccessRate {
                minimum_hosts: sr.minimum_hosts.unwrap_or(d.minimum_hosts),
                request_volume: sr.request_volume.unwrap_or(d.request_volume),
                stdev_factor: sr.stdev_factor.unwrap_or(d.stdev_factor),
            }
        }),
        failure_percentage: od.failure_percentage.as_ref().map(|fp| {
            let d = outlier::FailurePercentage::default();
            outlier::FailurePercentage {
                threshold: fp.threshold.unwrap_or(d.threshold),
                minimum_hosts: fp.minimum_hosts.unwrap_or(d.minimum_hosts),
                request_volume: fp.request_volume.unwrap_or(d.request_volume),
            }
        }),
    })
}

/// The locality balancing that applies: see [`LocalityLb`].
pub(crate) fn locality_lb(lb: Option<&LoadBalancerSettings>, outlier: bool) -> Option<LocalityLb> {
    let setting = lb.and_then(|l| l.locality_lb_setting.as_ref());
    if setting.is_some_and(|s| s.enabled == Some(false)) {
        return None;
    }
    if let Some(s) = setting.filter(|s| !s.distribute.is_empty()) {
        let rules = s.distribute.iter().map(|d| (d.from.clone(), d.to.iter().map(|(k, v)| (k.clone(), *v)).collect())).collect();
        return Some(LocalityLb::Distribute(rules));
    }
    outlier.then(|| LocalityLb::Failover {
        failover: setting.map(|s| s.failover.iter().map(|f| (f.from.clone(), f.to.clone())).collect()).unwrap_or_default(),
        priority_labels: setting.map(|s| s.failover_priority.clone()).unwrap_or_default(),
    })
}

/// `subset` is the subset's index and its policy; the most specific setting wins
/// (subset port level > subset > port level > top level), as in Istio.
pub(crate) fn merge_policy(top: Option<&TrafficPolicy>, subset: Option<(usize, &TrafficPolicy)>, port: u16) -> Effective {
    let mut eff = Effective::default();
    if let Some(t) = top {
        apply(&mut eff, t, "spec.trafficPolicy", port);
    }
    if let Some((i, s)) = subset {
        apply(&mut eff, s, &format!("spec.subsets[{i}].trafficPolicy"), port);
    }
    eff
}

/// Istio's default is LEAST_REQUEST; LEAST_CONN is its deprecated alias.
/// `loadBalancer.warmup` (or the older `warmupDurationSecs`) as it applies: only to
/// ROUND_ROBIN and LEAST_REQUEST (Istio's default), as in Envoy.
pub(crate) fn warmup(lb: Option<&LoadBalancerSettings>) -> Option<Warmup> {
    let lb = lb?;
    let applies = lb.consistent_hash.is_none()
        && matches!(lb.simple, None | Some(SimpleLb::RoundRobin | SimpleLb::LeastRequest | SimpleLb::LeastConn));
    if !applies {
        return None;
    }
    let (window, minimum, aggression) = match (&lb.warmup, lb.warmup_duration_secs) {
        (Some(w), _) => (w.duration?.0, w.minimum_percent.unwrap_or(10.0) / 100.0, w.aggression.unwrap_or(1.0)),
        (None, Some(d)) => (d.0, 0.1, 1.0),
        (None, None) => return None,
    };
    (!window.is_zero() && aggression > 0.0).then_some(Warmup { window, minimum: minimum.clamp(0.0, 1.0), aggression })
}

pub(crate) fn lb_policy(lb: Option<&LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            HashKey::Cookie { name: c.name.clone(), path: c.path.clone(), ttl: c.ttl.map(|d| d.0) }
        } else if let Some(q) = &ch.http_query_parameter_name {
            HashKey::QueryParameter(q.clone())
        } else {
            HashKey::SourceIp
        };
        let algorithm = if let Some(m) = &ch.maglev {
            HashAlgorithm::Maglev { table_size: m.table_size.unwrap_or(65537) }
        } else {
            let min = ch.ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(ch.minimum_ring_size).unwrap_or(1024);
            HashAlgorithm::RingHash { minimum_ring_size: min.max(1) }
        };
        return LbPolicy::Hash { key, algorithm };
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::Passthrough) => LbPolicy::Passthrough,
        Some(SimpleLb::PeakEwma) => LbPolicy::PeakEwma,
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified) | None => LbPolicy::LeastRequest,
    }
}

/// Connection-pool settings; `port_protocol` is the ServiceEntry port's protocol
/// (HTTP2 and GRPC ports speak HTTP/2 upstream, as in Istio).
/// `connectionPool` limits; 0 is read as unset, as Istio does.
/// Envoy's retry budget defaults: 20 % of requests in flight, at least 3 retries.
pub(crate) fn limits(cp: Option<&ConnectionPoolSettings>, budget: Option<&RetryBudget>) -> Limits {
    let mut l = Limits::default();
    if let Some(b) = budget {
        l.retry_budget = Some((b.percent.unwrap_or(20.0).clamp(0.0, 100.0) / 100.0, b.min_retry_concurrency.unwrap_or(3)));
    }
    let set = |v: Option<u32>, d: u32| v.filter(|n| *n > 0).unwrap_or(d);
    if let Some(cp) = cp {
        if let Some(t) = &cp.tcp {
            l.max_connections = set(t.max_connections, l.max_connections);
        }
        if let Some(h) = &cp.http {
            l.max_requests = set(h.http2_max_requests, l.max_requests);
            l.max_pending = set(h.http1_max_pending_requests, l.max_pending);
            l.max_retries = set(h.max_retries, l.max_retries);
        }
    }
    l
}

pub(crate) fn pool_settings(cp: Option<&ConnectionPoolSettings>, port_protocol: Option<&str>) -> PoolSettings {
    let mut p = PoolSettings::default();
    if matches!(port_protocol.map(str::to_ascii_uppercase).as_deref(), Some("HTTP2" | "GRPC" | "GRPC-WEB")) {
        p.protocol = UpstreamProtocol::Http2;
    }
    let Some(cp) = cp else { return p };
    if let Some(tcp) = &cp.tcp {
        if let Some(d) = tcp.connect_timeout {
            p.connect_timeout = d.0;
        }
        if let Some(d) = tcp.idle_timeout {
            p.idle_timeout = d.0;
        }
        p.max_connection_duration = tcp.max_connection_duration.map(|d| d.0).filter(|d| *d > Duration::ZERO);
        if let Some(k) = &tcp.tcp_keepalive {
            p.keepalive = Some(Keepalive { time: k.time.map(|d| d.0), interval: k.interval.map(|d| d.0), probes: k.probes });
        }
    }
    if let Some(h) = &cp.http {
        if let Some(d) = h.idle_timeout {
            p.idle_timeout = d.0;
        }
        p.max_requests_per_connection = h.max_requests_per_connection.unwrap_or(0);
        if let Some(k) = &h.http2_keep_alive {
            // (Both are required by validation; the fallbacks are hyper's defaults.)
            let interval = k.interval.map(|d| d.0).unwrap_or(Duration::from_secs(30));
            let timeout = k.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(20));
            p.h2_keepalive = Some((interval, timeout));
        }
        if h.use_client_protocol == Some(true) {
            p.protocol = UpstreamProtocol::Client;
        } else {
            if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
                p.protocol = UpstreamProtocol::Http2;
            }
        }
    }
    p
}
