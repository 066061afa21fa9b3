//! The namespace a service's metrics name: the one in a Kubernetes service name, else
//! the namespace of the ServiceEntry that declares the host — never a piece of an
//! external host name.

fn se(name: &str, ns: Option<&str>, host: &str) -> String {
    let ns = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
    format!("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}{ns}}}\nspec:\n  hosts: [{host}]\n  resolution: DNS\n  ports: [{{number: 443, name: https, protocol: TLS}}]\n")
}

#[test]
fn a_service_namespace_is_its_kubernetes_namespace_or_its_service_entrys() {
    let yaml = [
        se("google", Some("egress"), "www.googleapis.com"),
        se("reviews", Some("other"), "reviews.bookinfo.svc.cluster.local"),
        se("plain", None, "api.example.com"),
    ]
    .concat();
    let (_, snap, diags) = weft_config::build_str("names.yaml", &yaml);
    assert!(diags.is_ok(), "{diags:?}");
    let ns = |service: &str| snap.clusters.iter().find(|c| c.service == service).map(|c| c.namespace.clone());
    assert_eq!(ns("www.googleapis.com").as_deref(), Some("egress"), "not \"googleapis\"");
    assert_eq!(ns("reviews.bookinfo.svc.cluster.local").as_deref(), Some("bookinfo"));
    assert_eq!(ns("api.example.com").as_deref(), Some("default"));
}

// ---------------------------------------------------------------- short names, alternate names

/// Istio's bookinfo files, unchanged (tests/istio/SOURCES.md).
const DR_ALL: &str = include_str!("istio/destination-rule-all.yaml");
const VS_ALL_V1: &str = include_str!("istio/virtual-service-all-v1.yaml");

/// bookinfo's services as a Kubernetes cluster has them: FQDN ServiceEntries in
/// namespace `default`, port 9080, endpoints labelled by version.
fn bookinfo_services() -> String {
    ["productpage", "reviews", "ratings", "details"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {s}, namespace: default}}\nspec:\n  hosts: [{s}.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints:\n  - {{address: 10.0.{i}.1, labels: {{version: v1}}}}\n  - {{address: 10.0.{i}.2, labels: {{version: v2}}}}\n  - {{address: 10.0.{i}.3, labels: {{version: v3}}}}\n"
            )
        })
        .collect()
}

fn bookinfo(view: &weft_config::View) -> weft_config::Snapshot {
    let yaml = format!("{}\n---\n{DR_ALL}\n---\n{VS_ALL_V1}", bookinfo_services());
    let (_, snap, diags) = weft_config::build_str_in("bookinfo.yaml", &yaml, view);
    assert!(diags.is_ok(), "{diags}");
    assert!(diags.warnings.is_empty(), "short hosts resolve to the services: {:?}", diags.warnings);
    snap
}

/// The cluster a host's first route sends to.
fn routed_to(snap: &weft_config::Snapshot, host: &str) -> Option<String> {
    let vh = snap.vhost(host)?;
    let weft_config::Action::Forward(w) = &vh.routes[0].action else { return None };
    Some(snap.clusters[w.targets[0].cluster.default].name.clone())
}

#[test]
fn bookinfo_short_hosts_resolve_in_the_namespace_of_their_resources() {
    let snap = bookinfo(&weft_config::View::proxy("default"));
    for host in ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"] {
        assert_eq!(
            routed_to(&snap, host).as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local"),
            "{host}: virtual-service-all-v1 sends reviews to v1"
        );
    }
    // The subset is the DestinationRule's (short `reviews`): v1's endpoint only.
    let v1 = snap.clusters.iter().find(|c| c.name == "outbound|9080|v1|reviews.default.svc.cluster.local").unwrap();
    assert_eq!(v1.endpoints.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["10.0.1.1"]);
    assert_eq!(routed_to(&snap, "ratings").as_deref(), Some("outbound|9080|v1|ratings.default.svc.cluster.local"));
}

#[test]
fn a_client_in_another_namespace_needs_the_namespace_in_the_name() {
    let snap = bookinfo(&weft_config::View::proxy("shop"));
    assert_eq!(routed_to(&snap, "reviews"), None, "`reviews` from namespace shop is reviews.shop");
    assert_eq!(routed_to(&snap, "reviews.default").as_deref(), Some("outbound|9080|v1|reviews.default.svc.cluster.local"));
    assert_eq!(routed_to(&snap, "reviews.default.svc").as_deref(), Some("outbound|9080|v1|reviews.default.svc.cluster.local"));
}

#[test]
fn resources_in_another_namespace_resolve_short_hosts_there() {
    // The same files applied in namespace `bookinfo`: their `reviews` is reviews.bookinfo.
    let in_ns = |text: &str| text.replace("metadata:\n  name:", "metadata:\n  namespace: bookinfo\n  name:");
    let yaml = format!("{}\n---\n{}\n---\n{}", bookinfo_services().replace("default", "bookinfo"), in_ns(DR_ALL), in_ns(VS_ALL_V1));
    let (_, snap, diags) = weft_config::build_str_in("b.yaml", &yaml, &weft_config::View::proxy("default"));
    assert!(diags.is_ok() && diags.warnings.is_empty(), "{diags} {:?}", diags.warnings);
    assert_eq!(routed_to(&snap, "reviews.bookinfo").as_deref(), Some("outbound|9080|v1|reviews.bookinfo.svc.cluster.local"));
    assert_eq!(routed_to(&snap, "reviews"), None);
}

#[test]
fn a_service_entry_declaring_a_short_host_literally_keeps_it() {
    // weft's one departure (a config written for weft before names resolved): the short
    // host of a ServiceEntry is literal, and a VirtualService's `echo` means it.
    let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: echo}\nspec:\n  hosts: [echo]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [echo]\n  http: [{route: [{destination: {host: echo}}]}]\n";
    let (_, snap, diags) = weft_config::build_str("e.yaml", yaml);
    assert!(diags.is_ok() && diags.warnings.is_empty(), "{diags} {:?}", diags.warnings);
    assert_eq!(routed_to(&snap, "echo").as_deref(), Some("outbound|80||echo"));
    assert_eq!(snap.vhost("echo").unwrap().name, "VirtualService/echo");
}

// ---------------------------------------------------------------- exportTo and precedence

fn doc(kind: &str, name: &str, ns: &str, spec: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
}

fn se_in(ns: &str, host: &str, address: &str, export: &str) -> String {
    doc(
        "ServiceEntry",
        &format!("se-{ns}"),
        ns,
        &format!("  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: {address}}}]\n{export}"),
    )
}

#[test]
fn export_to_decides_which_namespaces_see_a_service() {
    let yaml = [
        se_in("team-a", "private.example", "10.0.0.1", "  exportTo: [\".\"]\n"),
        se_in("team-b", "shared.example", "10.0.0.2", "  exportTo: [team-c]\n"),
        se_in("team-d", "hidden.example", "10.0.0.4", "  exportTo: [\"~\"]\n"),
        se_in("team-e", "public.example", "10.0.0.5", "  exportTo: [\"*\"]\n"),
    ]
    .concat();
    let sees = |ns: &str| {
        let (_, snap, diags) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy(ns));
        assert!(diags.is_ok(), "{diags}");
        let mut hosts: Vec<String> = snap.exact_hosts.keys().cloned().collect();
        hosts.sort();
        hosts
    };
    assert_eq!(sees("team-a"), ["private.example", "public.example"]);
    assert_eq!(sees("team-c"), ["public.example", "shared.example"]);
    assert_eq!(sees("team-d"), ["public.example"], "~ hides it from its own namespace too");
    // Validation sees everything, whatever its exportTo.
    let (_, all, diags) = weft_config::build_str("x.yaml", &yaml);
    assert!(diags.is_ok());
    assert_eq!(all.exact_hosts.len(), 4);
}

#[test]
fn export_to_on_virtual_services_and_destination_rules() {
    let yaml = [
        se_in("web", "web.example", "10.0.0.1", ""),
        doc(
            "VirtualService",
            "vs",
            "web",
            "  hosts: [web.example]\n  exportTo: [\".\"]\n  http: [{route: [{destination: {host: web.example}}], timeout: 3s}]\n",
        ),
        doc(
            "DestinationRule",
            "dr",
            "web",
            "  host: web.example\n  exportTo: [\".\"]\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
        ),
    ]
    .concat();
    let at = |ns: &str| weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy(ns)).1;
    let own = at("web");
    assert_eq!(own.vhost("web.example").unwrap().name, "VirtualService/vs");
    let other = at("shop");
    assert_eq!(other.vhost("web.example").unwrap().name, "ServiceEntry/se-web", "the VirtualService is web's own");
    let lb = |s: &weft_config::Snapshot| format!("{:?}", s.clusters.iter().find(|c| c.name == "outbound|80||web.example").unwrap().lb);
    assert_ne!(lb(&own), lb(&other), "the DestinationRule is web's own");
}

#[test]
fn destination_rule_precedence_client_then_service_then_root_namespace() {
    let dr = |name: &str, ns: &str, lb: &str| {
        doc(
            "DestinationRule",
            name,
            ns,
            &format!("  host: api.shop.svc.cluster.local\n  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"),
        )
    };
    let yaml = [
        doc("ServiceEntry", "api", "shop", "  hosts: [api.shop.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n"),
        dr("root", "istio-system", "RANDOM"),
        dr("service", "shop", "LEAST_REQUEST"),
        dr("client", "web", "ROUND_ROBIN"),
    ]
    .concat();
    let lb_seen_from = |ns: &str| {
        let (_, snap, diags) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy(ns));
        assert!(diags.is_ok() && diags.warnings.is_empty(), "{diags} {:?}", diags.warnings);
        format!("{:?}", snap.clusters.iter().find(|c| c.name == "outbound|80||api.shop.svc.cluster.local").unwrap().lb)
    };
    let (web, shop, elsewhere) = (lb_seen_from("web"), lb_seen_from("shop"), lb_seen_from("other"));
    assert_ne!(web, shop, "web's own rule, not the service's");
    assert_eq!(elsewhere, shop, "no rule of its own: the service namespace's");
    let yaml_no_service_rule = yaml
        .replace("  host: api.shop.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}", "  host: other.example");
    let (_, snap, _) = weft_config::build_str_in("x.yaml", &yaml_no_service_rule, &weft_config::View::proxy("other"));
    let root = format!("{:?}", snap.clusters.iter().find(|c| c.name == "outbound|80||api.shop.svc.cluster.local").unwrap().lb);
    assert!(root != shop && root != web, "the root namespace's rule: {root}");
}

#[test]
fn hostile_export_to_values_are_refused_by_field_path() {
    let cases = [
        ("[\"~\", \".\"]", "spec.exportTo: \"~\""),
        ("[\"*\", team]", "spec.exportTo: \"*\""),
        ("[team, team]", "spec.exportTo[1]: duplicate entry"),
        ("[\"Team_A\"]", "spec.exportTo[0]: not"),
        ("[\"a\\nb\"]", "spec.exportTo[0]: not"),
        (&format!("[{}]", "x".repeat(300)), "spec.exportTo[0]: not"),
    ];
    for (list, want) in cases {
        let yaml = se_in("web", "web.example", "10.0.0.1", &format!("  exportTo: {list}\n"));
        let (_, _, diags) = weft_config::build_str("x.yaml", &yaml);
        let errs: Vec<String> = diags.errors.iter().map(|e| e.to_string()).collect();
        assert!(errs.iter().any(|e| e.contains(want)), "{list}: {errs:?}");
    }
}

// ---------------------------------------------------------------- what another namespace cannot do

fn routed(snap: &weft_config::Snapshot, host: &str) -> (String, String) {
    let vh = snap.vhost(host).unwrap_or_else(|| panic!("{host} not served"));
    let weft_config::Action::Forward(w) = &vh.routes.last().unwrap().action else { panic!("forward") };
    (vh.name.clone(), snap.clusters[w.targets[0].cluster.default].name.clone())
}

fn default_reviews() -> String {
    [
        doc("ServiceEntry", "reviews", "default", "  hosts: [reviews.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n"),
        doc("VirtualService", "reviews", "default", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}], timeout: 3s}]\n"),
    ]
    .concat()
}

#[test]
fn another_namespaces_literal_short_host_captures_nothing_of_this_namespace() {
    let evil = doc(
        "ServiceEntry",
        "squat",
        "evil",
        "  hosts: [reviews]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.6.6.6}]\n",
    );
    let yaml = format!("{}{evil}", default_reviews());
    let (_, snap, d) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy("default").with_labels(Default::default()));
    assert!(d.is_ok(), "{d}");
    for host in ["reviews", "reviews.default", "reviews.default.svc.cluster.local"] {
        assert_eq!(
            routed(&snap, host),
            ("VirtualService/reviews".to_owned(), "outbound|80||reviews.default.svc.cluster.local".to_owned()),
            "{host}"
        );
    }
}

#[test]
fn a_virtual_service_from_another_namespace_does_not_take_over() {
    // Applied later, from namespace zzz, for default's service: the owner's stays.
    let evil = doc(
        "VirtualService",
        "takeover",
        "zzz",
        "  hosts: [reviews.default.svc.cluster.local]\n  http: [{route: [{destination: {host: evil.example}}]}]\n",
    );
    let yaml = format!("{}{evil}", default_reviews());
    let (_, snap, d) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy("default").with_labels(Default::default()));
    assert!(d.is_ok(), "{d}");
    assert_eq!(routed(&snap, "reviews.default.svc.cluster.local").0, "VirtualService/reviews");
    assert!(
        d.warnings.iter().any(|w| w.to_string().contains("already served by VirtualService reviews, which is kept")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn a_destination_rule_from_an_unrelated_namespace_does_not_apply() {
    let evil =
        doc("DestinationRule", "break", "evil", "  host: reviews.default.svc.cluster.local\n  trafficPolicy: {tls: {mode: SIMPLE}}\n");
    let yaml = format!("{}{evil}", default_reviews());
    let (_, snap, d) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy("default").with_labels(Default::default()));
    assert!(d.is_ok(), "{d}");
    let c = snap.clusters.iter().find(|c| c.name == "outbound|80||reviews.default.svc.cluster.local").unwrap();
    assert!(c.pool.tls.is_none(), "evil's tls setting is not default's");
}

#[test]
fn source_namespace_matches_the_proxys_namespace() {
    let vs = doc(
        "VirtualService",
        "reviews",
        "default",
        "  hosts: [reviews]\n  http:\n  - match: [{sourceNamespace: trusted}]\n    route: [{destination: {host: reviews}}]\n    timeout: 1s\n  - route: [{destination: {host: reviews}}]\n",
    );
    let yaml = format!("{}{vs}", default_reviews().split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService").next().unwrap());
    for (ns, routes) in [("trusted", 2), ("other", 1)] {
        let (_, snap, d) = weft_config::build_str_in("x.yaml", &yaml, &weft_config::View::proxy(ns).with_labels(Default::default()));
        assert!(d.is_ok(), "{d}");
        assert_eq!(snap.vhost("reviews.default").unwrap().routes.len(), routes, "{ns}");
    }
}

// ---------------------------------------------------------------- mesh DNS's names

#[test]
fn mesh_dns_names_follow_the_proxys_namespace_and_export_to() {
    let hidden = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: hidden, namespace: other}\nspec:\n  hosts: [hidden.other.svc.cluster.local]\n  exportTo: [.]\n  resolution: STATIC\n  addresses: [10.1.0.0/16, 10.2.0.7/32]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.9.1}]\n";
    let yaml = format!("{}{hidden}", bookinfo_services());
    let names = |ns: &str| {
        let (_, snap, diags) = weft_config::build_str_in("dns.yaml", &yaml, &weft_config::View::proxy(ns));
        assert!(diags.is_ok(), "{diags}");
        snap.services
    };
    let from_default = names("default");
    assert_eq!(from_default.len(), 4, "the hidden entry is exported to its own namespace only");
    let reviews = from_default.iter().find(|s| s.host == "reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.names, ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"]);
    assert!(reviews.addresses.is_empty());
    let from_shop = names("shop");
    let reviews = from_shop.iter().find(|s| s.host == "reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.names, ["reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"], "no short name from shop");
    let from_other = names("other");
    let hidden = from_other.iter().find(|s| s.host == "hidden.other.svc.cluster.local").unwrap();
    assert_eq!(hidden.addresses, ["10.2.0.7".parse::<std::net::IpAddr>().unwrap()], "a /16 is no one address; a /32 is");
    // The same services give every proxy the same VIPs, whatever its namespace.
    let (a, b) = (weft_config::dns::VipTable::build(&from_default), weft_config::dns::VipTable::build(&from_shop));
    let host = "ratings.default.svc.cluster.local";
    assert_eq!(a.addresses_for(host), b.addresses_for(host));
    assert_eq!(a.lookup("ratings.default").unwrap().host, host);
    assert_eq!(a.host_for(a.addresses_for(host).unwrap()[0]), Some(host));
}
