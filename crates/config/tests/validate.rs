//! Config errors carry the file, the resource and the field path, word for word.

use weft_config::build_str;

const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}}
  - {address: 127.0.0.2, ports: {http: 9002}, labels: {version: v2}, weight: 3}
"#;

fn errors(text: &str) -> Vec<String> {
    let (_, _, d) = build_str("mesh.yaml", text);
    d.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn misspelled_lb_names_field_and_choices() {
    let text = format!(
        "{SE}---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBBIN\n"
    );
    assert_eq!(
        errors(&text),
        vec!["mesh.yaml: DestinationRule reviews: spec.trafficPolicy.loadBalancer.simple: unknown value \"ROUND_ROBBIN\" (expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST, PEAK_EWMA)"]
    );
}

#[test]
fn bad_regex_and_static_name_are_errors() {
    let text = format!(
        "{SE}---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{{uri: {{regex: \"/v(\"}}}}]\n    route: [{{destination: {{host: reviews}}}}]\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("mesh.yaml: VirtualService r: spec.http[0].match[0].uri.regex: invalid regex \"/v(\""), "{e:?}");

    let bad = SE.replace("127.0.0.1", "backend.local");
    assert_eq!(
        errors(&bad),
        vec!["mesh.yaml: ServiceEntry reviews: spec.endpoints[0].address: \"backend.local\" is not an IP address (resolution STATIC needs IPs; use resolution DNS for names)"]
    );
}

#[test]
fn unknown_field_is_a_warning_and_wrong_type_an_error() {
    let text = SE.replace("resolution: STATIC", "resolution: STATIC\n  resolutoin: DNS");
    let (_, _, d) = build_str("mesh.yaml", &text);
    assert!(d.errors.is_empty(), "{d}");
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].to_string(), "mesh.yaml: ServiceEntry reviews: spec.resolutoin: unknown field; ignored");

    let text = SE.replace("number: 80", "number: eighty");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("mesh.yaml: ServiceEntry reviews: spec.ports[0].number: invalid type"), "{e:?}");
}

#[test]
fn missing_kind_and_bad_yaml_name_the_document() {
    assert_eq!(errors("---\nfoo: 1\n"), vec!["mesh.yaml: document 1: kind: missing field"]);
    let e = errors("kind: [\n");
    assert!(e[0].starts_with("mesh.yaml: document 0: invalid YAML"), "{e:?}");
    let e = errors(&format!("{SE}---\napiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {{name: x}}\nspec: {{}}\n"));
    assert!(e[0].starts_with("mesh.yaml: VirtualService x: apiVersion: unknown value \"networking.istio.io/v2\""), "{e:?}");
}

#[test]
fn subsets_weights_and_ports_compile() {
    let text = format!(
        "{SE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - name: v2\n    labels: {{version: v2}}\n    trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user, maglev: {{tableSize: 65537}}}}}}}}\n"
    );
    let (_, snap, d) = build_str("mesh.yaml", &text);
    assert!(d.is_ok(), "{d}");
    let v2 = snap.clusters.iter().find(|c| c.name == "outbound|80|v2|reviews").unwrap();
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(v2.endpoints[0].port, 9002);
    assert_eq!(v2.endpoints[0].weight, 3);
    assert!(matches!(v2.lb, weft_config::LbPolicy::Hash { .. }));
    let all = snap.clusters.iter().find(|c| c.name == "outbound|80||reviews").unwrap();
    assert_eq!(all.endpoints.len(), 2);
    assert_eq!(all.lb, weft_config::LbPolicy::RoundRobin);
    assert!(snap.vhost("reviews").is_some());
    assert!(snap.vhost("ratings").is_none());
}

fn vs_route(extra: &str) -> String {
    format!(
        "{SE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews}}}}]\n{extra}"
    )
}

#[test]
fn retries_and_faults_name_the_bad_field() {
    let cases = [
        (
            "    retries: {attempts: 3, retryOn: \"5xx,connect-faliure\"}\n",
            "mesh.yaml: VirtualService r: spec.http[0].retries.retryOn: unknown retry condition \"connect-faliure\" (expected a status code or one of 5xx, gateway-error, reset, connect-failure, refused-stream, retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, unavailable)",
        ),
        ("    fault: {abort: {httpStatus: 99}}\n", "mesh.yaml: VirtualService r: spec.http[0].fault.abort.httpStatus: 99 is not a valid HTTP status (200-599)"),
        (
            "    fault: {abort: {grpcStatus: UNAVAILBLE}}\n",
            "mesh.yaml: VirtualService r: spec.http[0].fault.abort.grpcStatus: unknown gRPC status \"UNAVAILBLE\" (expected e.g. UNAVAILABLE)",
        ),
        ("    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n", "mesh.yaml: VirtualService r: spec.http[0].fault.delay.percentage.value: 150 is not a percentage (0-100)"),
        ("    fault: {delay: {percentage: {value: 50}}}\n", "mesh.yaml: VirtualService r: spec.http[0].fault.delay.fixedDelay: missing field"),
    ];
    for (extra, want) in cases {
        assert_eq!(errors(&vs_route(extra)), vec![want.to_string()], "{extra}");
    }
    assert!(errors(&vs_route("    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: \"gateway-error,503\"}\n    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}\n")).is_empty());
}

#[test]
fn a_mesh_of_thousands_of_documents_loads() {
    // Beyond the YAML parser's default budget (1,024 documents, 250,000 nodes).
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!(
            "---\n{{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"ServiceEntry\",\"metadata\":{{\"name\":\"s{i}\"}},\"spec\":{{\"hosts\":[\"s{i}.mesh\"],\"resolution\":\"STATIC\",\"ports\":[{{\"number\":80,\"name\":\"http\",\"protocol\":\"HTTP\"}}],\"endpoints\":[{}]}}}}\n",
            (0..10).map(|k| format!("{{\"address\":\"10.0.{}.{k}\",\"ports\":{{\"http\":8080}},\"labels\":{{\"v\":\"v{k}\"}}}}", i % 250)).collect::<Vec<_>>().join(",")
        ));
    }
    let (resources, snap, diags) = weft_config::build_str("big.yaml", &text);
    assert!(diags.is_ok(), "{diags}");
    assert_eq!(resources.len(), 3000);
    assert_eq!(snap.clusters.iter().map(|c| c.endpoints.len()).sum::<usize>(), 30_000);
}

/// Istio's validation: a fault injects an abort, a delay or both (`fault: {}` is refused).
#[test]
fn an_empty_fault_is_an_error_and_either_half_is_fine() {
    let vs = |fault: &str| {
        format!("{SE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - fault: {fault}\n    route: [{{destination: {{host: reviews}}}}]\n")
    };
    assert_eq!(
        errors(&vs("{}")),
        vec!["mesh.yaml: VirtualService reviews: spec.http[0].fault: a fault injects an abort, a delay or both: neither is set"]
    );
    assert!(errors(&vs("{abort: {httpStatus: 503, percentage: {value: 10}}}")).is_empty());
    assert!(errors(&vs("{delay: {fixedDelay: 1s, percentage: {value: 10}}}")).is_empty());
}

/// Istio's validation: a subset's name is a DNS-1123 label.
#[test]
fn a_subset_name_is_a_dns_label() {
    let dr = |name: &str| {
        format!("{SE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  subsets: [{{name: \"{name}\", labels: {{version: v1}}}}]\n")
    };
    assert!(errors(&dr("v1")).is_empty());
    assert!(errors(&dr("canary-2")).is_empty());
    for bad in ["V1", "v_1", "-v1", "a|b", "v1.2"] {
        let e = errors(&dr(bad));
        assert!(e.len() == 1 && e[0].contains("spec.subsets[0].name") && e[0].contains("DNS-1123"), "{bad}: {e:?}");
    }
}

/// Istio's ServiceEntry rules: port numbers and names are unique; DNS_ROUND_ROBIN takes
/// at most one endpoint.
#[test]
fn service_entry_ports_are_unique_and_dns_round_robin_takes_one_endpoint() {
    let se = |ports: &str, resolution: &str, endpoints: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext}}\nspec:\n  hosts: [ext.example.com]\n  resolution: {resolution}\n  ports: {ports}\n  endpoints: {endpoints}\n")
    };
    let two = "[{number: 80, name: http, protocol: HTTP}, {number: 8080, name: alt, protocol: HTTP}]";
    assert!(errors(&se(two, "DNS", "[]")).is_empty());
    let same_number = "[{number: 80, name: http, protocol: HTTP}, {number: 80, name: alt, protocol: HTTP}]";
    assert_eq!(
        errors(&se(same_number, "DNS", "[]")),
        vec!["mesh.yaml: ServiceEntry ext: spec.ports[1].number: port number 80 is not unique"]
    );
    let same_name = "[{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]";
    assert_eq!(
        errors(&se(same_name, "DNS", "[]")),
        vec!["mesh.yaml: ServiceEntry ext: spec.ports[1].name: port name \"http\" is not unique"]
    );
    let one = "[{address: a.example.com}]";
    assert!(errors(&se(two, "DNS_ROUND_ROBIN", one)).is_empty());
    let both = "[{address: a.example.com}, {address: b.example.com}]";
    assert_eq!(
        errors(&se(two, "DNS_ROUND_ROBIN", both)),
        vec!["mesh.yaml: ServiceEntry ext: spec.endpoints: resolution DNS_ROUND_ROBIN takes at most one endpoint"]
    );
}
