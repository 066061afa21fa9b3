//! DestinationRule checks, as Istio's validation makes them: subsets, traffic policies
//! (load balancer, locality, warmup, connection pool, outlier detection, TLS), each
//! problem with its field path.

use std::collections::HashMap;
use std::time::Duration;

use crate::compile::Ctx;
use crate::istio::*;
use crate::load::Resource;
use crate::rules;
use crate::snapshot::UpstreamProtocol;

pub(crate) fn check_rule(r: &Resource, dr: &DestinationRule, ctx: &mut Ctx<'_>) {
    if let Some(tp) = &dr.traffic_policy {
        check_policy(r, tp, "spec.trafficPolicy", ctx);
    }
    let mut names = HashMap::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            ctx.err(r, format!("spec.subsets[{i}].name"), "missing field");
        } else if let Err(e) = crate::rules::dns1123_label(&s.name) {
            // (Istio's validation: a subset name is a DNS-1123 label; it becomes part of
            // the cluster's name.)
            ctx.err(r, format!("spec.subsets[{i}].name"), e);
        } else if names.insert(s.name.clone(), i).is_some() {
            ctx.err(r, format!("spec.subsets[{i}].name"), format!("duplicate subset {:?}", s.name));
        }
        if let Some(tp) = &s.traffic_policy {
            check_policy(r, tp, &format!("spec.subsets[{i}].trafficPolicy"), ctx);
        }
    }
}

fn check_policy(r: &Resource, tp: &TrafficPolicy, path: &str, ctx: &mut Ctx<'_>) {
    if let Some(lb) = &tp.load_balancer {
        check_lb(r, lb, &format!("{path}.loadBalancer"), ctx);
    }
    if let Some(t) = &tp.tls {
        check_tls(r, t, &format!("{path}.tls"), ctx);
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        if let Some(t) = &pl.tls {
            check_tls(r, t, &format!("{p}.tls"), ctx);
        }
        match pl.port {
            Some(PortSelector { number }) if (1..=65535).contains(&number) => {}
            _ => ctx.err(r, format!("{p}.port.number"), "a port number 1-65535 is required"),
        }
        if let Some(lb) = &pl.load_balancer {
            check_lb(r, lb, &format!("{p}.loadBalancer"), ctx);
        }
    }
    if let Some(od) = &tp.outlier_detection {
        let p = format!("{path}.outlierDetection");
        if od.latency_mad_factor.is_some_and(|k| !k.is_finite() || k <= 0.0) {
            ctx.err(r, format!("{p}.latencyMadFactor"), "must be a number greater than 0");
        }
        if od.success_rate.as_ref().and_then(|s| s.stdev_factor).is_some_and(|k| !k.is_finite() || k <= 0.0) {
            ctx.err(r, format!("{p}.successRate.stdevFactor"), "must be a number greater than 0 (Envoy's 1900 is 1.9 here)");
        }
        if let Some(t) = od.failure_percentage.as_ref().and_then(|f| f.threshold).filter(|t| *t > 100) {
            ctx.err(r, format!("{p}.failurePercentage.threshold"), format!("{t} is not a percentage 0-100"));
        }
    }
    if let Some(cp) = &tp.connection_pool {
        if let Some(k) = cp.http.as_ref().and_then(|h| h.http2_keep_alive.as_ref()) {
            let p = format!("{path}.connectionPool.http.http2KeepAlive");
            for (field, d) in [("interval", k.interval), ("timeout", k.timeout)] {
                match d {
                    None => ctx.err(r, format!("{p}.{field}"), "missing field"),
                    Some(d) => check_ms(r, d.0, format!("{p}.{field}"), ctx),
                }
            }
        }
        if let Some(tcp) = &cp.tcp {
            if tcp.connect_timeout.is_some_and(|d| d.0 == Duration::ZERO) {
                ctx.err(r, format!("{path}.connectionPool.tcp.connectTimeout"), "must be greater than 0");
            }
        }
    }
}

/// Compiles `tls` once to report its problems (files included) with their field paths.
fn check_tls(r: &Resource, t: &ClientTlsSettings, path: &str, ctx: &mut Ctx<'_>) {
    if let Err(errs) = crate::tls::compile(t, "", UpstreamProtocol::Http1) {
        for (field, msg) in errs {
            let p = if field.is_empty() { path.to_owned() } else { format!("{path}.{field}") };
            ctx.err(r, p, msg);
        }
    }
}

/// Istio's rule for a duration: at least 1 ms, whole milliseconds.
fn check_ms(r: &Resource, d: Duration, path: String, ctx: &mut Ctx<'_>) {
    if d < Duration::from_millis(1) {
        ctx.err(r, path, "must be at least 1ms");
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        ctx.err(r, path, "only whole milliseconds are supported");
    }
}

fn check_lb(r: &Resource, lb: &LoadBalancerSettings, path: &str, ctx: &mut Ctx<'_>) {
    if let Some(w) = &lb.warmup {
        let p = format!("{path}.warmup");
        match w.duration {
            None => ctx.err(r, format!("{p}.duration"), "missing field (the slow start window)"),
            Some(d) => check_ms(r, d.0, format!("{p}.duration"), ctx),
        }
        if let Some(m) = w.minimum_percent.filter(|m| !(0.0..=100.0).contains(m)) {
            ctx.err(r, format!("{p}.minimumPercent"), format!("{m} is not a percentage 0-100"));
        }
        if let Some(a) = w.aggression.filter(|a| !a.is_finite() || *a <= 0.0) {
            ctx.err(r, format!("{p}.aggression"), format!("{a} must be greater than 0"));
        }
    }
    if let Some(d) = lb.warmup_duration_secs {
        check_ms(r, d.0, format!("{path}.warmupDurationSecs"), ctx);
    }
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        ctx.err(r, path.to_owned(), "only one of simple or consistentHash may be set");
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(r, l, &format!("{path}.localityLbSetting"), ctx);
    }
    if let Some(ch) = &lb.consistent_hash {
        let p = format!("{path}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => ctx.err(r, p.clone(), "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required"),
            1 => {}
            _ => ctx.err(r, p.clone(), "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set"),
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                ctx.err(r, format!("{p}.httpCookie.name"), "missing field");
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            ctx.err(r, p.clone(), "only one of ringHash or maglev may be set");
        }
        if let Some(m) = &ch.maglev {
            if let Some(t) = m.table_size {
                if t > rules::MAX_MAGLEV_TABLE {
                    ctx.err(r, format!("{p}.maglev.tableSize"), format!("{t} is over Envoy's largest table, {}", rules::MAX_MAGLEV_TABLE));
                } else if !is_prime(t) {
                    ctx.err(
                        r,
                        format!("{p}.maglev.tableSize"),
                        format!("{t} is not a prime number (Envoy requires a prime; 65537 is the default)"),
                    );
                }
            }
        }
        if let Some(rh) = &ch.ring_hash {
            if rh.minimum_ring_size.is_some_and(|m| m > rules::MAX_RING_SIZE) {
                ctx.err(r, format!("{p}.ringHash.minimumRingSize"), format!("must be at most {}", rules::MAX_RING_SIZE));
            }
        }
        if ch.minimum_ring_size.is_some_and(|m| m > rules::MAX_RING_SIZE) {
            ctx.err(r, format!("{p}.minimumRingSize"), format!("must be at most {}", rules::MAX_RING_SIZE));
        }
    }
}

/// Istio's rules for `localityLbSetting`.
fn check_locality(r: &Resource, l: &LocalityLbSetting, path: &str, ctx: &mut Ctx<'_>) {
    use weft_balance::locality::Locality;
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        ctx.err(r, path.to_owned(), "only one of distribute or failover may be set");
    }
    if !l.distribute.is_empty() && !l.failover_priority.is_empty() {
        ctx.err(r, path.to_owned(), "only one of distribute or failoverPriority may be set");
    }
    let pattern_ok = |p: &str| {
        let parts: Vec<&str> = p.split('/').collect();
        // A `*` may only stand last.
        !p.is_empty() && parts.len() <= 3 && parts.iter().all(|x| !x.is_empty()) && parts[..parts.len() - 1].iter().all(|x| *x != "*")
    };
    for (i, d) in l.distribute.iter().enumerate() {
        let p = format!("{path}.distribute[{i}]");
        if !pattern_ok(&d.from) {
            ctx.err(r, format!("{p}.from"), format!("{:?} is not a locality (region/zone/subzone, `*` last)", d.from));
        }
        if d.to.is_empty() {
            ctx.err(r, format!("{p}.to"), "missing field");
        }
        for k in d.to.keys().filter(|k| !pattern_ok(k)) {
            ctx.err(r, format!("{p}.to.{k}"), format!("{k:?} is not a locality (region/zone/subzone, `*` last)"));
        }
        let sum: u64 = d.to.values().map(|v| u64::from(*v)).sum();
        if !d.to.is_empty() && sum != 100 {
            ctx.err(r, format!("{p}.to"), format!("weights add up to {sum}, not 100"));
        }
    }
    for (i, f) in l.failover.iter().enumerate() {
        let p = format!("{path}.failover[{i}]");
        for (field, v) in [("from", &f.from), ("to", &f.to)] {
            if v.is_empty() || v.contains('/') || Locality::parse(v).is_none() {
                ctx.err(r, format!("{p}.{field}"), format!("{v:?} is not a region"));
            }
        }
        if f.from == f.to && !f.from.is_empty() {
            ctx.err(r, format!("{p}.to"), "must be another region than from");
        }
    }
}

pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
