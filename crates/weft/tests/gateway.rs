//! `weft gateway`, Istio's ingress gateway, with Istio's own YAML unchanged (in
//! `tests/istio/`, sources in its README): bookinfo's gateway, httpbin's, the ingress
//! task's host-restricted one and the secure ingress task (SIMPLE, several hosts by
//! SNI, MUTUAL) with certificates made by the openssl CLI as the task makes them;
//! curl as the client. Also `httpsRedirect`, hostile ClientHellos, and the errors a
//! bad Gateway or credential gets from `weft validate` and at start.

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::ingress::*;
use common::*;

const BOOKINFO_GATEWAY: &str = include_str!("istio/bookinfo-gateway.yaml");
const HTTPBIN_GATEWAY: &str = include_str!("istio/httpbin-gateway.yaml");
const INGRESS_CONTROL: &str = include_str!("istio/ingress-control-httpbin.yaml");
const SECURE_SIMPLE: &str = include_str!("istio/secure-ingress-simple.yaml");
const SECURE_MULTIPLE: &str = include_str!("istio/secure-ingress-multiple-hosts.yaml");
const SECURE_MUTUAL: &str = include_str!("istio/secure-ingress-mutual.yaml");
const SNI_PASSTHROUGH: &str = include_str!("istio/ingress-sni-passthrough.yaml");

#[test]
fn bookinfo_through_the_gateway_and_not_through_a_sidecar() {
    let productpage = backend("productpage", &[]);
    // productpage as Kubernetes names it; bookinfo's `host: productpage` resolves to it.
    let se = service("productpage.default.svc.cluster.local", 9080, productpage.addr);
    let gw = gateway(&[BOOKINFO_GATEWAY, &se], None);
    let url = |p: &str| format!("http://{}{p}", gw.http());
    let (_, out, _) = curl(&["-i", &url("/productpage")]);
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("x-backend: productpage"), "{out}");
    for (path, want) in [("/static/app.js", "200"), ("/api/v1/products/1", "200"), ("/login", "200"), ("/other", "404"), ("/", "404")] {
        assert_eq!(curl_status(&[&url(path)]).1, want, "{path}");
    }
    // A client does not choose the scheme the backend is told.
    let (_, body, _) = curl(&["-H", "x-forwarded-proto: https", &url("/productpage")]);
    assert!(body.contains("\"x-forwarded-proto\":\"http\""), "{body}");
    // Any Host: the server admits "*" and so does the VirtualService.
    assert_eq!(curl_status(&["-H", "Host: bookinfo.example.com", &url("/productpage")]).1, "200");
    // No ServiceEntry default routes on a gateway: only bound VirtualServices route.
    assert_eq!(curl_status(&["-H", "Host: productpage:9080", &url("/other")]).1, "404");
    let ok = ["response_code=\"200\"", "destination_service=\"productpage.default.svc.cluster.local\""];
    assert_eq!(gw.metric("istio_requests_total", &ok, 6.0), 6.0, "the proxy's metrics, for the gateway's requests");

    // A sidecar given the same files does not take "*" for productpage.
    let sidecar = proxy(&format!("{BOOKINFO_GATEWAY}\n---\n{se}"));
    assert_eq!(get(sidecar.addr(), "bookinfo.example.com", "/productpage", &[]).status, 404);
    let r = get(sidecar.addr(), "productpage:9080", "/other", &[]);
    assert_eq!((r.status, r.backend()), (200, "productpage".into()), "the sidecar's own route to the ServiceEntry");
}

#[test]
fn httpbin_gateways_the_sample_and_the_ingress_task_restricted_to_its_host() {
    let httpbin = backend("httpbin", &[]);
    let se = service("httpbin", 8000, httpbin.addr);
    // samples/httpbin/httpbin-gateway.yaml: hosts "*", every path.
    let gw = gateway(&[HTTPBIN_GATEWAY, &se], None);
    let url = format!("http://{}/headers", gw.http());
    assert_eq!(curl_status(&["-H", "Host: anything.example.com", &url]).1, "200");
    drop(gw);

    // The ingress task: httpbin.example.com only, /status and /delay only.
    let gw = gateway(&[INGRESS_CONTROL, &se], None);
    let at = |host: &str, path: &str| curl_status(&["-s", "-I", "-H", &format!("Host:{host}"), &format!("http://{}{path}", gw.http())]).1;
    assert_eq!(at("httpbin.example.com", "/status/200"), "200");
    assert_eq!(at("httpbin.example.com", "/status/418"), "418", "httpbin's answer, passed through");
    assert_eq!(at("httpbin.example.com", "/headers"), "404", "the task's own 404");
    assert_eq!(at("other.example.com", "/status/200"), "404", "a host the Gateway server does not admit");
    // The HTTPS listener has no servers here: nothing is served on it.
    let (code, _, _) = curl_status(&[
        "-k",
        "--resolve",
        &format!("httpbin.example.com:{0}:127.0.0.1", gw.https.port()),
        &format!("https://httpbin.example.com:{}/status/200", gw.https.port()),
    ]);
    assert_ne!(code, 0);
}

#[test]
fn secure_ingress_simple_several_hosts_by_sni_and_mutual() {
    let certs = Certs::make();
    let httpbin = backend("httpbin", &[]);
    let helloworld = backend("helloworld", &[]);
    let services = format!("{}---\n{}", service("httpbin", 8000, httpbin.addr), service("helloworld", 5000, helloworld.addr));

    // SIMPLE, one host.
    let creds = certs.credentials(&[("httpbin-credential", "httpbin.example.com", false)]);
    let gw = gateway(&[SECURE_SIMPLE, &services], Some(&creds));
    let (code, status, err) = secure(&certs, &gw, "httpbin.example.com", "/status/418", &[]);
    assert_eq!((code, status.as_str()), (0, "418"), "{err}");
    assert_eq!(gw.metric("istio_requests_total", &["response_code=\"418\"", "destination_service=\"httpbin\""], 1.0), 1.0);
    // Over HTTP/2 (ALPN h2, as the task's curl shows) and HTTP/1.1 alike.
    let (_, _, verbose) = secure(&certs, &gw, "httpbin.example.com", "/status/418", &["-v"]);
    assert!(verbose.contains("HTTP/2 418"), "{verbose}");
    assert_eq!(secure(&certs, &gw, "httpbin.example.com", "/status/200", &["--http1.1"]).1, "200");
    // The edge's headers: the scheme the client used; no client-sent certificate details.
    let (_, body, _) = curl(&[
        "--resolve",
        &format!("httpbin.example.com:{}:127.0.0.1", gw.https.port()),
        "--cacert",
        &certs.path("example.com.crt"),
        "-H",
        "x-forwarded-proto: http",
        "-H",
        "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://evil",
        &format!("https://httpbin.example.com:{}/status/200", gw.https.port()),
    ]);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{body}");
    assert!(echo["headers"].get("x-forwarded-client-cert").is_none(), "{body}");
    // Routes of the VirtualService only; the HTTP listener serves no server here.
    assert_eq!(secure(&certs, &gw, "httpbin.example.com", "/headers", &[]).1, "404");
    assert_eq!(curl_status(&["-H", "Host: httpbin.example.com", &format!("http://{}/status/200", gw.http())]).1, "404");
    drop(gw);

    // Two servers on one port, each its own credential, chosen by SNI.
    let creds = certs
        .credentials(&[("httpbin-credential", "httpbin.example.com", false), ("helloworld-credential", "helloworld.example.com", false)]);
    // (The task applies the two-server Gateway over the first; httpbin's VirtualService stays.)
    let gw = gateway(&[SECURE_MULTIPLE, SECURE_SIMPLE.split("---").nth(1).unwrap_or(""), &services], Some(&creds));
    let (code, status, err) = secure(&certs, &gw, "helloworld.example.com", "/hello", &[]);
    assert_eq!((code, status.as_str()), (0, "200"), "{err}");
    assert_eq!(secure(&certs, &gw, "httpbin.example.com", "/status/418", &[]).1, "418");
    let (_, _, verbose) = secure(&certs, &gw, "helloworld.example.com", "/hello", &["-v"]);
    assert!(verbose.contains("CN=helloworld.example.com") || verbose.contains("CN = helloworld.example.com"), "{verbose}");
    // A connection whose SNI chose httpbin's server cannot reach helloworld's hosts.
    let port = gw.https.port();
    let (_, status, _) = curl_status(&[
        "--resolve",
        &format!("httpbin.example.com:{port}:127.0.0.1"),
        "--cacert",
        &certs.path("example.com.crt"),
        "-H",
        "Host: helloworld.example.com",
        &format!("https://httpbin.example.com:{port}/hello"),
    ]);
    assert_eq!(status, "404");
    // No SNI (an IP address in the URL) or an unknown one: no server, closed.
    let (code, _, _) = curl_status(&["-k", &format!("https://127.0.0.1:{port}/hello")]);
    assert_ne!(code, 0);
    let (code, _, _) = curl_status(&[
        "-k",
        "--resolve",
        &format!("other.example.com:{port}:127.0.0.1"),
        &format!("https://other.example.com:{port}/hello"),
    ]);
    assert_ne!(code, 0);
    drop(gw);

    // MUTUAL: the client must present a certificate the credential's ca.crt signed.
    let creds = certs.credentials(&[("httpbin-credential", "httpbin.example.com", true)]);
    let gw = gateway(&[SECURE_MUTUAL, SECURE_SIMPLE.split("---").nth(1).unwrap_or(""), &services], Some(&creds));
    let (code, _, err) = secure(&certs, &gw, "httpbin.example.com", "/status/418", &[]);
    assert_ne!(code, 0, "no client certificate: refused ({err})");
    let (cert, key) = (certs.path("client.example.com.crt"), certs.path("client.example.com.key"));
    let (code, status, err) = secure(&certs, &gw, "httpbin.example.com", "/status/418", &["--cert", &cert, "--key", &key]);
    assert_eq!((code, status.as_str()), (0, "418"), "{err}");
    // A client certificate from another CA is refused too.
    let other = Certs::make();
    let (cert, key) = (other.path("client.example.com.crt"), other.path("client.example.com.key"));
    let (code, _, _) = secure(&certs, &gw, "httpbin.example.com", "/status/418", &["--cert", &cert, "--key", &key]);
    assert_ne!(code, 0);
}

/// A gateway following a control plane compiles what it receives for its role, as
/// from files: the bookinfo gateway applied to the control plane is served, also when
/// a Sidecar scopes the namespace (Gateways name no host; every proxy gets them).
#[test]
fn a_gateway_follows_a_control_plane() {
    let productpage = backend("productpage", &[]);
    let cp = plane();
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  egress:\n  - hosts: [\"./*\"]\n";
    let out =
        cp.apply("bookinfo.yaml", &format!("{sidecar}---\n{BOOKINFO_GATEWAY}\n---\n{}", service("productpage", 9080, productpage.addr)));
    assert!(out.status.success(), "{}", text(&out));
    let (token, ca) = (cp.admin_token_file(), cp.ca_file());
    let url = cp.url();
    let p = spawn(&[
        "gateway",
        "--control-plane",
        &url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--node",
        "ingress",
        "--listen",
        "127.0.0.1:0",
        "--gateway-labels",
        "istio=ingressgateway",
    ]);
    let url = format!("http://{}/productpage", p.addr);
    wait_until("the gateway serves /productpage", || curl_status(&["-H", "Host: bookinfo.example.com", &url]).1 == "200");
    assert_eq!(curl_status(&[&format!("http://{}/other", p.addr)]).1, "404");
}

/// The secure ingress task's rotation: the secret replaced by one from another CA; the
/// gateway reads the credential files again on SIGHUP (as on any reload).
#[test]
fn a_credential_replaced_is_served_after_sighup() {
    let (first, second) = (Certs::make(), Certs::make());
    let httpbin = backend("httpbin", &[]);
    let creds = first.credentials(&[("httpbin-credential", "httpbin.example.com", false)]);
    let gw = gateway(&[SECURE_SIMPLE, &service("httpbin", 8000, httpbin.addr)], Some(&creds));
    assert_eq!(secure(&first, &gw, "httpbin.example.com", "/status/418", &[]).1, "418");
    for f in ["crt", "key"] {
        std::fs::copy(second.dir.join(format!("httpbin.example.com.{f}")), creds.join(format!("httpbin-credential/tls.{f}"))).unwrap();
    }
    let before = gw.metric("weft_config_revision", &[], 0.0);
    gw.p.signal("HUP");
    assert_eq!(gw.metric("weft_config_revision", &[], before + 1.0), before + 1.0, "{}", gw.p.log_text());
    assert_eq!(secure(&second, &gw, "httpbin.example.com", "/status/418", &[]).1, "418");
    let (code, _, _) = secure(&first, &gw, "httpbin.example.com", "/status/418", &[]);
    assert_ne!(code, 0, "the old CA no longer verifies the gateway");
}

/// The SNI passthrough task: the gateway never terminates; the TLS server behind it
/// (`openssl s_server`, for the task's nginx) presents its own certificate.
#[test]
fn sni_passthrough_reaches_the_tls_server_behind_the_gateway() {
    let certs = Certs::make();
    let dir = &certs.dir;
    openssl(
        dir,
        &[
            "req",
            "-out",
            "nginx.example.com.csr",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "nginx.example.com.key",
            "-subj",
            "/CN=nginx.example.com/O=some organization",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            "example.com.crt",
            "-CAkey",
            "example.com.key",
            "-set_serial",
            "0",
            "-in",
            "nginx.example.com.csr",
            "-out",
            "nginx.example.com.crt",
        ],
    );
    let nginx = free_addr();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &nginx.to_string(),
            "-cert",
            "nginx.example.com.crt",
            "-key",
            "nginx.example.com.key",
            "-www",
            "-quiet",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_until("openssl s_server listening", || TcpStream::connect(nginx).is_ok());
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: my-nginx}}\nspec:\n  hosts: [my-nginx]\n  resolution: STATIC\n  ports: [{{number: 443, name: https, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{https: {}}}}}]\n",
        nginx.port()
    );
    let gw = gateway(&[SNI_PASSTHROUGH, &se], None);
    let port = gw.https.port();
    let resolve = format!("nginx.example.com:{port}:127.0.0.1");
    let (code, out, err) =
        curl(&["-v", "--resolve", &resolve, "--cacert", &certs.path("example.com.crt"), &format!("https://nginx.example.com:{port}")]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("CN=nginx.example.com"), "the backend's own certificate: {err}");
    assert!(out.contains("s_server"), "{out}");
}

/// `tls.httpsRedirect` as the Gateway reference documents it (istio/api
/// `networking/v1alpha3/gateway.proto`'s example): the HTTP server answers 301 to https.
#[test]
fn https_redirect_answers_301_to_https() {
    let certs = Certs::make();
    let httpbin = backend("httpbin", &[]);
    let gateway_yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - httpbin.example.com
    tls:
      httpsRedirect: true # sends 301 redirect for http requests
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
"#;
    let vs = SECURE_SIMPLE.split("---").nth(1).unwrap_or("");
    let creds = certs.credentials(&[("httpbin-credential", "httpbin.example.com", false)]);
    let gw = gateway(&[gateway_yaml, vs, &service("httpbin", 8000, httpbin.addr)], Some(&creds));
    let (_, out, _) = curl(&["-i", "-H", "Host: httpbin.example.com", &format!("http://{}/status/418?x=1", gw.http())]);
    assert!(out.starts_with("HTTP/1.1 301"), "{out}");
    assert!(out.contains("location: https://httpbin.example.com/status/418?x=1"), "{out}");
    assert_eq!(curl_status(&["-H", "Host: other.example.com", &format!("http://{}/status/418", gw.http())]).1, "404");
    assert_eq!(secure(&certs, &gw, "httpbin.example.com", "/status/418", &[]).1, "418");
}

#[test]
fn hostile_client_hellos_are_closed_and_the_gateway_goes_on() {
    let certs = Certs::make();
    let httpbin = backend("httpbin", &[]);
    let creds = certs.credentials(&[("httpbin-credential", "httpbin.example.com", false)]);
    let gw = gateway(&[SECURE_SIMPLE, &service("httpbin", 8000, httpbin.addr)], Some(&creds));
    for (what, bytes) in [
        ("a 40 KiB SNI over three records", client_hello(40 * 1024)),
        ("a 300-byte SNI", client_hello(300)),
        ("an SNI no server takes", client_hello(10)),
        ("plain HTTP on the TLS port", b"GET / HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n".to_vec()),
        ("a record header claiming 64 KiB", vec![0x16, 3, 1, 0xff, 0xff]),
    ] {
        assert!(closed_after(gw.https, &bytes), "{what}");
    }
    assert_eq!(secure(&certs, &gw, "httpbin.example.com", "/status/418", &[]).1, "418", "still serving");
}

/// `weft validate` (as a sidecar, and as a gateway with --gateway-labels) and `weft
/// gateway`'s start refuse bad Gateways and credentials, naming the field.
#[test]
fn bad_gateways_and_credentials_are_refused_naming_the_field() {
    let dir = temp_dir();
    let run = |args: &[&str]| {
        let o = Command::new(weft()).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let file = |name: &str, text: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        f.display().to_string()
    };
    let no_servers = file("none.yaml", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers: []\n");
    let (code, err) = run(&["validate", "-f", &no_servers]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Gateway gw: spec.servers: at least one server is required"), "{err}");
    let bad_port = file("port.yaml", &BOOKINFO_GATEWAY.replace("number: 8080", "number: 80800"));
    let (code, err) = run(&["validate", "-f", &bad_port]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Gateway bookinfo-gateway: spec.servers[0].port.number: port 80800 out of range"), "{err}");

    let good = file("bookinfo.yaml", BOOKINFO_GATEWAY);
    let o = Command::new(weft()).args(["validate", "-f", &good, "--gateway-labels", "istio=ingressgateway"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 resources OK: a gateway with 1 HTTP hosts, 0 TLS servers"), "{}", text(&o));

    // The secure task's Gateway is valid Istio; a gateway must find its credential.
    let simple = file("simple.yaml", SECURE_SIMPLE);
    assert_eq!(run(&["validate", "-f", &simple]).0, Some(0));
    let empty = temp_dir();
    let creds = empty.display().to_string();
    let labels = ["--gateway-labels", "istio=ingressgateway", "--credentials-dir", &creds];
    let (code, err) = run(&[&["validate", "-f", &simple][..], &labels].concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("Gateway mygateway: spec.servers[0].tls.credentialName: no credential \"httpbin-credential\""), "{err}");
    let start = |extra: &[&str]| {
        run(&[&["gateway", "--config", &simple, "--listen", "127.0.0.1:0", "--https", "127.0.0.1:0"][..], &labels, extra].concat())
    };
    let (code, err) = start(&[]);
    assert_eq!(code, Some(1), "the gateway does not start: {err}");
    assert!(err.contains("spec.servers[0].tls.credentialName"), "{err}");
    // Malformed: a certificate that is not PEM, then a key that is not this certificate's.
    let secret = empty.join("httpbin-credential");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("tls.crt"), "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(secret.join("tls.key"), "garbage").unwrap();
    let (code, err) = start(&[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("spec.servers[0].tls.credentialName") && err.contains("tls.crt"), "{err}");
    let certs = Certs::make();
    std::fs::copy(certs.dir.join("httpbin.example.com.crt"), secret.join("tls.crt")).unwrap();
    std::fs::copy(certs.dir.join("helloworld.example.com.key"), secret.join("tls.key")).unwrap();
    let (code, err) = start(&[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("spec.servers[0].tls.credentialName") && err.contains("does not go with the certificate"), "{err}");
    // ISTIO_MUTUAL takes no credential (the gateway's mesh identity is used:
    // gateway_mesh.rs): valid for a sidecar's and a gateway's validation alike.
    let mesh = file(
        "mesh.yaml",
        &SECURE_MUTUAL
            .replace("mode: MUTUAL", "mode: ISTIO_MUTUAL")
            .replace("credentialName: httpbin-credential # must be the same as secret", ""),
    );
    assert_eq!(run(&["validate", "-f", &mesh]).0, Some(0));
    assert_eq!(run(&["validate", "-f", &mesh, "--gateway-labels", "istio=ingressgateway"]).0, Some(0));
}
