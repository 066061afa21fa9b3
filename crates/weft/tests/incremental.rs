//! Endpoint changes applied in place by a proxy following a real control plane: a
//! registration for one service leaves another service's endpoint state — requests,
//! errors, ejections, pooled connections — as it was.

mod common;

use common::*;
use serde_json::Value;

/// `/clusters`' entry for `service` port 80 (no subset): each endpoint's state that a
/// rebuild would lose, by address.
fn state(p: &Proxy, service: &str) -> Vec<(String, Value, Value, Value, Value, Value)> {
    let v: Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let c = v["clusters"].as_array().unwrap().iter().find(|c| c["service"] == service && c["subset"].is_null()).unwrap().clone();
    c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].clone();
            (
                e["address"].as_str().unwrap().to_owned(),
                s("requests_total"),
                s("errors_total"),
                s("idle_connections"),
                s("health"),
                e["ejection"]["reason"].clone(),
            )
        })
        .collect()
}

fn opened(p: &Proxy, service: &str) -> f64 {
    p.metric("istio_tcp_connections_opened_total", &[&format!("destination_service=\"{service}\"")])
}

#[test]
fn a_registration_for_one_service_leaves_anothers_endpoint_state_and_connections_untouched() {
    let cp = plane();
    let (a1, a2, b1) = (backend("a1", &[]), backend("a2", &[]), backend("b1", &[]));
    let b2 = backend("b2", &["--error-rate", "1"]);
    let mut mesh = service_entry("alpha", &[(a1.addr, "", 1)]);
    mesh += "---\n";
    mesh += &service_entry("beta", &[(b1.addr, "", 1), (b2.addr, "", 1)]);
    mesh += &destination_rule(
        "beta",
        "{outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 300s, maxEjectionPercent: 50}}",
    );
    let out = cp.apply("mesh.yaml", &mesh);
    assert!(out.status.success(), "{}", text(&out));
    let p = follower(&cp, "incr");
    wait_until("alpha routes", || get(p.addr(), "alpha", "/", &[]).status == 200);

    // beta: traffic on pooled connections, and b2 ejected for its 503.
    let mut c = Client::connect(p.addr());
    for _ in 0..10 {
        c.get("beta", "/", &[]);
    }
    wait_until("b2 ejected", || state(&p, "beta").iter().any(|e| e.4 == "EJECTED"));
    let before = state(&p, "beta");
    let b2_state = before.iter().find(|e| e.0 == b2.addr.to_string()).unwrap();
    assert_eq!((b2_state.4.as_str(), b2_state.5.as_str()), (Some("EJECTED"), Some("consecutive_5xx")), "{before:?}");
    assert!(before.iter().all(|e| e.1.as_u64() > Some(0)), "both had requests: {before:?}");
    let beta_opened = opened(&p, "beta");
    assert!(beta_opened >= 1.0);
    let full = p.metric("weft_control_plane_full_updates_total", &[]);

    // alpha gains a2, then loses it: each a delta of alpha's endpoints, applied in place.
    let out = cp.weft(&["register", "--service", "alpha", "--address", &a2.addr.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("alpha routes to a1 and a2", || spread(p.addr(), "alpha", 20, &[]).len() == 2);
    assert!(p.metric("weft_control_plane_in_place_updates_total", &[]) >= 1.0, "{}", p.admin("/metrics"));
    assert_eq!(state(&p, "beta"), before, "beta's endpoints are untouched");
    let out = cp.weft(&["deregister", "--service", "alpha", "--address", &a2.addr.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("alpha routes to a1 alone", || spread(p.addr(), "alpha", 20, &[]).keys().eq(["a1"]));
    assert_eq!(state(&p, "beta"), before, "beta's endpoints are untouched");
    assert_eq!(p.metric("weft_control_plane_full_updates_total", &[]), full, "nothing compiled whole");
    assert!(p.metric("weft_control_plane_in_place_updates_total", &[]) >= 2.0);

    // beta still serves from b1 alone (b2 stays ejected) on the connections it had.
    for _ in 0..5 {
        assert_eq!(c.get("beta", "/", &[]).backend(), "b1");
    }
    assert_eq!(opened(&p, "beta"), beta_opened, "no new connection to beta");
    let after = state(&p, "beta");
    let b1_requests = |s: &[(String, Value, Value, Value, Value, Value)]| s.iter().find(|e| e.0 == b1.addr.to_string()).unwrap().1.as_u64();
    assert_eq!(b1_requests(&after), b1_requests(&before).map(|n| n + 5));
}
