//! DestinationRule `tls`: the most specific setting wins (subset port level > subset >
//! port level > top level), and a recompile with unchanged files compares equal (so
//! a reload keeps the endpoints' warm TLS connections).

use weft_config::{build_str, Snapshot, TlsMode};

const SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.example]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: h2, protocol: HTTP2}]
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
";

const DR: &str = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.example
  trafficPolicy:
    tls: {mode: SIMPLE, sni: top.example}
    portLevelSettings:
    - port: {number: 80}
      tls: {mode: SIMPLE, sni: port.example}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, sni: subset.example}
  - name: plain
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: DISABLE}
";

fn snap(text: &str) -> Snapshot {
    let (_, s, d) = build_str("mesh.yaml", text);
    assert!(d.is_ok(), "{d}");
    s
}

fn sni(s: &Snapshot, cluster: &str) -> Option<String> {
    let c = s.clusters.iter().find(|c| c.name == cluster).unwrap_or_else(|| panic!("no cluster {cluster}"));
    c.pool.tls.as_ref().map(|t| t.sni.clone().unwrap_or_default())
}

#[test]
fn the_most_specific_tls_wins() {
    let s = snap(&format!("{SE}{DR}"));
    assert_eq!(sni(&s, "outbound|80||reviews.example").as_deref(), Some("port.example"));
    assert_eq!(sni(&s, "outbound|81||reviews.example").as_deref(), Some("top.example"));
    assert_eq!(sni(&s, "outbound|80|v1|reviews.example").as_deref(), Some("port.example"), "a subset without tls inherits");
    assert_eq!(sni(&s, "outbound|80|v2|reviews.example").as_deref(), Some("subset.example"));
    assert_eq!(sni(&s, "outbound|80|plain|reviews.example"), None, "a subset's DISABLE turns it off");
    let v2 = s.clusters.iter().find(|c| c.name == "outbound|80|v2|reviews.example").unwrap();
    let t = v2.pool.tls.as_ref().unwrap();
    assert_eq!(t.mode, TlsMode::IstioMutual);
    assert!(t.client_config.is_none(), "ISTIO_MUTUAL waits for the mesh identity");
    let top = s.clusters.iter().find(|c| c.name == "outbound|81||reviews.example").unwrap().pool.tls.clone().unwrap();
    assert_eq!(top.client_config.unwrap().alpn_protocols, vec![b"h2".to_vec()], "an HTTP2 port offers h2");
    let port = s.clusters.iter().find(|c| c.name == "outbound|80||reviews.example").unwrap().pool.tls.clone().unwrap();
    assert_eq!(port.client_config.unwrap().alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert_eq!(port.host_name.as_deref(), Some("reviews.example"));
}

#[test]
fn recompiling_unchanged_tls_is_equal_and_a_changed_file_is_not() {
    let dir = std::env::temp_dir().join(format!("weft-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let gen = |subj: &str| {
        let o = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .args(["-subj", subj, "-days", "1"])
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    gen("/CN=one");
    let text = format!("{SE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: reviews.example\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {}}}\n", ca.display());
    let tls = |s: &Snapshot| s.clusters[0].pool.tls.clone().unwrap();
    let (a, b) = (snap(&text), snap(&text));
    assert!(tls(&a) == tls(&b));
    assert!(a.clusters[0].pool == b.clusters[0].pool);
    gen("/CN=two");
    let c = snap(&text);
    assert!(tls(&a) != tls(&c), "a new CA file is a new TLS setting");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_routes_are_checked_with_their_paths() {
    let vs = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: t}
spec:
  hosts: [a.example]
  tls:
  - match: [{sniHosts: []}]
    route: [{destination: {host: reviews.example}}]
  - match: [{sniHosts: [\"bad name\"], port: 70000, destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: reviews.example, port: {number: 80}}}]
  - route: [{destination: {host: reviews.example}}]
  - match: [{sniHosts: [\"*.a.example\", a.example]}]
    route: []
";
    let (_, _, d) = build_str("mesh.yaml", &format!("{SE}{vs}"));
    let errs: Vec<String> = d.errors.iter().map(|e| e.to_string()).collect();
    let p = "mesh.yaml: VirtualService t: spec.tls";
    assert_eq!(
        errs,
        vec![
            format!("{p}[0].match[0].sniHosts: at least one host is required"),
            format!("{p}[1].match[0].sniHosts[0]: \"bad name\" is not a DNS name or *.suffix"),
            format!("{p}[1].match[0].port: port 70000 out of range 1-65535"),
            format!("{p}[1].match[0].destinationSubnets: not supported on tls routes (sniHosts and port are)"),
            format!("{p}[2].match: at least one match with sniHosts is required"),
            format!("{p}[3].route: at least one destination is required"),
        ]
    );
    let ok = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: t}
spec:
  hosts: [a.example]
  tls:
  - match: [{sniHosts: [\"*.a.example\"], port: 443}]
    route: [{destination: {host: reviews.example, port: {number: 80}}}]
";
    let s = snap(&format!("{SE}{ok}"));
    assert_eq!(s.tls_routes.len(), 1);
    assert!(s.tls_route("x.a.example", 443).is_some());
    assert!(s.tls_route("x.a.example", 444).is_none(), "another listener port");
    assert!(s.tls_route("a.example", 443).is_none(), "*.a.example is below a.example only");
}
