//! `weft validate`: exact messages and exit codes.

mod common;

use std::process::Command;

fn validate(text: &str) -> (i32, String, String) {
    let dir = common::temp_dir();
    let f = dir.join("mesh.yaml");
    std::fs::write(&f, text).unwrap();
    let o = Command::new(common::weft()).current_dir(&dir).args(["validate", "-f", "mesh.yaml"]).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 127.0.0.1}]\n";

#[test]
fn invalid_load_balancer_names_file_resource_and_field() {
    let dr = "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBBIN}\n";
    let (rc, _, err) = validate(&format!("{SE}{dr}"));
    assert_eq!(rc, 1);
    assert_eq!(
        err.trim(),
        "mesh.yaml: DestinationRule reviews: spec.trafficPolicy.loadBalancer.simple: unknown value \"ROUND_ROBBIN\" (expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST, PEAK_EWMA)"
    );
}

#[test]
fn valid_file_passes_and_unknown_fields_warn() {
    let (rc, out, err) = validate(&SE.replace("resolution: STATIC", "resolution: STATIC\n  colour: blue"));
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("1 resources OK"), "{out}");
    assert_eq!(err.trim(), "warning: mesh.yaml: ServiceEntry reviews: spec.colour: unknown field; ignored");
}

#[test]
fn several_errors_are_all_reported() {
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}, weight: 0}]\n  - redirect: {redirectCode: 200}\n";
    let (rc, _, err) = validate(&format!("{SE}{vs}"));
    assert_eq!(rc, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        vec![
            "mesh.yaml: VirtualService r: spec.http[0].route: the weights of the destinations add up to 0",
            "mesh.yaml: VirtualService r: spec.http[1].redirect.redirectCode: 200 is not a redirect code (301, 302, 303, 307, 308)",
        ]
    );
    let (rc, _, err) = validate("this: [is not\n");
    assert_eq!(rc, 1);
    assert!(err.starts_with("mesh.yaml: document 0: invalid YAML"), "{err}");
}
