//! VirtualService `tcp[]` checked as Istio checks it, each problem with its field path;
//! two services on one TCP port without VIPs are reported.

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: echo}\nspec:\n  hosts: [echo.example]\n  resolution: STATIC\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  endpoints: [{address: 10.0.0.1}]\n";

fn vs(tcp: &str) -> String {
    format!("{SE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n  hosts: [echo.example]\n  tcp:\n{tcp}")
}

#[test]
fn hostile_tcp_routes_are_refused_by_field_path() {
    for (tcp, want) in [
        ("  - match: [{port: 70000}]\n    route: [{destination: {host: echo.example}}]\n", "spec.tcp[0].match[0].port"),
        (
            "  - match: [{destinationSubnets: [\"10.0.0.0/40\"]}]\n    route: [{destination: {host: echo.example}}]\n",
            "spec.tcp[0].match[0].destinationSubnets[0]",
        ),
        (
            "  - match: [{sourceLabels: {\"bad key!\": x}}]\n    route: [{destination: {host: echo.example}}]\n",
            "spec.tcp[0].match[0].sourceLabels",
        ),
        ("  - match: [{port: 9000}]\n", "spec.tcp[0].route"),
        (
            "  - route: [{destination: {host: echo.example}, weight: 0}, {destination: {host: echo.example}, weight: 0}]\n",
            "spec.tcp[0].route",
        ),
    ] {
        let (_, _, d) = weft_config::build_str("t.yaml", &vs(tcp));
        assert!(!d.is_ok() && d.to_string().contains(want), "{tcp}: {d}");
    }
    let (_, snap, d) = weft_config::build_str(
        "t.yaml",
        &vs("  - match: [{port: 9000, destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: echo.example}}]\n"),
    );
    assert!(d.is_ok(), "{d}");
    assert_eq!(snap.tcp_listeners.len(), 1);
    assert_eq!(snap.tcp_listeners[0].routes.len(), 2, "the route, then the service's own");
}

#[test]
fn two_services_on_one_port_without_vips_are_reported() {
    let other = SE.replace("name: echo}", "name: other}").replace("echo.example", "other.example");
    let (_, snap, d) = weft_config::build_str("t.yaml", &format!("{SE}---\n{other}"));
    assert!(d.is_ok());
    assert!(
        d.warnings.iter().any(|w| w.to_string().contains("TCP port 9000 on the proxy's listen address is already echo.example's")),
        "{:?}",
        d.warnings
    );
    assert_eq!(snap.tcp_listeners.len(), 1);
    // With a VIP each, both have a listener.
    let vip = |s: &str, ip: &str| s.replace("  resolution: STATIC", &format!("  addresses: [{ip}]\n  resolution: STATIC"));
    let (_, snap, d) = weft_config::build_str("t.yaml", &format!("{}---\n{}", vip(SE, "127.1.0.1"), vip(&other, "127.1.0.2")));
    assert!(d.is_ok() && d.warnings.is_empty(), "{d} {:?}", d.warnings);
    assert_eq!(snap.tcp_listeners.len(), 2);
}

#[test]
fn tcp_listeners_are_bounded() {
    // (And a small config costs little: one warning, not one per port.)
    let ports: String = (0..1100).map(|i| format!("{{number: {}, name: t{i}, protocol: TCP}}, ", 20000 + i)).collect();
    let se = SE.replace("[{number: 9000, name: tcp, protocol: TCP}]", &format!("[{}]", ports.trim_end_matches(", ")));
    let (_, snap, d) = weft_config::build_str("t.yaml", &se);
    assert!(d.is_ok(), "{d}");
    assert_eq!(snap.tcp_listeners.len(), weft_config::tcp_route::MAX_LISTENERS);
    assert_eq!(d.warnings.iter().filter(|w| w.to_string().contains("TCP listeners: this port and later ones get none")).count(), 1);
}

#[test]
fn a_proxy_listens_only_for_its_own_namespace_and_unprivileged_ports() {
    let other = SE
        .replace("metadata: {name: echo}", "metadata: {name: echo, namespace: evil}")
        .replace("echo.example", "squat.example")
        .replace("9000", "18500");
    let low = SE
        .replace("metadata: {name: echo}", "metadata: {name: low}")
        .replace("echo.example", "dns.example")
        .replace("number: 9000", "number: 53");
    let yaml = format!("{SE}---\n{other}---\n{low}");
    let (_, snap, d) = weft_config::build_str_in("t.yaml", &yaml, &weft_config::View::proxy("default").with_labels(Default::default()));
    assert!(d.is_ok(), "{d}");
    let ports: Vec<u16> = snap.tcp_listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [9000], "not evil's 18500, not the privileged 53");
    assert!(d.warnings.iter().any(|w| w.to_string().contains("TCP port 53 is privileged")));
    let (_, evil, _) = weft_config::build_str_in("t.yaml", &yaml, &weft_config::View::proxy("evil").with_labels(Default::default()));
    assert_eq!(evil.tcp_listeners.iter().map(|l| l.port).collect::<Vec<_>>(), [18500], "evil's own, for evil's proxies");
}
