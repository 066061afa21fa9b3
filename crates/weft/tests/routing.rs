//! VirtualService behaviour through a real proxy: matching, weights, subsets,
//! rewrites, redirects, direct responses, header operations, mirroring, timeouts,
//! and the 404/503 answers.

mod common;
use common::*;

struct Mesh {
    _b: Vec<Proc>,
    p: Proxy,
}

fn mesh(vs: &str) -> Mesh {
    let v1 = backend("v1", &[]);
    let v2 = backend("v2", &[]);
    let shadow = backend("shadow", &[]);
    let mut cfg = service_entry("reviews", &[(v1.addr, "version: v1", 1), (v2.addr, "version: v2", 1)]);
    cfg += &service_entry("shadow", &[(shadow.addr, "app: shadow", 1)]).replace("apiVersion", "---\napiVersion");
    cfg += "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
    cfg += "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: empty}\nspec:\n  hosts: [empty.svc]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n";
    cfg += vs;
    Mesh { _b: vec![v1, v2, shadow], p: proxy(&cfg) }
}

const VS: &str = r#"---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews, reviews.example.com]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: not-beta
    match: [{uri: {prefix: /beta}, withoutHeaders: {x-beta: {}}}]
    directResponse: {status: 403, body: {string: "beta needs x-beta\n"}}
  - name: query
    match: [{queryParams: {v: {exact: "2"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: post-only
    match: [{uri: {exact: /submit}, method: {exact: POST}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: regex-and-case
    match: [{uri: {regex: "/items/[0-9]+"}}, {uri: {exact: /CASE}, ignoreUriCase: true}]
    headers: {response: {set: {x-route: regex}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rewrite
    match: [{uri: {prefix: /api/}}]
    rewrite: {uri: /v1/, authority: internal.reviews}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: moved
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - name: headers
    match: [{uri: {prefix: /hdr}}]
    headers:
      request: {set: {x-set: s}, add: {x-added: a}, remove: [x-drop]}
      response: {set: {x-resp: r}, remove: [x-backend-extra]}
    route: [{destination: {host: reviews, subset: v1}, headers: {response: {add: {x-dest: v1}}}}]
  - name: slow
    match: [{uri: {prefix: /slow}}]
    timeout: 0.2s
    route: [{destination: {host: reviews, subset: v1}}]
  - name: mirrored
    match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100.0}
  - name: nowhere
    match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: empty.svc}}]
  - name: split
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"#;

#[test]
fn matches_pick_the_first_route_that_matches() {
    let m = mesh(VS);
    let a = m.p.addr();
    assert_eq!(get(a, "reviews", "/", &[("end-user", "jason")]).backend(), "v2");
    assert_eq!(get(a, "REVIEWS:80", "/", &[("end-user", "jason")]).backend(), "v2", "host match ignores case and port");
    assert_eq!(get(a, "reviews", "/?a=1&v=2", &[]).backend(), "v2");
    assert_eq!(get(a, "reviews", "/items/42", &[]).backend(), "v2");
    assert_eq!(get(a, "reviews", "/items/42", &[]).header("x-route"), Some("regex"));
    assert_eq!(get(a, "reviews", "/items/42/x", &[]).header("x-route"), None, "regex is anchored: falls to the split");
    assert_eq!(get(a, "reviews", "/case", &[]).backend(), "v2");
    let r = get(a, "reviews", "/beta/x", &[]);
    assert_eq!((r.status, r.text().as_str()), (403, "beta needs x-beta\n"));
    assert_eq!(get(a, "reviews", "/beta/x", &[("x-beta", "1")]).status, 200);
    assert_eq!(Client::connect(a).request("POST", "reviews", "/submit", &[], b"x").backend(), "v2");
}

#[test]
fn weights_split_within_3_percent() {
    let m = mesh(VS);
    let got = spread(m.p.addr(), "reviews.example.com", 10_000, &[]);
    assert_shares(&got, &[("v1", 0.9), ("v2", 0.1)], 0.03);
}

#[test]
fn rewrite_redirect_and_header_operations() {
    let m = mesh(VS);
    let a = m.p.addr();
    let r = get(a, "reviews", "/api/list?x=1", &[]);
    let j = r.json();
    assert_eq!(j["path"], "/v1/list?x=1");
    assert_eq!(j["headers"]["host"], "internal.reviews");

    let r = get(a, "reviews", "/old/page", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://new.example.com/new"));

    let r = get(a, "reviews", "/hdr", &[("x-drop", "1"), ("x-added", "0")]);
    let j = r.json();
    assert_eq!(j["headers"]["x-set"], "s");
    assert!(j["headers"].get("x-drop").is_none());
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("x-dest"), Some("v1"));
}

#[test]
fn mirror_copies_requests_with_bodies() {
    let m = mesh(VS);
    let shadow = m._b[2].addr;
    let mut c = Client::connect(m.p.addr());
    for i in 0..20 {
        let r = c.request("POST", "reviews", "/mirror", &[], format!("body {i}").as_bytes());
        assert_eq!(r.backend(), "v1");
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n: u64 = get(shadow, "x", "/_served", &[]).text().trim().parse().unwrap();
        if n == 20 {
            break;
        }
        assert!(std::time::Instant::now() < end, "shadow saw {n} of 20 mirrored requests");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(m.p.metric("weft_mirrored_requests_total", &[]), 20.0);
}

#[test]
fn timeout_answers_504_and_unknown_hosts_404_and_empty_clusters_503() {
    let m = mesh(VS);
    let a = m.p.addr();
    let t = std::time::Instant::now();
    let r = get(a, "reviews", "/slow", &[("x-delay-ms", "2000")]);
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < std::time::Duration::from_millis(1500), "{:?}", t.elapsed());
    assert_eq!(get(a, "reviews", "/slow", &[]).status, 200);

    let r = get(a, "nosuch.example", "/", &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nosuch.example"), "{}", r.text());
    let r = get(a, "reviews", "/empty", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no healthy upstream"), "{}", r.text());

    assert_eq!(m.p.metric("istio_requests_total", &["response_code=\"404\"", "response_flags=\"NR\""]), 1.0);
    assert_eq!(
        m.p.metric("istio_requests_total", &["response_code=\"503\"", "response_flags=\"UH\"", "destination_service=\"empty.svc\""]),
        1.0
    );
    assert_eq!(m.p.metric("istio_requests_total", &["response_code=\"504\"", "response_flags=\"UT\""]), 1.0);
    assert_eq!(m.p.metric("weft_no_route_total", &[]), 1.0);
    assert!(m.p.metric("istio_request_duration_milliseconds_count", &["destination_service=\"reviews\"", "response_code=\"200\""]) >= 1.0);
}

#[test]
fn curl_h2_prior_knowledge_and_absolute_form_and_connect() {
    let m = mesh(VS);
    let a = m.p.addr().to_string();
    let (rc, out, err) =
        curl(&["--http2-prior-knowledge", "-H", "end-user: jason", "-H", "Host: reviews", "-D", "-", &format!("http://{a}/")]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-backend: v2"), "{out}");
    // HTTP_PROXY style: absolute-form request line.
    let (rc, out, err) = curl(&["-x", &format!("http://{a}"), "-H", "end-user: jason", "-D", "-", "http://reviews/"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("x-backend: v2"), "{out}");
    // CONNECT tunnel through the proxy to the service, then HTTP inside it.
    let (rc, out, err) = curl(&["-p", "-x", &format!("http://{a}"), "-H", "end-user: jason", "-D", "-", "http://reviews:80/tunnel"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("\"path\":\"/tunnel\""), "{out}");
}

#[test]
fn websocket_upgrade_tunnels_bytes() {
    use std::io::{Read, Write};
    let m = mesh(VS);
    let mut c = Client::connect(m.p.addr());
    let r = c.raw(b"GET /ws HTTP/1.1\r\nhost: reviews\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", false);
    assert_eq!(r.status, 101, "{}", r.text());
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let s = c.stream();
    s.write_all(b"hello through the mesh").unwrap();
    let mut buf = [0u8; 22];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello through the mesh");
}
