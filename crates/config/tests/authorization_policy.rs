//! AuthorizationPolicy, RequestAuthentication and ExtensionProvider read as Istio users
//! write them (istio.io's security tasks, unchanged): which policies a workload gets,
//! the warning for identity rules without STRICT mTLS, and hostile specs refused naming
//! the field.

use std::collections::BTreeMap;

use weft_config::InboundSpec;

/// istio.io "Authorization for HTTP traffic" (bookinfo), "Explicit deny", and the
/// ext_authz task's policy.
const ISTIO_TASKS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec:
  {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "productpage-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: productpage
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "details-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
"#;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn inbound(service: &str, ns: &str) -> InboundSpec {
    InboundSpec { app: "127.0.0.1:9080".parse().unwrap(), service: service.into(), namespace: ns.into() }
}

#[test]
fn each_workload_gets_the_policies_that_select_it() {
    let (_, snap, diags) = weft_config::build_str("tasks.yaml", ISTIO_TASKS);
    assert!(diags.is_ok(), "{diags:?}");
    assert_eq!(snap.authorization.len(), 4);
    let names = |service: &str, ns: &str, l: &[(&str, &str)]| -> Vec<String> {
        let (_, mut snap, _) = weft_config::build_str("tasks.yaml", ISTIO_TASKS);
        snap.add_inbound(&inbound(service, ns), &labels(l));
        snap.inbound_authorization.map(|p| p.all().map(|p| p.name.to_string()).collect()).unwrap_or_default()
    };
    assert_eq!(names("productpage", "default", &[("app", "productpage")]), ["default/allow-nothing", "default/productpage-viewer"]);
    assert_eq!(names("details", "default", &[("app", "details")]), ["default/allow-nothing", "default/details-viewer"]);
    assert_eq!(names("httpbin", "foo", &[("app", "httpbin")]), ["foo/deny-method-get"]);
    assert!(names("sleep", "foo", &[("app", "sleep")]).is_empty());
}

#[test]
fn an_identity_rule_without_strict_mtls_is_warned_about() {
    let (_, _, diags) = weft_config::build_str("tasks.yaml", ISTIO_TASKS);
    let warned: Vec<String> = diags.warnings.iter().map(|w| w.to_string()).filter(|w| w.contains("mTLS is not STRICT")).collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("details-viewer"), "{warned:?}");
    let strict = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    let (_, _, diags) = weft_config::build_str("tasks.yaml", &format!("{ISTIO_TASKS}{strict}"));
    assert!(!diags.warnings.iter().any(|w| w.to_string().contains("mTLS is not STRICT")), "{diags:?}");
}

#[test]
fn hostile_specs_are_refused_naming_the_field() {
    let cases = [
        ("spec: {action: DENY, provider: {name: x}}", "spec.provider"),
        ("spec: {rules: [{from: [{source: {ipBlocks: [\"1.2.3.4/99\"]}}]}]}", "spec.rules[0].from[0].source.ipBlocks[0]"),
        ("spec: {rules: [{to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}]}", "spec.rules[0].to[0].operation.paths[0]"),
        ("spec: {rules: [{when: [{key: \"request.auth.claims[]\", values: [x]}]}]}", "spec.rules[0].when[0].key"),
        ("spec: {selector: {matchLabels: {app: x}}, targetRef: {kind: Service, name: x}}", "spec.selector"),
        ("spec: {targetRefs: [{kind: Gateway, name: gw}]}", "spec.targetRefs[0].kind"),
        ("spec: {action: CUSTOM, provider: {name: missing}}", "spec.provider.name"),
        ("spec: {rules: \"not a list\"}", "spec.rules"),
    ];
    for (spec, path) in cases {
        let yaml = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\n{spec}\n");
        let (_, _, diags) = weft_config::build_str("p.yaml", &yaml);
        assert!(diags.errors.iter().any(|e| e.to_string().contains(path)), "{spec}: want {path} in {diags:?}");
    }
    let dry = |action: &str, value: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo, annotations: {{istio.io/dry-run: \"{value}\"}}}}\nspec: {{action: {action}}}\n")
    };
    for (action, value) in [("DENY", "yes"), ("AUDIT", "true")] {
        let (_, _, diags) = weft_config::build_str("p.yaml", &dry(action, value));
        assert!(diags.errors.iter().any(|e| e.to_string().contains("metadata.annotations[istio.io/dry-run]")), "{diags:?}");
    }
    let (_, snap, diags) = weft_config::build_str("p.yaml", &dry("DENY", "true"));
    assert!(diags.is_ok() && snap.authorization[0].policy.dry_run, "{diags:?}");
    let provider = "apiVersion: policy.weft.dev/v1alpha1\nkind: ExtensionProvider\nmetadata: {name: x}\nspec: {envoyExtAuthzHttp: {service: \"\", port: 70000}}\n";
    let (_, _, diags) = weft_config::build_str("p.yaml", provider);
    for path in ["spec.envoyExtAuthzHttp.service", "spec.envoyExtAuthzHttp.port"] {
        assert!(diags.errors.iter().any(|e| e.to_string().contains(path)), "{path} in {diags:?}");
    }
}
