//! Compression and ResponseCache: each bad value names its field; good files compile.

use weft_config::{build_str, Encoding, Levels};

const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9001}}]
"#;

fn doc(kind: &str, spec: &str) -> String {
    format!("{SE}---\napiVersion: policy.weft.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: p}}\nspec:\n{spec}")
}

fn errors(text: &str) -> Vec<String> {
    let (_, _, d) = build_str("mesh.yaml", text);
    d.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn compression_defaults() {
    let (_, snap, d) = build_str("mesh.yaml", &doc("Compression", "  host: web\n"));
    assert!(d.is_ok(), "{d}");
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let p = &snap.vhost("web").unwrap().compression[0];
    assert_eq!(p.name, "Compression/p");
    assert_eq!(p.encodings, vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]);
    assert_eq!(p.min_content_length, 30);
    assert!(p.content_types.iter().any(|t| t == "application/json"));
    assert_eq!(p.levels, Levels::default());
    assert!(p.matches.is_empty());
}

#[test]
fn compression_fields_compile() {
    let spec = "  host: WEB\n  match: [{uri: {prefix: /api}}]\n  encodings: [gzip, BR]\n  minContentLength: 1024\n  contentTypes: [\"Application/JSON; charset=utf-8\", text/csv]\n  level: {gzip: 9, br: 5}\n";
    let (_, snap, d) = build_str("mesh.yaml", &doc("Compression", spec));
    assert!(d.is_ok(), "{d}");
    let p = &snap.vhost("web").unwrap().compression[0];
    assert_eq!(p.encodings, vec![Encoding::Gzip, Encoding::Brotli]);
    assert_eq!(p.min_content_length, 1024);
    assert_eq!(p.content_types, vec!["application/json", "text/csv"]);
    assert_eq!((p.levels.gzip, p.levels.brotli, p.levels.zstd), (9, 5, 3));
    assert_eq!(p.matches.len(), 1);

    let (_, snap, d) = build_str("mesh.yaml", &doc("Compression", "  host: web\n  encodings: [gzip, zstd]\n  level: 9\n"));
    assert!(d.is_ok(), "{d}");
    let l = snap.vhost("web").unwrap().compression[0].levels;
    assert_eq!((l.gzip, l.zstd), (9, 9));
}

#[test]
fn compression_bad_values_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("  host: web\n  encodings: [gzip, deflate]\n", "spec.encodings[1]: unknown value \"deflate\" (expected one of gzip, br, zstd)"),
        ("  host: web\n  encodings: [gzip, gzip]\n", "spec.encodings[1]: \"gzip\" is listed twice"),
        ("  host: web\n  encodings: []\n", "spec.encodings: must list at least one"),
        ("  host: web\n  level: {br: 12}\n", "spec.level.br: 12 is out of range for br (0–11)"),
        ("  host: web\n  level: {lz4: 1}\n", "spec.level.lz4: unknown encoding \"lz4\""),
        ("  host: web\n  level: 10\n", "spec.level: 10 is out of range for gzip (1–9)"),
        ("  host: web\n  level: fast\n", "spec.level: must be a number"),
        ("  host: web\n  contentTypes: [json]\n", "spec.contentTypes[0]: \"json\" is not a media type"),
        ("  host: web\n  match: [{uri: {regex: \"/v(\"}}]\n", "spec.match[0].uri.regex: invalid regex"),
        ("  host: nowhere\n", "spec.host: no ServiceEntry or VirtualService serves host \"nowhere.default.svc.cluster.local\""),
        ("  match: []\n", "spec.host: missing field"),
        ("  host: web\n  minContentLength: -1\n", "spec.minContentLength: invalid value"),
    ];
    for (spec, want) in cases {
        let e = errors(&doc("Compression", spec));
        assert_eq!(e.len(), 1, "{spec}: {e:?}");
        assert!(e[0].starts_with(&format!("mesh.yaml: Compression p: {want}")), "{spec}: {e:?}");
    }
}

#[test]
fn a_huge_list_is_refused_quickly() {
    let types: Vec<String> = (0..100_000).map(|i| format!("text/x{i}")).collect();
    let spec = format!("  host: web\n  contentTypes: [{}]\n", types.join(", "));
    let t = std::time::Instant::now();
    let e = errors(&doc("Compression", &spec));
    assert_eq!(e, vec!["mesh.yaml: Compression p: spec.contentTypes: 100000 entries (at most 256)"]);

    let encs = vec!["gzip"; 100_000].join(", ");
    let e = errors(&doc("Compression", &format!("  host: web\n  encodings: [{encs}]\n")));
    assert!(e.len() <= 10, "{} errors", e.len());
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn response_cache_defaults_and_fields() {
    let (_, snap, d) = build_str("mesh.yaml", &doc("ResponseCache", "  host: web\n"));
    assert!(d.is_ok(), "{d}");
    let p = &snap.vhost("web").unwrap().response_cache[0];
    assert_eq!((p.name.as_str(), p.max_bytes, p.max_entry_bytes), ("ResponseCache/p", 64 << 20, 1 << 20));

    let (_, snap, d) = build_str("mesh.yaml", &doc("ResponseCache", "  host: web\n  maxBytes: 1000\n"));
    assert!(d.is_ok(), "{d}");
    let p = &snap.vhost("web").unwrap().response_cache[0];
    assert_eq!((p.max_bytes, p.max_entry_bytes), (1000, 1000), "the entry default shrinks to maxBytes");
}

#[test]
fn response_cache_bad_values_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("  host: web\n  maxBytes: 0\n", "spec.maxBytes: must be at least 1"),
        ("  host: web\n  maxEntryBytes: 0\n", "spec.maxEntryBytes: must be at least 1"),
        ("  host: web\n  maxBytes: 100\n  maxEntryBytes: 101\n", "spec.maxEntryBytes: 101 is more than maxBytes (100)"),
        (
            "  host: web\n  maxBytes: 100000000000\n  maxEntryBytes: 10000000000\n",
            "spec.maxEntryBytes: 10000000000 is more than 4294967295",
        ),
        ("  host: web\n  maxBytes: lots\n", "spec.maxBytes: invalid type"),
        ("  host: web\n  match: [{headers: {x: {regex: \"(\"}}}]\n", "spec.match[0].headers.x.regex: invalid regex"),
        ("  host: elsewhere\n", "spec.host: no ServiceEntry or VirtualService serves host \"elsewhere.default.svc.cluster.local\""),
    ];
    for (spec, want) in cases {
        let e = errors(&doc("ResponseCache", spec));
        assert_eq!(e.len(), 1, "{spec}: {e:?}");
        assert!(e[0].starts_with(&format!("mesh.yaml: ResponseCache p: {want}")), "{spec}: {e:?}");
    }
}

#[test]
fn an_unchanged_policy_compares_equal_across_compiles() {
    let text = doc("ResponseCache", "  host: web\n  match: [{uri: {regex: \"/a.*\"}}]\n");
    let (_, a, _) = build_str("mesh.yaml", &text);
    let (_, b, _) = build_str("mesh.yaml", &text);
    assert_eq!(a.vhost("web").unwrap().response_cache, b.vhost("web").unwrap().response_cache);
    let (_, c, _) = build_str("mesh.yaml", &text.replace("/a.*", "/b.*"));
    assert_ne!(a.vhost("web").unwrap().response_cache, c.vhost("web").unwrap().response_cache);
}
