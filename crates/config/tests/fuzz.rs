//! Property-based fuzzing of the YAML/Istio loader and compiler (`build_str`): valid
//! resources of every kind with values swapped for hostile ones, lines dropped,
//! repeated or re-indented, bytes changed, and random text. Whatever comes in, the
//! answer is a snapshot or diagnostics that name the file — never a panic, a hang or
//! an unbounded message. A short run is part of `cargo test`; `scripts/fuzz.sh` runs
//! the same properties with `PROPTEST_CASES` in the millions.

use proptest::prelude::*;
use weft_config::build_str;

/// The case count: `PROPTEST_CASES` when set (the long run), else `short`.
fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One valid document of each kind the loader knows (they compile together).
const SEEDS: &[&str] = &[
    r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}, locality: eu/west/a}
  - {address: 127.0.0.2, ports: {http: 9002}, labels: {version: v2}, weight: 3}
"#,
    r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 1s}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 5}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}
"#,
    r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
      headers: {x-user: {exact: alice}}
    - uri: {regex: "/v[0-9]+/.*"}
    rewrite: {uri: /}
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset"}
    fault: {delay: {percentage: {value: 10}, fixedDelay: 5ms}}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
  - route: [{destination: {host: reviews, port: {number: 80}}}]
"#,
    r#"apiVersion: policy.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: reviews-api}
spec:
  host: reviews
  match: [{uri: {prefix: /api}}]
  tokenBucket: {maxTokens: 50, tokensPerFill: 5, fillInterval: 10ms}
"#,
    r#"apiVersion: policy.weft.dev/v1alpha1
kind: HealthCheck
metadata: {name: reviews}
spec:
  host: reviews
  http: {path: /healthz, expectedStatuses: [200]}
  interval: 5s
  timeout: 1s
  unhealthyThreshold: 3
  healthyThreshold: 2
"#,
    r#"apiVersion: policy.weft.dev/v1alpha1
kind: Hedging
metadata: {name: reviews}
spec: {host: reviews, delay: 30ms, maxAttempts: 2}
"#,
    r#"apiVersion: policy.weft.dev/v1alpha1
kind: Compression
metadata: {name: reviews}
spec:
  host: reviews
  match: [{uri: {prefix: /api}}]
  encodings: [zstd, br, gzip]
  minContentLength: 30
  contentTypes: [application/json]
  level: {gzip: 6, br: 3, zstd: 3}
"#,
    r#"apiVersion: policy.weft.dev/v1alpha1
kind: ResponseCache
metadata: {name: reviews}
spec:
  host: reviews
  match: [{uri: {prefix: /items}}]
  maxBytes: 67108864
  maxEntryBytes: 1048576
"#,
    r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"], ipBlocks: [10.0.0.0/8], notRequestPrincipals: ["*"]}}]
    to: [{operation: {methods: [GET], paths: ["/api/*", "/items/{*}/reviews", "/v2/{**}"], ports: ["9080"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admins]}, {key: "request.headers[x-env]", notValues: ["prod*"]}, {key: source.ip, values: [10.1.0.0/16]}]
"#,
    r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: authz}
  rules: [{to: [{operation: {paths: [/headers]}}]}]
---
apiVersion: policy.weft.dev/v1alpha1
kind: ExtensionProvider
metadata: {name: authz}
spec:
  envoyExtAuthzHttp: {service: ext-authz.default.svc.cluster.local, port: "8000", includeRequestHeadersInCheck: [x-ext-authz], timeout: 1s}
"#,
    r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://example.com/jwks.json
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
"#,
    r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["./httpbin.example.com", "*/*.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: MUTUAL, credentialName: httpbin-credential, minProtocolVersion: TLSV1_2}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: [nginx.example.com]
    tls: {mode: PASSTHROUGH}
"#,
];

/// Values that broke or could break a loader: limits of every integer type, floats
/// YAML spells oddly, durations that overflow, regexes that do not compile, YAML
/// anchors, aliases and tags, empty and null values, names from the seeds.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    "-.inf",
    ".nan",
    "1.5",
    "0x1F",
    "0o17",
    "~",
    "null",
    "true",
    "''",
    "\"\"",
    "[]",
    "{}",
    "[{}]",
    "0s",
    "-5s",
    "1ns",
    "584542y",
    "18446744073709551615s",
    "99999999999999999999ms",
    "1.5.5s",
    "\"/v(\"",
    "\"[a-\"",
    "\"\\\\\"",
    "\"\\u0000\"",
    "\"a\\nb\"",
    "'*'",
    "/",
    "\"\"",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "DNS",
    "STATIC",
    "HTTP",
    "GRPC",
    "TCP",
    "HTTP2",
    "reviews",
    "v1",
    "v2",
    "&a x",
    "*a",
    "!!binary aGk=",
    "!!str 1",
    "<<: {a: 1}",
    "? [a]",
    "|\n  x",
    ">-",
    "%TAG",
    "\"é\"",
    "\"\u{202e}\"",
    "..",
    "../../x",
    "\"{\"",
    "a:b",
    "- x",
    "---",
    "...",
];

fn words(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() || b"./_-".contains(&b[i]) {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b"./_-".contains(&b[i])) {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Edit {
    /// The n-th word (a key or a value) becomes a hostile value.
    Word(prop::sample::Index, prop::sample::Index),
    DropLine(prop::sample::Index),
    RepeatLine(prop::sample::Index),
    Indent(prop::sample::Index, u8),
    Byte(prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Edit::Word(a, b)),
        1 => any::<prop::sample::Index>().prop_map(Edit::DropLine),
        1 => any::<prop::sample::Index>().prop_map(Edit::RepeatLine),
        1 => (any::<prop::sample::Index>(), 0u8..5).prop_map(|(a, n)| Edit::Indent(a, n)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(a, b)| Edit::Byte(a, b)),
    ]
}

fn apply(text: &str, e: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match e {
        Edit::Word(at, with) => {
            let w = words(text);
            if w.is_empty() {
                return text.to_owned();
            }
            let (s, t) = w[at.index(w.len())];
            return format!("{}{}{}", &text[..s], with.get(HOSTILE), &text[t..]);
        }
        Edit::DropLine(at) if !lines.is_empty() => {
            lines.remove(at.index(lines.len()));
        }
        Edit::RepeatLine(at) if !lines.is_empty() => {
            let i = at.index(lines.len());
            lines.insert(i, lines[i].clone());
        }
        Edit::Indent(at, n) if !lines.is_empty() => {
            let i = at.index(lines.len());
            lines[i] = format!("{}{}", " ".repeat(*n as usize), lines[i].trim_start());
        }
        Edit::Byte(at, b) => {
            let mut bytes = text.as_bytes().to_vec();
            let i = at.index(bytes.len() + 1);
            bytes.insert(i, *b);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => {}
    }
    lines.join("\n") + "\n"
}

/// Some seeds in some order, joined as one stream, then edited.
fn mesh_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(any::<prop::sample::Index>(), 1..5), prop::collection::vec(edit(), 0..6)).prop_map(|(docs, edits)| {
        let mut text = docs.iter().map(|d| *d.get(SEEDS)).collect::<Vec<_>>().join("---\n");
        for e in &edits {
            text = apply(&text, e);
        }
        text
    })
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let (_, _, d) = build_str("mesh.yaml", text);
    for m in d.errors.iter().chain(d.warnings.iter()) {
        prop_assert_eq!(&m.source.file, "mesh.yaml");
        let s = m.to_string();
        prop_assert!(s.starts_with("mesh.yaml"), "{}", s);
        // A message quotes at most a bounded part of its input.
        prop_assert!(s.len() <= 2 * text.len() + 4096, "a {}-byte message for a {}-byte file", s.len(), text.len());
    }
    prop_assert!(d.errors.len() + d.warnings.len() <= 4 * text.len() + 16);
    Ok(())
}

#[test]
fn seeds_compile_clean() {
    let all = SEEDS.join("---\n");
    let (resources, _, d) = build_str("mesh.yaml", &all);
    assert!(d.is_ok(), "{d}");
    // (One seed holds two documents: a CUSTOM policy and its provider.)
    assert_eq!(resources.len(), SEEDS.iter().map(|s| s.matches("\nkind: ").count() + usize::from(s.starts_with("kind: "))).sum::<usize>());
}

/// Regressions: inputs the fuzz targets found panicking, kept as plain tests.
#[test]
fn fuzz_regressions() {
    // `from_secs_f64` panicked on a protobuf-style duration past `Duration::MAX`.
    let text = SEEDS[2].replace("perTryTimeout: 500ms", "perTryTimeout: 18446744073709551615s");
    let (_, _, d) = build_str("mesh.yaml", &text);
    assert_eq!(d.errors.len(), 1, "{d}");
    assert!(d.errors[0].to_string().contains("out of range"), "{d}");
}

proptest! {
    #![proptest_config(config(2000))]

    /// Valid resources of every kind, edited at random: diagnostics, never a panic.
    #[test]
    fn fuzz_config_mutated_resources(text in mesh_text()) {
        check(&text)?;
    }

    /// Random text, YAML-ish or not: diagnostics, never a panic.
    #[test]
    fn fuzz_config_random_text(text in prop_oneof![
        ".{0,200}",
        "([a-zA-Z:{}\\[\\],\\-&*!|>'\" \n#0-9]|---\n|kind: |apiVersion: ){0,80}",
        (prop::sample::select(SEEDS), "[ -~\n]{0,40}").prop_map(|(s, tail)| format!("{s}{tail}")),
    ]) {
        check(&text)?;
    }
}
