//! `weft demo` (the README's first command) runs end to end.

mod common;

#[test]
fn demo_spreads_traffic_as_configured() {
    // Ports of its own so it can run beside other tests.
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let o = std::process::Command::new(common::weft())
        .args(["demo", "--once", "-n", "1000", "--listen", &free(), "--admin", &free(), "--control-plane", &free()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let share = |name: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        line.split_whitespace().last().unwrap().trim_end_matches('%').parse().unwrap()
    };
    // 10% of requests say end-user: jason (v3); the rest split 80/20.
    assert!((share("reviews-v1") - 72.0).abs() < 6.0, "{out}");
    assert!((share("reviews-v2") - 18.0).abs() < 6.0, "{out}");
    assert!((share("reviews-v3") - 10.0).abs() < 1.0, "{out}");
    assert!(out.contains("latency through the proxy: p50"), "{out}");
    // The backends were registered with the control plane the proxy follows.
    assert!(out.contains("registered with the control plane on http://"), "{out}");
}
