//! Delegate VirtualServices: istio.io's example (a root for bookinfo.com delegating
//! /productpage and /reviews to VirtualServices of other namespaces), with real requests.

use weft_proxy::testing::*;

const ROOT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["bookinfo.com"]
  http:
  - match: [{uri: {prefix: "/productpage"}}]
    delegate: {name: productpage, namespace: nsa}
  - match: [{uri: {prefix: "/reviews"}}]
    delegate: {name: reviews, namespace: nsb}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: nsa}
spec:
  http:
  - match: [{uri: {prefix: "/productpage/v1/"}}]
    route: [{destination: {host: productpage-v1}}]
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: nsb}
spec:
  http:
  - match: [{uri: {prefix: "/reviews/v1/"}}]
    route: [{destination: {host: reviews-v1}}]
  - match: [{uri: {prefix: "/elsewhere"}}]
    route: [{destination: {host: reviews-v1}}]
  - route: [{destination: {host: reviews}}]
"#;

fn se(name: &str, ns: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n  endpoints: [{{address: {ip}}}]\n"
    )
}

#[tokio::test(start_paused = true)]
async fn delegates_serve_under_their_roots_matches() {
    let net = Network::new();
    let mut yaml = ROOT.to_owned();
    for (i, (name, ns)) in [("productpage", "nsa"), ("productpage-v1", "nsa"), ("reviews", "nsb"), ("reviews-v1", "nsb")].iter().enumerate()
    {
        let ip = format!("10.0.0.{}", i + 1);
        let answer_with = name.to_string();
        net.serve(addr(&format!("{ip}:80")), move |_| {
            let a = answer_with.clone();
            async move { answer(200, &a) }
        });
        yaml.push_str(&se(name, ns, &ip));
    }
    let (_, _, diags) = weft_config::build_str("d.yaml", &yaml);
    assert!(
        diags.warnings.iter().any(|w| w.to_string().contains("reviews: spec.http[1].match: no match of this route lies within")),
        "{:?}",
        diags.warnings
    );
    let h = Harness::new(&net, &yaml);
    for (path, want) in [
        ("/productpage/v1/x", "productpage-v1"),
        ("/productpage", "productpage"),
        ("/reviews/v1/1", "reviews-v1"),
        ("/reviews/2", "reviews"),
    ] {
        let r = h.get("bookinfo.com", path).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, want), "{path}");
    }
    assert_eq!(h.get("bookinfo.com", "/elsewhere").await.status, 404, "outside the root's matches");
}

#[test]
fn delegation_is_one_level_and_a_delegate_has_no_gateways() {
    let again = ROOT.replace("  - route: [{destination: {host: reviews}}]", "  - delegate: {name: productpage, namespace: nsa}");
    let (_, _, d) = weft_config::build_str("d.yaml", &again);
    assert!(
        d.to_string().contains("VirtualService reviews: spec.http[2].delegate: a delegate VirtualService may not delegate again"),
        "{d}"
    );
    let gw = ROOT.replace(
        "metadata: {name: reviews, namespace: nsb}\nspec:\n",
        "metadata: {name: reviews, namespace: nsb}\nspec:\n  gateways: [mesh]\n",
    );
    let (_, _, d) = weft_config::build_str("d.yaml", &gw);
    assert!(d.to_string().contains("spec.gateways: a delegate VirtualService"), "{d}");
    let both = ROOT.replace(
        "    delegate: {name: productpage, namespace: nsa}",
        "    delegate: {name: productpage, namespace: nsa}\n    route: [{destination: {host: x}}]",
    );
    let (_, _, d) = weft_config::build_str("d.yaml", &both);
    assert!(d.to_string().contains("spec.http[0].delegate: a route with delegate"), "{d}");
}

#[tokio::test(start_paused = true)]
async fn a_delegate_inherits_the_roots_route_settings_and_gateways() {
    // The root's header clean-up and the mesh-only match go with its delegate.
    let root = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [app.example]
  gateways: [gw, mesh]
  http:
  - match: [{uri: {prefix: /admin}, gateways: [mesh]}]
    headers: {request: {remove: [x-user]}}
    delegate: {name: admin}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin, namespace: default}
spec:
  http: [{route: [{destination: {host: app.example}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;
    let net = Network::new();
    net.serve(addr("10.0.0.1:80"), |req| async move {
        answer(200, &format!("x-user={}", req.headers().get("x-user").map_or("-", |v| v.to_str().unwrap_or("?"))))
    });
    let yaml = format!("{root}{}", se("app", "default", "10.0.0.1").replace("app.default.svc.cluster.local", "app.example"));
    let h = Harness::new(&net, &yaml);
    let req = http::Request::get("/admin/panel").header("host", "app.example").header("x-user", "admin").body(Default::default()).unwrap();
    assert_eq!(h.request(req).await.text(), "x-user=-", "the root's remove applies to its delegate's route");
    // The ingress gateway does not get the mesh-only delegated route.
    let role = weft_config::Role::Gateway(weft_config::GatewayRole {
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
        credentials_dir: None,
    });
    let (_, gw, d) = weft_config::build_str_for("d.yaml", &yaml, &role);
    assert!(d.is_ok(), "{d}");
    assert!(gw.vhost("app.example").is_none_or(|v| v.routes.is_empty()), "no route through the gateway");
}

#[test]
fn merged_matches_are_bounded() {
    let matches = |n: usize, p: &str| (0..n).map(|i| format!("{{uri: {{prefix: {p}{i}}}}}")).collect::<Vec<_>>().join(", ");
    let root = format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [a.example]\n  http:\n  - match: [{}]\n    delegate: {{name: d}}\n", matches(90, "/a"));
    let del = format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: d}}\nspec:\n  http:\n  - match: [{}]\n    route: [{{destination: {{host: a.example}}}}]\n", matches(90, "/a1"));
    let (_, _, d) = weft_config::build_str("d.yaml", &format!("{root}{del}"));
    assert!(d.to_string().contains("matches merged") && d.to_string().contains("over 256"), "{d}");
}
