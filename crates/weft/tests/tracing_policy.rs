//! Tracing beyond one span per request, through real proxies and a real OTLP receiver:
//! a child span per try when a request is retried or hedged, Istio's `Telemetry`
//! resource (sampling, custom tags, span reporting off) over the flags, OTLP over gRPC
//! (a grpcio server), and the control plane's own API spans.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::otlp::Receiver;
use common::*;

fn vs(host: &str, http_extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n{http_extra}"
    )
}

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// The spans of one trace.
fn of_trace<'a>(spans: &'a [serde_json::Value], trace: &str) -> Vec<&'a serde_json::Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

#[test]
fn each_try_of_a_retried_request_is_a_child_span() {
    let rx = Receiver::start();
    let failing = backend("failing", &["--error-rate", "1"]);
    let good = backend("good", &[]);
    let se = service_entry("svc", &[(failing.addr, "v: a", 1), (good.addr, "v: b", 1)]);
    let p = proxy_with(&(se + &vs("svc", "    retries: {attempts: 3, retryOn: 5xx}\n")), &["--otlp-endpoint", &rx.endpoint()]);
    // Sampled by the caller; about half the first tries land on the failing endpoint.
    let traces: Vec<String> = (0..12).map(|i| format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}")).collect();
    let mut seen_parent = Vec::new();
    for t in &traces {
        let r = get(p.addr(), "svc", "/", &[("traceparent", &traceparent(t))]);
        assert_eq!(r.status, 200, "{}", r.text());
        seen_parent.push(r.json()["headers"]["traceparent"].as_str().unwrap().to_owned());
    }
    let retried = p.metric("weft_upstream_retries_total", &[]) as usize;
    assert!(retried >= 1, "no request was retried in 12");
    let spans = rx.spans(12 + 2 * retried);
    let mut checked = 0;
    for (t, upstream_saw) in traces.iter().zip(&seen_parent) {
        let trace = of_trace(&spans, t);
        let request = trace.iter().find(|s| s["parent_span_id"] == "00f067aa0ba902b7").expect("the request's span");
        let tries: Vec<_> = trace.iter().filter(|s| s["parent_span_id"] == request["span_id"]).collect();
        match tries.len() {
            // Tried once: no child span, the upstream saw the request's span.
            0 => assert!(upstream_saw.contains(request["span_id"].as_str().unwrap()), "{upstream_saw}"),
            2 => {
                let (first, second) =
                    if tries[0]["attributes"]["retry.attempt"] == 1 { (tries[0], tries[1]) } else { (tries[1], tries[0]) };
                assert_eq!(first["attributes"]["upstream_address"], failing.addr.to_string());
                assert_eq!(first["attributes"]["http.status_code"], 503);
                assert_eq!(first["status"], 2, "an error");
                assert_eq!(second["attributes"]["retry.attempt"], 2);
                assert_eq!(second["attributes"]["upstream_address"], good.addr.to_string());
                assert_eq!(second["attributes"]["http.status_code"], 200);
                assert_eq!(second["kind"], 3);
                assert!(second["start"].as_u64() >= first["end"].as_u64(), "the retry after the first try");
                assert!(upstream_saw.contains(second["span_id"].as_str().unwrap()), "the retry's upstream sees the retry's span");
                checked += 1;
            }
            n => panic!("{n} try spans: {trace:?}"),
        }
    }
    assert_eq!(checked, retried, "one trace with two tries per retry");
}

#[test]
fn a_hedge_race_shows_every_try_and_the_winner() {
    let rx = Receiver::start();
    let slow = backend("slow", &["--latency", "400ms"]);
    let fast = backend("fast", &[]);
    let se = service_entry("svc", &[(slow.addr, "v: a", 1), (fast.addr, "v: b", 1)]);
    let hedging =
        "---\napiVersion: policy.weft.dev/v1alpha1\nkind: Hedging\nmetadata: {name: svc}\nspec: {host: svc, delay: 30ms, maxAttempts: 2}\n";
    let p = proxy_with(&(se + hedging), &["--otlp-endpoint", &rx.endpoint()]);
    let traces: Vec<String> = (0..8).map(|i| format!("80f198ee56343ba864fe8b2a57d3ef{i:02x}")).collect();
    for t in &traces {
        let r = get(p.addr(), "svc", "/", &[("traceparent", &traceparent(t))]);
        assert_eq!(r.status, 200);
    }
    let hedges = p.metric("weft_hedged_requests_total", &[]) as usize;
    assert!(hedges >= 1, "no request went to the slow endpoint first in 8");
    let spans = rx.spans(8 + 2 * hedges);
    let mut raced = 0;
    for t in &traces {
        let trace = of_trace(&spans, t);
        let request = trace.iter().find(|s| s["parent_span_id"] == "00f067aa0ba902b7").expect("the request's span");
        let tries: Vec<_> = trace.iter().filter(|s| s["parent_span_id"] == request["span_id"]).collect();
        if tries.is_empty() {
            continue;
        }
        assert_eq!(tries.len(), 2, "{trace:?}");
        let hedge = tries.iter().find(|s| s["attributes"]["hedge"] == "true").expect("the hedge's span");
        let first = tries.iter().find(|s| s["attributes"]["hedge"] == "false").expect("the first try's span");
        assert_eq!(first["attributes"]["upstream_address"], slow.addr.to_string());
        assert!(first["status_message"].as_str().unwrap().starts_with("cancelled"), "{first}");
        assert_eq!(hedge["attributes"]["upstream_address"], fast.addr.to_string());
        assert_eq!(hedge["attributes"]["http.status_code"], 200, "the hedge won");
        raced += 1;
    }
    assert_eq!(raced, hedges);
}

fn telemetry(namespace: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t-{namespace}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

#[test]
fn telemetry_resources_set_sampling_tags_and_reporting() {
    let rx = Receiver::start();
    let app = backend("app", &[]);
    // The mesh: every trace sampled, with tags; the flag says 0 %.
    let mesh = telemetry(
        "istio-system",
        "  tracing:\n  - randomSamplingPercentage: 100\n    customTags:\n      env: {literal: {value: prod}}\n      user: {header: {name: x-user, defaultValue: anon}}\n      home: {environment: {name: UNSET_IN_WEFT_TESTS, defaultValue: none}}\n",
    );
    // A workload of namespace `quiet` that reports nothing (the trace still goes on).
    let quiet = telemetry("quiet", "  selector: {matchLabels: {app: hush}}\n  tracing:\n  - disableSpanReporting: true\n");
    let config = service_entry("app", &[(app.addr, "v: a", 1)]) + &mesh + &quiet;
    let flags = ["--otlp-endpoint", &rx.endpoint(), "--trace-sampling", "0"];
    let loud = proxy_with(&config, &flags);
    let hushed = proxy_with(&config, &[&flags[..], &["--namespace", "quiet", "--label", "app=hush"]].concat());
    for _ in 0..5 {
        assert_eq!(get(loud.addr(), "app", "/", &[("x-user", "ann")]).status, 200);
        let r = get(hushed.addr(), "app", "/", &[]);
        assert!(r.json()["headers"]["traceparent"].as_str().unwrap().ends_with("-01"), "sampled, said so upstream");
    }
    let spans = rx.spans(5);
    std::thread::sleep(Duration::from_millis(1500));
    let spans_later = rx.spans(5);
    assert_eq!(spans.len(), 5, "the mesh's 100 % over the flag's 0 %, and nothing from the hushed proxy: {spans:?}");
    assert_eq!(spans_later.len(), 5);
    for s in &spans {
        assert_eq!(s["attributes"]["env"], "prod");
        assert_eq!(s["attributes"]["user"], "ann");
        assert_eq!(s["attributes"]["home"], "none");
    }
    // A bad Telemetry is refused with its field's path.
    let bad = telemetry(
        "default",
        "  tracing:\n  - randomSamplingPercentage: 101\n    customTags:\n      t: {literal: {value: a}, header: {name: b}}\n",
    );
    let f = temp_dir().join("bad.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = std::process::Command::new(weft()).args(["validate", "-f", f.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.tracing[0].randomSamplingPercentage"), "{err}");
    assert!(err.contains("spec.tracing[0].customTags[\"t\"]: only one of literal, environment or header"), "{err}");
}

#[test]
fn spans_travel_over_grpc() {
    let rx = Receiver::start_grpc();
    let app = backend("app", &[]);
    let p = proxy_with(
        &service_entry("app", &[(app.addr, "v: a", 1)]),
        &["--otlp-endpoint", &rx.endpoint(), "--otlp-protocol", "grpc", "--trace-sampling", "100"],
    );
    for _ in 0..3 {
        assert_eq!(get(p.addr(), "app", "/", &[]).status, 200);
    }
    let spans = rx.spans(3);
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert!(spans.iter().all(|s| s["content_type"] == "application/grpc" && s["attributes"]["http.status_code"] == 200));
    wait_until("the spans counted exported", || p.metric("weft_trace_spans_exported_total", &[]) == 3.0);
    // An unknown protocol is refused at start.
    let out = std::process::Command::new(weft())
        .args(["proxy", "--config", "/dev/null", "--listen", "127.0.0.1:0", "--otlp-endpoint", "http://c", "--otlp-protocol", "http/json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http/protobuf or grpc"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_control_plane_traces_its_api() {
    let rx = Receiver::start();
    let dir = temp_dir().join("cp");
    let addr: SocketAddr = free_addr();
    let p = spawn(&[
        "control-plane",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr.to_string(),
        "--otlp-endpoint",
        &rx.endpoint(),
        "--trace-sampling",
        "100",
    ]);
    wait_until("the control plane listening", || std::net::TcpStream::connect(addr).is_ok());
    let cp = Plane { p, addr, dir };
    let out = cp.apply("se.yaml", &service_entry("app", &[(free_addr(), "v: a", 1)]));
    assert!(out.status.success(), "{}", text(&out));
    let spans = rx.spans(1);
    let apply = spans.iter().find(|s| s["name"] == "POST /v1/apply").unwrap_or_else(|| panic!("{spans:?}"));
    assert_eq!(apply["service"], "weft-control-plane");
    assert_eq!(apply["kind"], 2, "a server span");
    assert_eq!(apply["attributes"]["http.status_code"], 200);
}

/// What a client sends never makes a batch a collector refuses, nor stays pinned in the
/// queue: non-UTF-8 ids and tracestate are replaced, long values cut; a gateway replaces
/// an outside client's request id.
#[test]
fn hostile_trace_headers_make_valid_spans() {
    let rx = Receiver::start_grpc();
    let app = backend("app", &[]);
    let p = proxy_with(
        &service_entry("app", &[(app.addr, "v: a", 1)]),
        &["--otlp-endpoint", &rx.endpoint(), "--otlp-protocol", "grpc", "--trace-sampling", "100"],
    );
    let mut c = Client::connect(p.addr());
    let mut bytes = b"GET /bad HTTP/1.1\r\nhost: app\r\nx-request-id: abc\xff\r\ntracestate: k=\xfe\r\nx-long: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'k', 6000));
    bytes.extend_from_slice(b"\r\n\r\n");
    assert_eq!(c.raw(&bytes, false).status, 200);
    for _ in 0..3 {
        assert_eq!(get(p.addr(), "app", "/ok", &[("tracestate", &format!("k={}", "v".repeat(2000)))]).status, 200);
    }
    let spans = rx.spans(4);
    assert_eq!(spans.len(), 4, "the batch with the bad bytes was taken: {spans:?}");
    let bad = spans.iter().find(|s| s["name"] == "app/bad").expect("the hostile request's span");
    assert_eq!(bad["attributes"]["guid:x-request-id"], "abc\u{fffd}");
    assert_eq!(p.metric("weft_trace_spans_dropped_total", &[]), 0.0);
}

#[test]
fn bad_collector_urls_are_refused_at_start() {
    for bad in ["http://127.0.0.1:99999/v1/traces", "http://user:pw@127.0.0.1:4318/v1/traces", "http://127.0.0.1:0"] {
        let out = std::process::Command::new(weft())
            .args(["proxy", "--config", "/dev/null", "--listen", "127.0.0.1:0", "--otlp-endpoint", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--otlp-endpoint"), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // No path: OTLP's /v1/traces (the receiver answers only there).
    let rx = Receiver::start();
    let app = backend("app", &[]);
    let p = proxy_with(
        &service_entry("app", &[(app.addr, "v: a", 1)]),
        &["--otlp-endpoint", &format!("http://127.0.0.1:{}", rx.port), "--trace-sampling", "100"],
    );
    assert_eq!(get(p.addr(), "app", "/", &[]).status, 200);
    assert_eq!(rx.spans(1).len(), 1);
}
