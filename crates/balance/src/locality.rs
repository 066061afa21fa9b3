//! Locality-aware load balancing, pure: which priority level each endpoint falls in
//! (Istio's failover order, or `failoverPriority` labels), the locality weights of a
//! `distribute` rule, and how load spreads over priority levels by their health
//! (Envoy's 1.4 overprovisioning factor).

use std::collections::BTreeMap;

/// `region/zone/subzone`; missing parts are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// Parses `region[/zone[/subzone]]`; `None` for more than three parts or an empty region.
    pub fn parse(s: &str) -> Option<Locality> {
        let mut parts = s.split('/');
        let region = parts.next()?.to_owned();
        let zone = parts.next().unwrap_or("").to_owned();
        let subzone = parts.next().unwrap_or("").to_owned();
        if region.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(Locality { region, zone, subzone })
    }

    /// Whether `pattern` (`region[/zone[/subzone]]`, each part a name or `*`; a shorter
    /// pattern covers everything under it) takes in this locality.
    pub fn matches(&self, pattern: &str) -> bool {
        let mine = [&self.region, &self.zone, &self.subzone];
        pattern.split('/').enumerate().all(|(i, p)| p == "*" || mine.get(i).is_some_and(|m| *m == p))
    }

    /// Parts of the pattern that are not `*`: a more specific pattern wins.
    pub fn specificity(pattern: &str) -> usize {
        pattern.split('/').filter(|p| *p != "*").count()
    }
}

/// Istio's default failover order from the proxy's locality `me`: 0 same subzone,
/// 1 same zone, 2 same region, 3 a region named by a `failover` rule from `me`'s
/// region, 4 any other region. Endpoints without a locality are the farthest.
pub fn failover_priority(me: &Locality, ep: Option<&Locality>, failover: &[(String, String)]) -> u32 {
    let Some(ep) = ep else { return 4 };
    if ep.region != me.region {
        let named = failover.iter().any(|(from, to)| *from == me.region && *to == ep.region);
        return if named { 3 } else { 4 };
    }
    if ep.zone != me.zone {
        return 2;
    }
    if ep.subzone != me.subzone {
        return 1;
    }
    0
}

/// `failoverPriority`: an endpoint matching the proxy on all `keys` is priority 0, on
/// all but the last 1, and so on; matching not even the first is `keys.len()`.
pub fn label_priority(me: &BTreeMap<String, String>, ep: &BTreeMap<String, String>, keys: &[String]) -> u32 {
    let matched = keys.iter().take_while(|k| me.get(*k).is_some_and(|v| ep.get(*k) == Some(v))).count();
    (keys.len() - matched) as u32
}

/// A `distribute` rule's share for an endpoint's locality: the most specific `to`
/// pattern that takes it in, or `None` (the endpoint gets no traffic).
pub fn distribute_weight(ep: Option<&Locality>, to: &[(String, u32)]) -> Option<u32> {
    let ep = ep?;
    to.iter().filter(|(p, _)| ep.matches(p)).max_by_key(|(p, _)| Locality::specificity(p)).map(|(_, w)| *w)
}

/// Envoy's overprovisioning factor: a level keeps all its load down to 1/1.4 ≈ 71.4 %
/// of its endpoints healthy.
pub const OVERPROVISIONING: f64 = 1.4;

/// The share of requests for each priority level, from its (healthy, total) endpoints:
/// each level takes what its health (× 1.4, at most 100 %) covers of what the levels
/// before it left, and the shares are normalised when together they fall short. With
/// no healthy endpoint anywhere, everything goes to the first non-empty level.
pub fn level_loads(levels: &[(u32, u32)]) -> Vec<f64> {
    let health: Vec<f64> = levels
        .iter()
        .map(|&(healthy, total)| if total == 0 { 0.0 } else { (OVERPROVISIONING * f64::from(healthy) / f64::from(total)).min(1.0) })
        .collect();
    let mut remaining = 1.0;
    let mut loads: Vec<f64> = health
        .iter()
        .map(|h| {
            let l = h.min(remaining);
            remaining -= l;
            l
        })
        .collect();
    let sum: f64 = loads.iter().sum();
    if sum <= 0.0 {
        if let Some(first) = levels.iter().position(|&(_, total)| total > 0) {
            loads[first] = 1.0;
        }
        return loads;
    }
    loads.iter_mut().for_each(|l| *l /= sum);
    loads
}

/// Envoy's default panic threshold: a level with fewer healthy endpoints than this
/// share is used whole, healthy or not.
pub const PANIC_PERCENT: u32 = 50;

/// Which level a uniform `x` in [0, 1) falls in under `loads`.
pub fn choose_level(loads: &[f64], x: f64) -> usize {
    let mut acc = 0.0;
    for (i, l) in loads.iter().enumerate() {
        acc += l;
        if x < acc {
            return i;
        }
    }
    loads.iter().rposition(|l| *l > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Locality {
        Locality::parse(s).unwrap()
    }

    #[test]
    fn parse_and_match() {
        assert_eq!(loc("us-west"), Locality { region: "us-west".into(), ..Default::default() });
        assert!(Locality::parse("a/b/c/d").is_none() && Locality::parse("").is_none() && Locality::parse("/z").is_none());
        let l = loc("us-west/zone1/sub1");
        assert!(l.matches("us-west/zone1/*") && l.matches("us-west") && l.matches("*") && l.matches("us-west/zone1/sub1"));
        assert!(!l.matches("us-west/zone2/*") && !l.matches("us-east"));
    }

    #[test]
    fn failover_order() {
        let me = loc("r1/z1/s1");
        let f = vec![("r1".to_string(), "r3".to_string())];
        let p = |s: &str| failover_priority(&me, Some(&loc(s)), &f);
        assert_eq!([p("r1/z1/s1"), p("r1/z1/s2"), p("r1/z2/s1"), p("r3/z1/s1"), p("r2/z1/s1")], [0, 1, 2, 3, 4]);
        assert_eq!(failover_priority(&me, None, &f), 4);
    }

    #[test]
    fn label_order() {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let me = map(&[("net", "a"), ("region", "r1")]);
        let keys = vec!["net".to_string(), "region".to_string()];
        assert_eq!(label_priority(&me, &map(&[("net", "a"), ("region", "r1")]), &keys), 0);
        assert_eq!(label_priority(&me, &map(&[("net", "a"), ("region", "r2")]), &keys), 1);
        assert_eq!(label_priority(&me, &map(&[("region", "r1")]), &keys), 2, "the first label decides first");
    }

    #[test]
    fn distribute_takes_the_most_specific_pattern() {
        let to = vec![("r1/*".to_string(), 80), ("r1/z2/*".to_string(), 15), ("r2/*".to_string(), 5)];
        assert_eq!(distribute_weight(Some(&loc("r1/z1/s")), &to), Some(80));
        assert_eq!(distribute_weight(Some(&loc("r1/z2/s")), &to), Some(15));
        assert_eq!(distribute_weight(Some(&loc("r3/z1")), &to), None);
        assert_eq!(distribute_weight(None, &to), None);
    }

    #[test]
    fn loads_follow_health_with_overprovisioning() {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
        // Healthy local level: everything stays local.
        assert!(close(&level_loads(&[(3, 3), (3, 3)]), &[1.0, 0.0]));
        // 5 of 7 healthy (71.4 %) still covers 100 %.
        assert!(close(&level_loads(&[(5, 7), (3, 3)]), &[1.0, 0.0]));
        // 1 of 2 healthy: 70 % stays, 30 % fails over.
        assert!(close(&level_loads(&[(1, 2), (3, 3)]), &[0.7, 0.3]));
        // Local all down: the next level takes everything; empty levels are skipped.
        assert!(close(&level_loads(&[(0, 3), (0, 0), (2, 2)]), &[0.0, 0.0, 1.0]));
        // Together short of 100 %: normalised (0.35 + 0.35 → half each).
        assert!(close(&level_loads(&[(1, 4), (1, 4)]), &[0.5, 0.5]));
        // Nothing healthy: the first level with endpoints.
        assert!(close(&level_loads(&[(0, 0), (0, 3), (0, 2)]), &[0.0, 1.0, 0.0]));
    }

    #[test]
    fn choosing_a_level() {
        let loads = [0.7, 0.3, 0.0];
        assert_eq!(choose_level(&loads, 0.0), 0);
        assert_eq!(choose_level(&loads, 0.69), 0);
        assert_eq!(choose_level(&loads, 0.71), 1);
        assert_eq!(choose_level(&loads, 0.999_999_999_999), 1);
    }
}
