//! PeerAuthentication read as Istio users write it (istio.io's mTLS tasks), and the
//! mode each workload port resolves to; hostile specs refused naming the field.

use std::collections::BTreeMap;

use weft_config::istio::MtlsMode;
use weft_config::mtls::mode_for;

const ISTIO_TASKS: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: bar
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    "8080":
      mode: DISABLE
"#;

fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn istio_task_policies_resolve_per_workload_and_port() {
    let (_, snap, diags) = weft_config::build_str("pa.yaml", ISTIO_TASKS);
    assert!(diags.is_ok(), "{diags}");
    let p = &snap.peer_authentication;
    assert_eq!(p.len(), 3);
    let httpbin = labels(&[("app", "httpbin")]);
    assert_eq!(mode_for(p, "foo", &httpbin, 80), MtlsMode::Permissive);
    assert_eq!(mode_for(p, "bar", &httpbin, 80), MtlsMode::Strict);
    assert_eq!(mode_for(p, "bar", &httpbin, 8080), MtlsMode::Disable);
    assert_eq!(mode_for(p, "bar", &labels(&[("app", "sleep")]), 8080), MtlsMode::Strict, "mesh-wide");
    assert_eq!(mode_for(p, "legacy", &httpbin, 80), MtlsMode::Strict, "mesh-wide");
}

#[test]
fn hostile_peer_authentications_are_refused_naming_the_field() {
    let head = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: bar}\nspec:\n";
    for (spec, want) in [
        ("  mtls: {mode: MAYBE}\n", "spec.mtls.mode"),
        ("  portLevelMtls: {\"8080\": {mode: DISABLE}}\n", "spec.portLevelMtls: port-level mTLS needs a workload selector"),
        (
            "  selector: {matchLabels: {app: x}}\n  portLevelMtls: {\"0\": {mode: DISABLE}}\n",
            "spec.portLevelMtls[\"0\"]: a port is 1 to 65535",
        ),
        ("  selector: {matchLabels: {app: x}}\n  portLevelMtls: {\"99999\": {mode: DISABLE}}\n", "spec.portLevelMtls[\"99999\"]"),
        ("  selector: {matchLabels: {app: x}}\n  portLevelMtls: {\"http\": {mode: DISABLE}}\n", "spec.portLevelMtls[\"http\"]"),
        ("  selector: {matchLabels: {app: x}}\n  portLevelMtls: {}\n", "spec.portLevelMtls: at least one port"),
        ("  selector: {matchLabels: {\"bad key!\": x}}\n", "spec.selector.matchLabels[\"bad key!\"]"),
    ] {
        let (_, _, diags) = weft_config::build_str("pa.yaml", &format!("{head}{spec}"));
        let text = diags.to_string();
        assert!(!diags.is_ok() && text.contains(want), "{spec:?}: {text}");
    }
    // Istio's "weird but valid" empty selector: a workload-level policy for every
    // workload of the namespace.
    let (_, snap, diags) = weft_config::build_str("pa.yaml", &format!("{head}  selector: {{}}\n  mtls: {{mode: DISABLE}}\n"));
    assert!(diags.is_ok(), "{diags}");
    let ns_wide = format!("---\n{head}  mtls: {{mode: STRICT}}\n").replace("name: p,", "name: q,");
    let (_, snap2, _) = weft_config::build_str("pa.yaml", &format!("{head}  selector: {{}}\n  mtls: {{mode: DISABLE}}\n{ns_wide}"));
    for s in [&snap, &snap2] {
        assert_eq!(mode_for(&s.peer_authentication, "bar", &labels(&[("app", "any")]), 80), MtlsMode::Disable);
    }
    let (_, _, diags) = weft_config::build_str(
        "pa.yaml",
        &format!("{head}  mtls: {{mode: STRICT}}\n").replace("security.istio.io/v1", "security.istio.io/v2"),
    );
    assert!(diags.to_string().contains("apiVersion"), "{diags}");
}
