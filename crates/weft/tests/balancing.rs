//! Every load-balancing policy, measured through a real proxy to real backends.

mod common;
use common::*;

fn three(weights: [u32; 3]) -> (Vec<Proc>, String) {
    let b: Vec<Proc> = ["a", "b", "c"].iter().map(|n| backend(n, &[])).collect();
    let se = service_entry("svc", &[(b[0].addr, "v: a", weights[0]), (b[1].addr, "v: b", weights[1]), (b[2].addr, "v: c", weights[2])]);
    (b, se)
}

#[test]
fn weighted_policies_follow_weights_within_3_percent() {
    let (_b, se) = three([1, 2, 3]);
    for policy in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
        let p = proxy(&(se.clone() + &destination_rule("svc", &format!("{{loadBalancer: {{simple: {policy}}}}}"))));
        let got = spread(p.addr(), "svc", 10_000, &[]);
        assert_shares(&got, &[("a", 1.0 / 6.0), ("b", 2.0 / 6.0), ("c", 3.0 / 6.0)], 0.03);
    }
}

#[test]
fn equal_weights_split_evenly_and_round_robin_rotates() {
    let (_b, se) = three([1, 1, 1]);
    let p = proxy(&(se + &destination_rule("svc", "{loadBalancer: {simple: ROUND_ROBIN}}")));
    let mut c = Client::connect(p.addr());
    let seq: Vec<String> = (0..9).map(|_| c.get("svc", "/", &[]).backend()).collect();
    // Strict rotation: every window of three holds all three backends.
    for w in seq.windows(3) {
        let mut w = w.to_vec();
        w.sort();
        w.dedup();
        assert_eq!(w.len(), 3, "{seq:?}");
    }
}

#[test]
fn peak_ewma_avoids_the_slow_endpoint() {
    let fast1 = backend("fast1", &[]);
    let fast2 = backend("fast2", &[]);
    let slow = backend("slow", &["--latency", "40ms"]);
    let se = service_entry("svc", &[(fast1.addr, "v: a", 1), (fast2.addr, "v: b", 1), (slow.addr, "v: c", 1)]);
    let p = proxy(&(se + &destination_rule("svc", "{loadBalancer: {simple: PEAK_EWMA}}")));
    let got = spread(p.addr(), "svc", 400, &[]);
    let s = *got.get("slow").unwrap_or(&0) as f64 / 400.0;
    assert!(s < 0.05, "slow endpoint got {s:.3} of requests: {got:?}");
}

#[test]
fn header_hash_is_sticky_and_ring_hash_moves_about_one_nth_on_removal() {
    let b: Vec<Proc> = (0..5).map(|i| backend(&format!("b{i}"), &[])).collect();
    let eps: Vec<_> = b.iter().map(|x| (x.addr, "v: x", 1)).collect();
    let dr = destination_rule("svc", "{loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}}");
    let p = proxy(&(service_entry("svc", &eps) + &dr));
    let mut c = Client::connect(p.addr());
    let keys: Vec<String> = (0..600).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = keys.iter().map(|k| c.get("svc", "/", &[("x-user", k)]).backend()).collect();
    // The same key always reaches the same endpoint.
    for (k, b0) in keys.iter().zip(&before).take(100) {
        for _ in 0..3 {
            assert_eq!(&c.get("svc", "/", &[("x-user", k)]).backend(), b0);
        }
    }
    // Every endpoint owns some keys.
    for i in 0..5 {
        assert!(before.iter().any(|x| x == &format!("b{i}")), "b{i} owns no key");
    }
    // Remove b4 (live reload): its keys move, about 1/5 in all, all to live endpoints.
    p.rewrite(&(service_entry("svc", &eps[..4]) + &dr));
    let mut c = Client::connect(p.addr());
    let after: Vec<String> = keys.iter().map(|k| c.get("svc", "/", &[("x-user", k)]).backend()).collect();
    assert!(after.iter().all(|x| x != "b4"), "a key still maps to the removed endpoint");
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count() as f64 / keys.len() as f64;
    let owned_by_b4 = before.iter().filter(|x| *x == "b4").count() as f64 / keys.len() as f64;
    assert!(moved >= owned_by_b4 && moved < owned_by_b4 + 0.08, "moved {moved:.3}, b4 owned {owned_by_b4:.3}");
    assert!((0.1..0.32).contains(&moved), "moved {moved:.3}, expected about 1/5");
}

#[test]
fn maglev_is_sticky_and_keeps_most_keys_on_removal() {
    let b: Vec<Proc> = (0..5).map(|i| backend(&format!("m{i}"), &[])).collect();
    let eps: Vec<_> = b.iter().map(|x| (x.addr, "v: x", 1)).collect();
    let dr = destination_rule("svc", "{loadBalancer: {consistentHash: {httpQueryParameterName: id, maglev: {tableSize: 65537}}}}");
    let p = proxy(&(service_entry("svc", &eps) + &dr));
    let mut c = Client::connect(p.addr());
    let before: Vec<String> = (0..400).map(|i| c.get("svc", &format!("/?x=1&id={i}"), &[]).backend()).collect();
    let again: Vec<String> = (0..400).map(|i| c.get("svc", &format!("/?id={i}"), &[]).backend()).collect();
    assert_eq!(before, again);
    p.rewrite(&(service_entry("svc", &eps[..4]) + &dr));
    let mut c = Client::connect(p.addr());
    let after: Vec<String> = (0..400).map(|i| c.get("svc", &format!("/?id={i}"), &[]).backend()).collect();
    assert!(after.iter().all(|x| x != "m4"));
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count() as f64 / 400.0;
    assert!(moved < 0.45, "maglev moved {moved:.3}");
}

#[test]
fn cookie_hash_sets_the_cookie_and_then_sticks() {
    let (_b, se) = three([1, 1, 1]);
    let dr = destination_rule("svc", "{loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}}");
    let p = proxy(&(se + &dr));
    let mut c = Client::connect(p.addr());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let first = c.get("svc", "/", &[]);
        let set = first.header("set-cookie").expect("the proxy sets the cookie").to_owned();
        assert!(set.starts_with("sticky=") && set.contains("Max-Age=60") && set.contains("Path=/"), "{set}");
        let pair = set.split(';').next().unwrap().to_owned();
        for _ in 0..5 {
            let r = c.get("svc", "/", &[("cookie", &pair)]);
            assert!(r.header("set-cookie").is_none());
            assert_eq!(r.backend(), first.backend(), "cookie {pair} moved");
        }
        seen.insert(first.backend());
    }
    assert!(seen.len() > 1, "new cookies should spread over endpoints: {seen:?}");
}

#[test]
fn source_ip_hash_is_sticky_per_client_address() {
    let (_b, se) = three([1, 1, 1]);
    let p = proxy(&(se + &destination_rule("svc", "{loadBalancer: {consistentHash: {useSourceIp: true}}}")));
    let mut seen = std::collections::BTreeSet::new();
    for i in 2..14u8 {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i));
        let first = Client::connect_from(ip, p.addr()).get("svc", "/", &[]).backend();
        for _ in 0..3 {
            assert_eq!(Client::connect_from(ip, p.addr()).get("svc", "/", &[]).backend(), first);
        }
        seen.insert(first);
    }
    assert!(seen.len() > 1, "{seen:?}");
}
