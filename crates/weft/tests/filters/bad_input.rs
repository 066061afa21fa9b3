//! Bad Compression and ResponseCache config names the field.

use super::support::*;
use std::process::Command;

fn validate(text: &str) -> (i32, String) {
    let dir = temp_dir();
    std::fs::write(dir.join("mesh.yaml"), text).unwrap();
    let o = Command::new(weft()).current_dir(&dir).args(["validate", "-f", "mesh.yaml"]).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn bad_filter_config_names_the_field() {
    let se = service_entry("svc", &[("127.0.0.1:8080".parse().unwrap(), "v: a", 1)]);
    let kind = |kind: &str, spec: &str| {
        format!("{se}---\napiVersion: policy.weft.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x}}\nspec: {spec}\n")
    };
    let cases = [
        (
            kind("Compression", "{host: svc, encodings: [lz4]}"),
            "Compression x: spec.encodings[0]: unknown value \"lz4\" (expected one of gzip, br, zstd)",
        ),
        (kind("ResponseCache", "{host: svc, maxBytes: 0}"), "ResponseCache x: spec.maxBytes: must be at least 1"),
        (
            kind("ResponseCache", "{host: svc, match: [{uri: {regex: \"a(\"}}]}"),
            "ResponseCache x: spec.match[0].uri.regex: invalid regex \"a(\"",
        ),
        (
            kind("Compression", "{host: svc, match: [{uri: {regex: \"[z-a]\"}}]}"),
            "Compression x: spec.match[0].uri.regex: invalid regex \"[z-a]\"",
        ),
    ];
    for (text, want) in cases {
        let (rc, err) = validate(&text);
        assert_ne!(rc, 0, "accepted:\n{text}");
        assert!(err.contains(&format!("mesh.yaml: {want}")), "want {want:?} in:\n{err}");
    }
    // The same resources, valid, pass.
    let (rc, err) = validate(&(kind("Compression", "{host: svc, encodings: [gzip]}") + &cache(", maxBytes: 1000")));
    assert_eq!(rc, 0, "{err}");
}
