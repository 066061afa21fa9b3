//! Retries and fault injection through a real proxy, against real backends and dead ports.
//! Tests of timing alone (per-try and route timeouts, hedging, fault delays) run on a
//! simulated clock in weft-proxy's own tests (`crates/proxy/tests/`).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn dead_addr() -> std::net::SocketAddr {
    // Bound then dropped: nothing listens there.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn vs(host: &str, http_extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n{http_extra}"
    )
}

#[test]
fn default_retries_route_around_a_dead_endpoint() {
    let live = backend("live", &[]);
    let p = proxy(&service_entry("svc", &[(live.addr, "v: a", 1), (dead_addr(), "v: b", 1)]));
    for i in 0..100 {
        let r = get(p.addr(), "svc", "/", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.backend(), "live");
    }
    // About half the first tries (LEAST_REQUEST, Istio's default) go to the dead endpoint; each is retried on the live one.
    let retries = p.metric("weft_upstream_retries_total", &[]);
    assert!((25.0..=75.0).contains(&retries), "{retries} retries");
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"200\""]), 100.0);
}

#[test]
fn retry_on_5xx_goes_to_another_endpoint_and_attempts_zero_disables() {
    let failing = backend("failing", &["--error-rate", "1"]);
    let good = backend("good", &[]);
    let se = service_entry("svc", &[(failing.addr, "v: a", 1), (good.addr, "v: b", 1)]);
    let p = proxy(&(se.clone() + &vs("svc", "    retries: {attempts: 2, retryOn: 5xx}\n")));
    for _ in 0..40 {
        let r = get(p.addr(), "svc", "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "good".to_string()));
    }
    // Half the first tries land on the failing endpoint: Binomial(40, ½) ≥ 8 but for
    // odds of ~1e-5 (≥ 15, as before, failed one run in 25).
    assert!(p.metric("weft_upstream_retries_total", &[]) >= 8.0);

    let p = proxy(&(se + &vs("svc", "    retries: {attempts: 0}\n")));
    let failed = (0..40).filter(|_| get(p.addr(), "svc", "/", &[]).status == 503).count();
    assert!((8..=32).contains(&failed), "without retries the failing endpoint's share comes back as 503: {failed} of 40");
    assert_eq!(p.metric("weft_upstream_retries_total", &[]), 0.0);
}

#[test]
fn request_bodies_are_replayed_on_retry_while_they_fit_the_buffer() {
    let failing = backend("failing", &["--error-rate", "1"]);
    let good = backend("good", &[]);
    let se = service_entry("svc", &[(failing.addr, "v: a", 1), (good.addr, "v: b", 1), (dead_addr(), "v: c", 1)]);
    let p = proxy(&(se + &vs("svc", "    retries: {attempts: 4, retryOn: \"5xx,connect-failure\"}\n")));
    let mut c = Client::connect(p.addr());
    for i in 0..30 {
        let body: Vec<u8> = (0..10_000u32).map(|k| b'a' + ((k + i) % 26) as u8).collect();
        let r = c.request("POST", "svc", "/echo", &[], &body);
        assert_eq!(
            r.status,
            200,
            "request {i}: {} {}",
            r.text(),
            p.admin("/metrics")
                .lines()
                .filter(|l| l.starts_with("weft_retr") || l.starts_with("weft_upstream_retries"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(r.body, body, "request {i}: the body arrives whole after retries");
    }
    assert!(p.metric("weft_upstream_retries_total", &[]) >= 10.0);
    // Chunked, of no declared length, the same.
    let body = "x".repeat(5000);
    for _ in 0..10 {
        let (code, out, err) = curl(&[
            "-s",
            "-H",
            "host: svc",
            "-H",
            "transfer-encoding: chunked",
            "--data-binary",
            &body,
            &format!("http://{}/echo", p.addr()),
        ]);
        assert_eq!((code, out.len()), (0, 5000), "{err}");
    }
    // Beyond the 64 KiB buffer a body streams through once: the failing endpoint's answers come back.
    // (curl, since an early 503 may close the connection while the body is still going out.)
    let big = temp_dir().join("big.bin");
    std::fs::write(&big, vec![b'z'; 100_000]).unwrap();
    let data = format!("@{}", big.display());
    let url = format!("http://{}/echo", p.addr());
    let statuses: Vec<String> = (0..30)
        .map(|_| curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "host: svc", "--data-binary", &data, &url]).1)
        .collect();
    assert!(statuses.iter().any(|s| s == "200") && statuses.iter().any(|s| s == "503"), "{statuses:?}");
    assert!(p.metric("weft_retry_body_unreplayable_total", &[]) >= 1.0);
}

#[test]
fn fault_aborts_by_percentage_and_with_a_grpc_status() {
    let b = backend("b", &[]);
    let se = service_entry("svc", &[(b.addr, "v: a", 1)]);
    let p = proxy(&(se.clone() + &vs("svc", "    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}\n")));
    let aborted = (0..400).filter(|_| get(p.addr(), "svc", "/", &[]).status == 418).count();
    assert!((160..=240).contains(&aborted), "{aborted} of 400 aborted at 50 %");
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"418\"", "response_flags=\"FI\""]), aborted as f64);
    assert_eq!(p.metric("weft_fault_aborts_total", &[]), aborted as f64);

    let p = proxy(&(se + &vs("svc", "    fault: {abort: {grpcStatus: UNAVAILABLE}}\n")));
    let r = get(p.addr(), "svc", "/pkg.Svc/Call", &[("content-type", "application/grpc")]);
    assert_eq!((r.status, r.header("grpc-status"), r.header("content-type")), (200, Some("14"), Some("application/grpc")));
}

#[test]
fn outlier_detection_ejects_a_dead_endpoint_and_readmits_it() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let dead = dead_addr();
    let se = service_entry("svc", &[(a.addr, "v: a", 1), (b.addr, "v: b", 1), (dead, "v: c", 1)]);
    let dr = destination_rule(
        "svc",
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}}",
    );
    let p = proxy(&(se + &dr));
    for i in 0..60 {
        assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200, "request {i}");
    }
    // Two connect failures (each retried on a live endpoint), then no traffic to it: 2 retries, not ~20.
    assert_eq!(p.metric("weft_outlier_ejections_total", &[]), 1.0);
    assert_eq!(p.metric("weft_upstream_retries_total", &[]), 2.0);
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let ep = clusters["clusters"][0]["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == dead.to_string()).unwrap().clone();
    assert_eq!((ep["health"].as_str(), ep["ejection"]["reason"].as_str()), (Some("EJECTED"), Some("consecutive_5xx")), "{ep}");

    // It comes back; after baseEjectionTime it gets its share again.
    let _c = spawn(&["backend", "--listen", &dead.to_string(), "--name", "c"]);
    std::thread::sleep(Duration::from_millis(1100));
    let spread = spread(p.addr(), "svc", 60, &[]);
    assert_eq!(spread.get("c"), Some(&20), "{spread:?}");
}

/// `weft validate` on a ServiceEntry for `svc` plus `doc`: asserts exit 1 and returns stderr.
fn invalid(name: &str, doc: &str) -> String {
    let file = temp_dir().join(name);
    std::fs::write(&file, service_entry("svc", &[("127.0.0.1:9".parse().unwrap(), "v: a", 1)]) + doc).unwrap();
    let out = std::process::Command::new(weft()).args(["validate", "-f", file.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

fn rate_limit(host: &str, spec: &str) -> String {
    format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {{name: {host}-limit}}\nspec:\n  host: {host}\n{spec}")
}

#[test]
fn token_bucket_answers_429_with_retry_after_beyond_its_rate() {
    let b = backend("b", &[]);
    let se = service_entry("svc", &[(b.addr, "v: a", 1)]);
    let limit =
        rate_limit("svc", "  match: [{uri: {prefix: /api}}]\n  tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 60s}\n");
    let p = proxy(&(se + &limit));
    let statuses: Vec<u16> = (0..30).map(|_| get(p.addr(), "svc", "/api/x", &[]).status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    let r = get(p.addr(), "svc", "/api/x", &[]);
    assert_eq!(r.status, 429);
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(r.text().contains("RateLimit/svc-limit"), "{}", r.text());
    // Requests the match leaves out are not limited.
    assert_eq!(get(p.addr(), "svc", "/other", &[]).status, 200);
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"429\"", "response_flags=\"RL\""]), 21.0);
    assert_eq!(p.metric("weft_rate_limited_total", &[]), 21.0);
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(weft()).arg("bench").args(args).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn adaptive_concurrency_sheds_the_excess_instead_of_queueing_it() {
    // Four requests at a time, 20 ms each: 200 requests/s, offered 40 at once.
    let b = backend("b", &["--latency", "20ms", "--capacity", "4"]);
    let se = service_entry("svc", &[(b.addr, "v: a", 1)]);
    let url = |p: &Proxy| format!("http://{}/", p.addr());
    let load = ["-c", "40", "-z", "2s", "--host", "svc"];

    let plain = proxy(&(se.clone() + &vs("svc", "    retries: {attempts: 0}\n")));
    let queued = bench_json(&[&[url(&plain).as_str()][..], &load[..]].concat());
    let queued_p50 = queued["latency_us"]["p50"].as_f64().unwrap();
    assert!(queued_p50 > 120_000.0, "without a limit every request queues at the backend: p50 {queued_p50} µs");
    drop(plain);

    let ac = rate_limit("svc", "  adaptiveConcurrency: {minRttSamples: 20, sampleWindow: 50ms}\n");
    let p = proxy(&(se + &vs("svc", "    retries: {attempts: 0}\n") + &ac));
    let shed = bench_json(&[&[url(&p).as_str()][..], &load[..]].concat());
    let ok = shed["status_codes"]["200"].as_f64().unwrap_or(0.0);
    let refused = shed["status_codes"]["503"].as_f64().unwrap_or(0.0);
    assert!(ok > 250.0 && refused > 100.0, "{}", shed["status_codes"]);
    assert_eq!(p.metric("weft_adaptive_concurrency_shed_total", &[]), refused);
    assert_eq!(p.metric("istio_requests_total", &["response_flags=\"UO\""]), refused);
    // The admitted requests wait little: the slowest ones stay well under the queue's 200 ms.
    let p99 = shed["latency_us"]["p99"].as_f64().unwrap();
    assert!(p99 < 100_000.0, "p99 {p99} µs with the limit");
}

#[test]
fn rate_limit_config_errors_name_the_field() {
    for (spec, want) in [
        ("  tokenBucket: {maxTokens: 0, fillInterval: 1s}\n", "spec.tokenBucket.maxTokens: must be at least 1"),
        ("  tokenBucket: {maxTokens: 5}\n", "spec.tokenBucket.fillInterval: must be at least 1ms"),
        ("  leakyBucket: {rate: 0, queue: 5}\n", "spec.leakyBucket.rate: 0 is not a positive number of requests per second"),
        (
            "  adaptiveConcurrency: {minConcurrency: 10, maxConcurrency: 5}\n",
            "spec.adaptiveConcurrency.maxConcurrency: 5 is below minConcurrency 10",
        ),
        ("  adaptiveConcurrency: {minRttInterval: 10ms}\n", "spec.adaptiveConcurrency.minRttInterval: must be at least 1s"),
        ("  adaptiveConcurrency: {limit: 5}\n", "spec.adaptiveConcurrency.limit: unknown field `limit`"),
        (
            "  tokenBucket: {maxTokens: 5, fillInterval: 1s}\n  leakyBucket: {rate: 5}\n",
            "spec: only one of tokenBucket, leakyBucket or adaptiveConcurrency may be set",
        ),
    ] {
        let err = invalid("rl.yaml", &rate_limit("svc", spec));
        assert!(err.contains(&format!("rl.yaml: RateLimit svc-limit: {want}")), "{err}");
    }
}

/// Sends `n` requests at once; returns their statuses, sorted.
fn concurrent(addr: std::net::SocketAddr, n: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..n).map(|_| std::thread::spawn(move || get(addr, "svc", "/", &[]).status)).collect();
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort();
    statuses
}

#[test]
fn circuit_breakers_overflow_with_uo() {
    let slow = backend("slow", &["--latency", "500ms"]);
    let se = service_entry("svc", &[(slow.addr, "v: a", 1)]);
    let p = proxy(&(se.clone() + &destination_rule("svc", "{connectionPool: {http: {http2MaxRequests: 2}}}")));
    assert_eq!(concurrent(p.addr(), 6), vec![200, 200, 503, 503, 503, 503]);
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"503\"", "response_flags=\"UO\""]), 4.0);
    assert_eq!(p.metric("weft_upstream_overflow_total", &[]), 4.0);
    // The slots come back when requests end.
    assert_eq!(concurrent(p.addr(), 2), vec![200, 200]);

    // One connection, one request may wait for it: the third overflows; the second is served after the first.
    let policy = "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}";
    let p = proxy(&(se + &destination_rule("svc", policy)));
    let t = Instant::now();
    assert_eq!(concurrent(p.addr(), 3), vec![200, 200, 503]);
    assert!(t.elapsed() >= Duration::from_millis(1000), "the waiting request went after the first: {:?}", t.elapsed());
    assert_eq!(p.metric("weft_upstream_overflow_total", &[]), 1.0);
}

#[test]
fn max_retries_and_the_retry_budget_cap_retries_in_flight() {
    let failing = backend("failing", &["--error-rate", "1", "--latency", "300ms"]);
    let se = service_entry("svc", &[(failing.addr, "v: a", 1)]);
    let vs = vs("svc", "    retries: {attempts: 2, retryOn: 5xx}\n");
    for policy in ["{connectionPool: {http: {maxRetries: 1}}}", "{retryBudget: {percent: 0, minRetryConcurrency: 1}}"] {
        let p = proxy(&(se.clone() + &destination_rule("svc", policy) + &vs));
        // Four requests fail together; with one retry slot most of their 8 retries are not made
        // (typically one request retries twice and three not at all).
        assert_eq!(concurrent(p.addr(), 4), vec![503, 503, 503, 503], "{policy}");
        let (made, refused) = (p.metric("weft_upstream_retries_total", &[]), p.metric("weft_retry_overflow_total", &[]));
        assert!(made <= 4.0 && refused >= 2.0, "{policy}: {made} retries made, {refused} refused");
    }
}

#[test]
fn leaky_bucket_spaces_requests_and_refuses_beyond_its_queue() {
    let b = backend("b", &[]);
    let se = service_entry("svc", &[(b.addr, "v: a", 1)]);
    // 10 requests/s, up to 5 waiting, at most 1 s of wait.
    let p = proxy(&(se + &rate_limit("svc", "  leakyBucket: {rate: 10, queue: 5, maxDelay: 1s}\n")));
    let t = Instant::now();
    let statuses = concurrent(p.addr(), 8);
    let took = t.elapsed();
    // One leaves at once, five wait their turn (100 ms apart), two find the queue full.
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 429, 429], "{took:?}");
    assert!(took >= Duration::from_millis(480) && took < Duration::from_millis(900), "took {took:?}");
    assert_eq!(p.metric("weft_rate_limited_total", &[]), 2.0);
}

#[test]
fn latency_outlier_is_ejected_like_an_erroring_one() {
    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let slow = backend("slow", &["--latency", "100ms"]);
    let se = service_entry("svc", &[(a.addr, "v: a", 1), (b.addr, "v: b", 1), (slow.addr, "v: c", 1)]);
    let dr = destination_rule(
        "svc",
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 0, latencyMadFactor: 3, interval: 200ms, baseEjectionTime: 30s, maxEjectionPercent: 50}}",
    );
    let p = proxy(&(se + &dr));
    // Every endpoint gets its share until the first check, 200 ms in.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(400) {
        assert_eq!(get(p.addr(), "svc", "/", &[]).status, 200);
    }
    assert_eq!(p.metric("weft_outlier_ejections_total", &[]), 1.0);
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let ep =
        clusters["clusters"][0]["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == slow.addr.to_string()).unwrap().clone();
    assert_eq!((ep["health"].as_str(), ep["ejection"]["reason"].as_str()), (Some("EJECTED"), Some("latency")), "{ep}");
    let spread = spread(p.addr(), "svc", 60, &[]);
    assert_eq!(spread.get("slow"), None, "{spread:?}");
}

/// Five endpoints, the last failing `rate` of its requests; retries off so failures count once.
fn interval_detector(rate: &str, detector: &str, reason: &str) {
    let good: Vec<Proc> = (0..4).map(|i| backend(&format!("g{i}"), &[])).collect();
    let bad = backend("bad", &["--error-rate", rate]);
    let mut eps: Vec<(std::net::SocketAddr, &str, u32)> = good.iter().map(|b| (b.addr, "v: a", 1)).collect();
    eps.push((bad.addr, "v: b", 1));
    let dr = destination_rule(
        "svc",
        &format!("{{loadBalancer: {{simple: ROUND_ROBIN}}, outlierDetection: {{consecutive5xxErrors: 0, {detector}, interval: 500ms, baseEjectionTime: 30s, maxEjectionPercent: 50}}}}"),
    );
    let p = proxy(&(service_entry("svc", &eps) + &dr + &vs("svc", "    retries: {attempts: 0}\n")));
    let mut c = Client::connect(p.addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(800) {
        c.get("svc", "/", &[]);
    }
    assert_eq!(p.metric("weft_outlier_ejections_total", &[]), 1.0);
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let ep =
        clusters["clusters"][0]["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == bad.addr.to_string()).unwrap().clone();
    assert_eq!((ep["health"].as_str(), ep["ejection"]["reason"].as_str()), (Some("EJECTED"), Some(reason)), "{ep}");
    let statuses: Vec<u16> = (0..50).map(|_| c.get("svc", "/", &[]).status).collect();
    assert!(statuses.iter().all(|&s| s == 200), "the ejected endpoint gets no more traffic: {statuses:?}");
}

#[test]
fn success_rate_detector_ejects_the_endpoint_far_below_its_peers() {
    interval_detector("0.3", "successRate: {minimumHosts: 5, requestVolume: 20, stdevFactor: 1.5}", "success_rate");
}

#[test]
fn failure_percentage_detector_ejects_past_its_threshold() {
    interval_detector("0.7", "failurePercentage: {threshold: 50, minimumHosts: 5, requestVolume: 20}", "failure_percentage");
}

#[test]
fn outlier_detector_config_errors_name_the_field() {
    let dr = |od: &str| destination_rule("svc", &format!("{{outlierDetection: {{{od}}}}}"));
    let msg = invalid("dr", &dr("failurePercentage: {threshold: 150}"));
    assert!(msg.contains("spec.trafficPolicy.outlierDetection.failurePercentage.threshold") && msg.contains("not a percentage"), "{msg}");
    let msg = invalid("dr", &dr("successRate: {stdevFactor: 0}"));
    assert!(msg.contains("spec.trafficPolicy.outlierDetection.successRate.stdevFactor"), "{msg}");
    let msg = invalid("dr", &dr("successRate: {minimumHost: 3}"));
    assert!(msg.contains("minimumHost"), "{msg}");
}

fn health_check(host: &str, spec: &str) -> String {
    format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: {host}-hc}}\nspec:\n  host: {host}\n{spec}")
}

#[test]
fn failing_health_checks_take_endpoints_out_and_passing_ones_bring_them_back() {
    let good = backend("good", &[]);
    let erroring = backend("erroring", &["--error-rate", "1"]);
    let dead = dead_addr();
    let se = service_entry("svc", &[(good.addr, "v: a", 1), (erroring.addr, "v: b", 1), (dead, "v: c", 1)]);
    let hc = health_check(
        "svc",
        "  http: {path: /healthz, expectedStatuses: [200]}\n  interval: 100ms\n  timeout: 50ms\n  unhealthyThreshold: 2\n  healthyThreshold: 1\n",
    );
    // No retries: the health check alone keeps traffic off the two bad endpoints.
    let p = proxy(&(se + &hc + &vs("svc", "    retries: {attempts: 0}\n")));
    std::thread::sleep(Duration::from_millis(500));
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let health: Vec<(String, String)> = clusters["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["address"].as_str().unwrap().to_string(), e["health"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        health.contains(&(dead.to_string(), "UNHEALTHY".into())) && health.contains(&(erroring.addr.to_string(), "UNHEALTHY".into())),
        "{health:?}"
    );
    let before = spread(p.addr(), "svc", 30, &[]);
    assert_eq!(before.get("good"), Some(&30), "{before:?}");

    // The dead one comes back and passes: it gets traffic again.
    let _c = spawn(&["backend", "--listen", &dead.to_string(), "--name", "revived"]);
    std::thread::sleep(Duration::from_millis(400));
    let after = spread(p.addr(), "svc", 60, &[]);
    assert!(after.get("revived").is_some_and(|n| *n >= 10), "{after:?}");
    assert_eq!(after.get("erroring"), None, "{after:?}");
}

#[test]
fn health_check_config_errors_name_the_field() {
    for (host, spec, want) in [
        ("svc", "  grpc: {service: x, port: 9}\n", "spec.grpc.port: unknown field `port`"),
        ("svc", "  tcp: {}\n  http: {path: /}\n", "spec: exactly one of http, tcp or grpc is required"),
        ("svc", "  http: {path: healthz}\n", "spec.http.path: \"healthz\" must start with /"),
        ("svc", "  tcp: {}\n  interval: 10ms\n", "spec.interval: must be at least 50ms"),
        ("other", "  tcp: {}\n", "spec.host: no ServiceEntry declares host \"other\""),
    ] {
        let err = invalid("hc.yaml", &health_check(host, spec));
        assert!(err.contains(&format!("hc.yaml: HealthCheck {host}-hc: {want}")), "{err}");
    }
}

#[test]
fn hedging_config_errors_name_the_field() {
    for (spec, want) in [
        ("  delayPercentile: 100\n", "spec.delayPercentile: 100 is not a percentile between 0 and 100 (exclusive)"),
        ("  delay: 10ms\n  maxAttempts: 9\n", "spec.maxAttempts: 9 is not between 2 and 5"),
        ("  maxAttempts: 2\n", "spec: one of delay or delayPercentile is required"),
    ] {
        let doc = format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: Hedging\nmetadata: {{name: h}}\nspec:\n  host: svc\n{spec}");
        let err = invalid("hedge.yaml", &doc);
        assert!(err.contains(&format!("hedge.yaml: Hedging h: {want}")), "{err}");
    }
}

/// Istio's default retries (a ServiceEntry without a VirtualService: 2 retries, on
/// connect-failure among others) around a dead endpoint while the file is rewritten
/// every 50 ms. A retry used to look its cluster up again in the live config and gave
/// up when a reload had come in between (`503 UC "config changed during retries"`, ~47
/// of 300); a request now holds its cluster for its whole life.
#[test]
fn default_retries_survive_config_reloads_between_tries() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let live = backend("live", &[]);
    let base = service_entry("svc", &[(live.addr, "v: a", 1), (dead_addr(), "v: b", 1)]);
    // Each rewrite flips a label of an unrelated ServiceEntry: a real change, none for svc.
    let variant = move |k: usize| {
        format!("{base}---\n{}", service_entry("other", &[("127.0.0.1:9".parse().unwrap(), &format!("gen: g{}", k % 2), 1)]))
    };
    let p = proxy_with(&variant(0), &["--watch-interval", "10ms"]);
    let reloads_before = p.metric("weft_config_reloads_total", &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, cfg) = (stop.clone(), p.cfg.clone());
        std::thread::spawn(move || {
            let tmp = cfg.with_extension("tmp");
            let end = Instant::now() + Duration::from_secs(20);
            let mut k = 1;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                // Written whole, then renamed over: the proxy never reads half a file.
                std::fs::write(&tmp, variant(k)).unwrap();
                std::fs::rename(&tmp, &cfg).unwrap();
                k += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // 300 requests, one after another (about a second: some 20 reloads).
    let mut failed = Vec::new();
    let start = Instant::now();
    let mut c = Client::connect(p.addr());
    for i in 0..300 {
        let r = c.get("svc", &format!("/{i}"), &[]);
        if r.status != 200 {
            failed.push(format!("{} {}", r.status, r.text().trim()));
        }
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    assert!(failed.is_empty(), "{} of 300 requests failed, e.g. {:?}", failed.len(), failed.first());
    // Not vacuous: the config really changed under the requests, and they really retried.
    let reloads = p.metric("weft_config_reloads_total", &[]) - reloads_before;
    eprintln!("{reloads} reloads in {took:?}, {} retries", p.metric("weft_upstream_retries_total", &[]));
    assert!(reloads >= 10.0, "only {reloads} reloads in {took:?}");
    assert_eq!(p.metric("weft_config_reload_failures_total", &[]), 0.0);
    let retries = p.metric("weft_upstream_retries_total", &[]);
    assert!(retries >= 60.0, "{retries} retries: the dead endpoint should take about half the first tries");
    assert_eq!(p.metric("istio_requests_total", &["response_code=\"200\""]), 300.0);
}

/// Every endpoint's active-request count (`active_requests` in /clusters).
fn active_requests(p: &Proxy) -> Vec<(String, String, u64)> {
    let clusters: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
    let mut out = Vec::new();
    for c in clusters["clusters"].as_array().unwrap() {
        for e in c["endpoints"].as_array().unwrap() {
            out.push((
                c["name"].as_str().unwrap().to_owned(),
                e["address"].as_str().unwrap().to_owned(),
                e["active_requests"].as_u64().unwrap(),
            ));
        }
    }
    out
}

/// Sends a streamed POST to /echo, reads the response head and the first echoed chunk,
/// then goes away with the response (and the request) still streaming. False when the
/// answer was not a 200 echo.
fn abort_mid_response(addr: std::net::SocketAddr, host: &str) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!("POST /echo HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if !head.starts_with("HTTP/1.1 200") {
                return false;
            }
            if body.contains("hello") {
                return true;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// An endpoint's share of the load (least request and peak EWMA balance on it) is a
/// guard given back however a try ends. A hedge's share used to be taken and given back
/// by hand at the end of its race, so a race cut short (a per-try timeout, the client
/// gone) left it counted for ever. After retries, hedges, failed tries and client
/// aborts, every endpoint's count is back at 0.
#[test]
fn endpoint_load_returns_to_zero_after_retries_hedges_aborts_and_failed_tries() {
    use std::io::Write;

    let (a, b) = (backend("a", &[]), backend("b", &[]));
    let failing = backend("failing", &["--error-rate", "1"]);
    let se = service_entry("svc", &[(a.addr, "v: a", 1), (b.addr, "v: b", 1), (failing.addr, "v: c", 1), (dead_addr(), "v: d", 1)]);
    let hedging =
        "---\napiVersion: policy.weft.dev/v1alpha1\nkind: Hedging\nmetadata: {name: svc}\nspec: {host: svc, delay: 20ms, maxAttempts: 3}\n";
    let retries = "    timeout: 1s\n    retries: {attempts: 3, perTryTimeout: 150ms, retryOn: \"5xx,connect-failure,reset\"}\n";
    // A second host for streamed bodies: one live endpoint, Istio's default retries.
    let stream = format!("---\n{}", service_entry("stream", &[(a.addr, "v: a", 1)]));
    let p = proxy(&(se + hedging + &vs("svc", retries) + &stream));
    let addr = p.addr();

    // Quick requests: failed tries (503, connect refused) retried on other endpoints.
    let mut c = Client::connect(addr);
    for i in 0..60 {
        let r = c.get("svc", "/", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // Slow requests (every endpoint takes 400 ms): each try is hedged twice, then cut off
    // by its per-try timeout with its hedges still out, retried, and ended by the route timeout.
    let slow: Vec<_> = (0..4).map(|_| std::thread::spawn(move || get(addr, "svc", "/", &[("x-delay-ms", "400")]).status)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let busy: u64 = active_requests(&p).iter().map(|e| e.2).sum();
    assert!(busy >= 4, "the count counts: {:?}", active_requests(&p));
    // Clients that go away while their tries and hedges are out.
    for _ in 0..4 {
        let mut c = Client::connect(addr);
        c.stream().write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nx-delay-ms: 400\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(80));
    }
    // Clients that go away in the middle of a streamed response.
    let aborted = (0..20).filter(|_| abort_mid_response(addr, "stream")).take(4).count();
    assert_eq!(aborted, 4, "streamed responses to abort");
    for s in slow {
        let status = s.join().unwrap();
        assert!(status == 504 || status == 503, "{status}");
    }

    // Not vacuous: retries, hedges and client aborts all happened.
    assert!(p.metric("weft_upstream_retries_total", &[]) >= 10.0);
    assert!(p.metric("weft_hedged_requests_total", &[]) >= 8.0);
    let dc = p.wait_metric("istio_requests_total", &["DC\""], 8.0);
    assert!(dc >= 8.0, "{dc} requests ended by their client (DC)");
    // Every share given back (a client's departure is noticed when its connection ends).
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let eps = active_requests(&p);
        if eps.iter().all(|e| e.2 == 0) {
            break;
        }
        assert!(Instant::now() < end, "load left on endpoints after every request ended: {eps:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
