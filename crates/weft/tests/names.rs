//! Registered services' names as Kubernetes resolves them, through the real control
//! plane and proxies: a short name is the service of its namespace
//! (`reviews` in `default` is reviews.default.svc.cluster.local), a name with dots is a
//! host; a registered service and a ServiceEntry of the same name in another namespace
//! are different services; a proxy answers every alternate name from its namespace.

mod common;

use common::*;

#[test]
fn registered_names_are_services_of_their_namespace() {
    let cp = plane();
    let (reg, se, prod, ext) = (backend("registered", &[]), backend("entry", &[]), backend("prod", &[]), backend("external", &[]));
    // A ServiceEntry for reviews of namespace `other`.
    let entry = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews, namespace: other}}\nspec:\n  hosts: [reviews.other.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
        se.addr.port()
    );
    assert!(cp.apply("other.yaml", &entry).status.success());
    for (args, b) in [
        (&["--service", "reviews"][..], &reg),
        (&["--service", "reviews", "--namespace", "prod"][..], &prod),
        (&["--service", "api.example.com"][..], &ext),
    ] {
        let addr = b.addr.to_string();
        let out = cp.weft(&[&["register", "--address", &addr][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let endpoints = plane_raw(&cp, "GET", "/v1/registry", b"").1;
    assert!(endpoints.contains("reviews.default.svc.cluster.local") && endpoints.contains("reviews.prod.svc.cluster.local"), "{endpoints}");

    let p = follower_in(&cp, "default-1", "default");
    wait_until("the registrations route", || get(p.addr(), "api.example.com", "/", &[]).status == 200);
    for (host, want) in [
        ("reviews", "registered"),
        ("reviews:80", "registered"),
        ("reviews.default", "registered"),
        ("reviews.default.svc.cluster.local", "registered"),
        ("reviews.other", "entry"),
        ("reviews.other.svc:80", "entry"),
        ("reviews.prod", "prod"),
        ("api.example.com", "external"),
    ] {
        assert_eq!(get(p.addr(), host, "/", &[]).backend(), want, "{host} from namespace default");
    }
    // Metrics name each service's own namespace.
    let m = p.admin("/metrics");
    let ns_of = |svc: &str, ns: &str| {
        metric_sum(
            &m,
            "istio_requests_total",
            &[&format!("destination_service=\"{svc}\""), &format!("destination_service_namespace=\"{ns}\"")],
        )
    };
    assert_eq!(ns_of("reviews.default.svc.cluster.local", "default"), 4.0, "{m}");
    assert_eq!(ns_of("reviews.other.svc.cluster.local", "other"), 2.0, "{m}");

    // From namespace prod, `reviews` is prod's.
    let q = follower_in(&cp, "prod-1", "prod");
    wait_until("prod's proxy routes", || get(q.addr(), "reviews", "/", &[]).status == 200);
    assert_eq!(get(q.addr(), "reviews", "/", &[]).backend(), "prod");
    assert_eq!(get(q.addr(), "reviews.default", "/", &[]).backend(), "registered");

    // Deregistering names the namespace too; the default one stays.
    let out = cp.weft(&["deregister", "--service", "reviews", "--namespace", "prod", "--address", &prod.addr.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("prod's reviews is gone", || get(q.addr(), "reviews", "/", &[]).status == 404);
    assert_eq!(get(q.addr(), "reviews.default", "/", &[]).backend(), "registered");
    // A hostile namespace gets a clear error and stores nothing.
    for ns in ["Bad_NS", "a\nb", &"x".repeat(100)] {
        let out = cp.weft(&["register", "--service", "reviews", "--namespace", ns, "--address", "127.0.0.1:9"]);
        assert_eq!(out.status.code(), Some(1), "{ns:?}");
        assert!(text(&out).contains("namespace:"), "{}", text(&out));
    }
    assert!(!plane_raw(&cp, "GET", "/v1/registry", b"").1.contains("127.0.0.1:9\""));
}
