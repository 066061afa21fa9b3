use serde_json::{json, Value};

use super::*;

fn policy(name: &str, spec: serde_json::Value) -> Arc<CompiledPolicy> {
    let p: AuthorizationPolicy = serde_json::from_value(spec).unwrap();
    Arc::new(compile(name, &p).unwrap_or_else(|e| panic!("{e:?}")))
}

fn errors(spec: serde_json::Value) -> Vec<PolicyError> {
    let p: AuthorizationPolicy = serde_json::from_value(spec).unwrap();
    compile("ns/p", &p).unwrap_err()
}

struct Req {
    headers: http::HeaderMap,
    claims: Option<Value>,
    principal: Option<&'static str>,
    request_principal: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    source_ip: &'static str,
}

impl Req {
    fn new(method: &'static str, path: &'static str) -> Req {
        Req {
            headers: http::HeaderMap::new(),
            claims: None,
            principal: Some("cluster.local/ns/foo/sa/sleep"),
            request_principal: None,
            method,
            path,
            source_ip: "10.1.2.3",
        }
    }
    fn attrs(&self) -> Attrs<'_> {
        Attrs {
            source_ip: self.source_ip.parse().ok(),
            remote_ip: None,
            principal: self.principal,
            request_principal: self.request_principal,
            claims: self.claims.as_ref(),
            method: self.method,
            path: self.path,
            host: "httpbin.foo",
            port: Some(8000),
            headers: &self.headers,
            destination_ip: "10.0.0.9".parse().ok(),
            destination_port: 8000,
            sni: None,
        }
    }
}

fn decide(p: &Policies, r: &Req) -> bool {
    p.check(&r.attrs()).decision == Decision::Allow
}

#[test]
fn no_policy_allows_an_empty_allow_denies_and_an_empty_rule_allows() {
    let r = Req::new("GET", "/");
    assert!(decide(&Policies::default(), &r));
    let deny_all = Policies::from_compiled([policy("foo/allow-nothing", json!({}))]);
    assert_eq!(deny_all.check(&r.attrs()).decision, Decision::NotAllowed);
    let allow_all = Policies::from_compiled([policy("foo/allow-all", json!({"rules": [{}]}))]);
    assert!(decide(&allow_all, &r));
    // An empty DENY denies nothing.
    let deny_none = Policies::from_compiled([policy("foo/deny-none", json!({"action": "DENY"}))]);
    assert!(decide(&deny_none, &r));
}

/// Istio's "Authorization for HTTP traffic" task: productpage GETs from the bookinfo
/// namespace's service account only.
#[test]
fn allow_get_from_one_principal() {
    let p = Policies::from_compiled([policy(
        "default/get-productpage",
        json!({"selector": {"matchLabels": {"app": "productpage"}}, "action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/foo/sa/sleep"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}]
        }]}),
    )]);
    assert!(decide(&p, &Req::new("GET", "/api/v1")));
    assert!(!decide(&p, &Req::new("POST", "/api/v1")));
    assert!(!decide(&p, &Req::new("GET", "/admin")));
    let mut other = Req::new("GET", "/api/v1");
    other.principal = Some("cluster.local/ns/bar/sa/sleep");
    assert!(!decide(&p, &other));
}

/// DENY wins over ALLOW; the deny names its policy.
#[test]
fn deny_before_allow() {
    let p = Policies::from_compiled([
        policy("foo/allow-all", json!({"rules": [{}]})),
        policy(
            "foo/deny-post",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"], "notPaths": ["/public/*"]}}]}]}),
        ),
    ]);
    assert!(decide(&p, &Req::new("GET", "/x")));
    assert_eq!(p.check(&Req::new("POST", "/x").attrs()).decision, Decision::DeniedBy("foo/deny-post"));
    assert!(decide(&p, &Req::new("POST", "/public/form")));
}

/// Plaintext (no principal): a principal rule matches nothing for ALLOW and everything
/// for DENY.
#[test]
fn unknown_principals_fail_safe() {
    let mut plain = Req::new("GET", "/admin");
    plain.principal = None;
    let allow = Policies::from_compiled([policy("foo/allow-ns", json!({"rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}))]);
    assert!(!decide(&allow, &plain));
    assert!(decide(&allow, &Req::new("GET", "/admin")));
    let deny = Policies::from_compiled([policy(
        "foo/deny-bar",
        json!({"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["foo"]}}], "to": [{"operation": {"paths": ["/admin"]}}]}]}),
    )]);
    assert_eq!(deny.check(&plain.attrs()).decision, Decision::DeniedBy("foo/deny-bar"));
    assert!(decide(&deny, &Req::new("GET", "/admin")), "from foo: not denied");
    let mut elsewhere = Req::new("GET", "/other");
    elsewhere.principal = None;
    assert!(decide(&deny, &elsewhere), "the rule's other fields still have to match");
}

/// `requestPrincipals: ["*"]` requires a token; no token is known, not unknown.
#[test]
fn request_principals_require_a_token() {
    let p = Policies::from_compiled([policy("foo/require-jwt", json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}))]);
    let mut r = Req::new("GET", "/");
    assert!(!decide(&p, &r));
    r.request_principal = Some("testing@secure.istio.io/testing@secure.istio.io");
    assert!(decide(&p, &r));
    // Istio's DENY form of the same: notRequestPrincipals ["*"] denies requests without one.
    let d = Policies::from_compiled([policy(
        "foo/deny-no-jwt",
        json!({"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]}),
    )]);
    assert!(decide(&d, &r));
    r.request_principal = None;
    assert!(!decide(&d, &r));
}

/// `when` on claims (nested, lists), headers, IPs and ports.
#[test]
fn conditions() {
    let p = Policies::from_compiled([policy(
        "foo/when",
        json!({"rules": [{"when": [
            {"key": "request.auth.claims[groups]", "values": ["group1"]},
            {"key": "request.auth.claims[org][team]", "values": ["mesh"]},
            {"key": "request.headers[x-env]", "notValues": ["prod*"]},
            {"key": "source.ip", "values": ["10.0.0.0/8"]},
            {"key": "destination.port", "values": ["8000"]}
        ]}]}),
    )]);
    let mut r = Req::new("GET", "/");
    assert!(!decide(&p, &r), "no claims");
    r.claims = Some(json!({"groups": ["group2", "group1"], "org": {"team": "mesh"}}));
    assert!(decide(&p, &r));
    r.headers.insert("x-env", http::HeaderValue::from_static("production"));
    assert!(!decide(&p, &r), "notValues");
    r.headers.insert("x-env", http::HeaderValue::from_static("dev"));
    assert!(decide(&p, &r));
    r.source_ip = "192.168.0.1";
    assert!(!decide(&p, &r));
    r.source_ip = "10.9.9.9";
    r.claims = Some(json!({"groups": "group1", "org": {"team": "other"}}));
    assert!(!decide(&p, &r), "nested claim differs");
}

#[test]
fn audit_is_reported_whatever_the_decision() {
    let p = Policies::from_compiled([
        policy("foo/audit-admin", json!({"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/admin/{**}"]}}]}]})),
        policy("foo/deny-admin-delete", json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]})),
    ]);
    let c = p.check(&Req::new("GET", "/admin/users").attrs());
    assert_eq!((c.decision, c.audit), (Decision::Allow, Some("foo/audit-admin")));
    let c = p.check(&Req::new("DELETE", "/admin/users").attrs());
    assert_eq!((c.decision, c.audit), (Decision::DeniedBy("foo/deny-admin-delete"), Some("foo/audit-admin")));
    assert_eq!(p.check(&Req::new("GET", "/x").attrs()).audit, None);
}

#[test]
fn custom_matches_fail_safe_and_names_its_provider() {
    let p = Policies::from_compiled([policy(
        "foo/ext",
        json!({"action": "CUSTOM", "provider": {"name": "my-authz"}, "rules": [{"to": [{"operation": {"paths": ["/headers"]}}]}]}),
    )]);
    let c = p.check(&Req::new("GET", "/headers").attrs());
    assert_eq!(c.custom.and_then(|p| p.provider.as_deref()), Some("my-authz"));
    assert!(p.check(&Req::new("GET", "/ip").attrs()).custom.is_none());
}

#[test]
fn validation_names_each_field() {
    let e = errors(json!({"action": "DENY", "provider": {"name": "x"}}));
    assert_eq!(e[0].0, "spec.provider");
    let e = errors(json!({"action": "CUSTOM"}));
    assert_eq!(e[0].0, "spec.provider.name");
    let e = errors(json!({"action": "REJECT"}));
    assert!(e[0].1.contains("REJECT"), "{e:?}");
    let e = errors(json!({"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Service", "name": "x"}]}));
    assert_eq!(e[0].0, "spec.selector");
    let e = errors(json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}));
    assert_eq!(e[0].0, "spec.rules[0].from[0].source.ipBlocks[0]");
    let e = errors(json!({"rules": [{"from": [{"source": {"notIpBlocks": ["nope"]}}]}]}));
    assert_eq!(e[0].0, "spec.rules[0].from[0].source.notIpBlocks[0]");
    let e = errors(json!({"rules": [{"to": [{"operation": {"paths": ["/a/{**}/{*}"]}}]}]}));
    assert_eq!(e[0].0, "spec.rules[0].to[0].operation.paths[0]");
    let e = errors(json!({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}));
    assert_eq!(e[0].0, "spec.rules[0].to[0].operation.ports[0]");
    let e = errors(json!({"rules": [{"from": [{}], "to": [{"operation": {}}]}]}));
    assert_eq!(e.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["spec.rules[0].from[0].source", "spec.rules[0].to[0].operation"]);
    let e = errors(
        json!({"rules": [{"when": [{"key": "request.headers", "values": ["x"]}, {"key": "bogus", "values": ["x"]}, {"key": "source.ip"}]}]}),
    );
    assert_eq!(
        e.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["spec.rules[0].when[0].key", "spec.rules[0].when[1].key", "spec.rules[0].when[2]"]
    );
    let e = errors(json!({"rules": [{"when": [{"key": "request.headers[bad header]", "values": ["x"]}]}]}));
    assert_eq!(e[0].0, "spec.rules[0].when[0].key");
    let long = "x".repeat(10_000);
    let e = errors(json!({"action": long}));
    assert!(e[0].1.len() < 200, "a hostile value is cut in the message");
}

#[test]
fn needs_peer_identity_and_request_auth() {
    let p = policy("a/b", json!({"rules": [{"from": [{"source": {"principals": ["x"]}}]}]}));
    assert!(p.needs_peer_identity() && !p.needs_request_auth());
    let p = policy("a/b", json!({"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]}));
    assert!(!p.needs_peer_identity() && p.needs_request_auth());
}

/// The principal index: a request finds the policies naming its principal, the others
/// are skipped; a plaintext request under a DENY naming principals is still denied
/// (fail safe), and the first matching policy in the order given is the one reported.
#[test]
fn the_principal_index_keeps_every_outcome() {
    let many: Vec<_> = (0..50)
        .map(|i| {
            policy(
                &format!("foo/deny-{i}"),
                json!({"action": "DENY", "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/foo/sa/sa{i}")]}}], "to": [{"operation": {"methods": ["DELETE"]}}]}]}),
            )
        })
        .chain([policy("foo/deny-any-delete-admin", json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"], "paths": ["/admin"]}}]}]}))])
        .collect();
    let p = Policies::from_compiled(many);
    let mut r = Req::new("DELETE", "/admin");
    r.principal = Some("cluster.local/ns/foo/sa/sa7");
    assert_eq!(p.check(&r.attrs()).decision, Decision::DeniedBy("foo/deny-7"), "the first in order");
    r.principal = Some("cluster.local/ns/foo/sa/nobody");
    assert_eq!(p.check(&r.attrs()).decision, Decision::DeniedBy("foo/deny-any-delete-admin"));
    r.path = "/other";
    assert!(decide(&p, &r));
    r.principal = None;
    assert_eq!(p.check(&r.attrs()).decision, Decision::DeniedBy("foo/deny-0"), "plaintext: an unknown principal matches in DENY");
    // ALLOW: only the named principal gets in; plaintext does not.
    let allow = Policies::from_compiled([policy(
        "foo/allow-sleep",
        json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/sleep"]}}]}]}),
    )]);
    let mut r = Req::new("GET", "/");
    assert!(decide(&allow, &r));
    r.principal = Some("cluster.local/ns/foo/sa/other");
    assert!(!decide(&allow, &r));
    r.principal = None;
    assert!(!decide(&allow, &r));
}

/// Dry-run policies (`istio.io/dry-run: "true"`) are evaluated apart and never enforced.
#[test]
fn dry_run_policies_report_what_they_would_decide() {
    let dry = |name: &str, spec: serde_json::Value| {
        let mut p = (*policy(name, spec)).clone();
        p.dry_run = true;
        Arc::new(p)
    };
    let p = Policies::from_compiled([dry(
        "foo/deny-admin",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
    )]);
    let c = p.check(&Req::new("GET", "/admin").attrs());
    assert_eq!((c.decision, c.dry_run), (Decision::Allow, Some(Decision::DeniedBy("foo/deny-admin"))));
    assert_eq!(p.check(&Req::new("GET", "/x").attrs()).dry_run, Some(Decision::Allow));
    // A dry-run ALLOW: the enforced decision stays allow; the dry run says not allowed.
    let p = Policies::from_compiled([dry("foo/allow-get", json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}))]);
    let c = p.check(&Req::new("POST", "/x").attrs());
    assert_eq!((c.decision, c.dry_run), (Decision::Allow, Some(Decision::NotAllowed)));
    assert_eq!(Policies::default().check(&Req::new("GET", "/").attrs()).dry_run, None);
}

#[test]
fn service_accounts_and_trust_domains_of_the_peer() {
    // Istio's newer Source fields: `ns/sa` (or `sa` in the policy's namespace) whatever
    // the trust domain; the trust domain on its own.
    let by_sa = policy("foo/p", json!({"action": "ALLOW", "rules": [{"from": [{"source": {"serviceAccounts": ["sleep", "bar/curl"]}}]}]}));
    let set = Policies::from_compiled([by_sa]);
    let mut r = Req::new("GET", "/");
    assert!(decide(&set, &r), "foo/sleep, the policy's namespace");
    r.principal = Some("other.domain/ns/bar/sa/curl");
    assert!(decide(&set, &r), "bar/curl in another trust domain");
    for p in ["cluster.local/ns/bar/sa/sleep", "cluster.local/ns/foo/sa/sleepy", "cluster.local/ns/foo/sa/sleep/extra"] {
        r.principal = Some(p);
        assert_eq!(decide(&set, &r), p.ends_with("/extra"), "{p}");
    }
    r.principal = None;
    assert!(!decide(&set, &r), "plaintext: no service account, not allowed");

    let by_td =
        policy("foo/p", json!({"action": "DENY", "rules": [{"from": [{"source": {"notTrustDomains": ["cluster.local", "corp-*"]}}]}]}));
    let set = Policies::from_compiled([by_td]);
    let mut r = Req::new("GET", "/");
    assert!(decide(&set, &r));
    r.principal = Some("corp-eu/ns/foo/sa/sleep");
    assert!(decide(&set, &r));
    r.principal = Some("evil.example/ns/foo/sa/sleep");
    assert!(!decide(&set, &r), "a foreign trust domain is denied");
}

#[test]
fn service_accounts_are_not_set_with_principals_or_namespaces() {
    for other in [json!({"principals": ["x"]}), json!({"namespaces": ["bar"]}), json!({"notNamespaces": ["bar"]})] {
        let mut source = json!({"serviceAccounts": ["bar/sa"]});
        source.as_object_mut().unwrap().extend(other.as_object().unwrap().clone());
        let e = errors(json!({"rules": [{"from": [{"source": source}]}]}));
        assert!(e.iter().any(|(p, m)| p == "spec.rules[0].from[0].source" && m.contains("serviceAccounts")), "{e:?}");
    }
    for bad in ["a/b/c", "", "/sa", "ns/", "*", &"x".repeat(400)] {
        let e = errors(json!({"rules": [{"from": [{"source": {"serviceAccounts": [bad]}}]}]}));
        assert!(e.iter().any(|(p, _)| p == "spec.rules[0].from[0].source.serviceAccounts[0]"), "{bad:?}: {e:?}");
    }
}
