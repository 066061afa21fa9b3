//! Distributed tracing through real proxies and a real OTLP receiver (the official
//! opentelemetry-proto package decoding what weft sends): one trace across two proxies
//! with correct parent/child ids, W3C and B3 propagation, the caller's sampling decision
//! followed, x-request-id generated when absent and kept when present.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::otlp::Receiver;
use common::*;

fn se(host: &str, to: SocketAddr) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
        to.port()
    )
}

#[test]
fn one_trace_across_two_proxies() {
    let rx = Receiver::start();
    let app = backend("app", &[]);
    let sampling = ["--otlp-endpoint", &rx.endpoint(), "--trace-sampling", "100"];
    // client → (a: a sidecar's outbound side) → (b: the app's sidecar, inbound side) → app
    let app_addr = app.addr.to_string();
    let b = proxy_with("", &[&["--service", "b", "--inbound", "127.0.0.1:0", "--app", &app_addr][..], &sampling].concat());
    let a = proxy_with(&se("app", b.p.inbound().expect("inbound")), &[&["--service", "a"][..], &sampling].concat());
    let r = get(a.addr(), "app", "/hello?x=1", &[]);
    assert_eq!(r.status, 200);
    let seen = r.json();
    let id = seen["headers"]["x-request-id"].as_str().expect("x-request-id generated").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let tp = seen["headers"]["traceparent"].as_str().expect("traceparent sent upstream").to_owned();

    let spans = rx.spans(2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let by = |svc: &str| {
        spans.iter().find(|s| s["service"].as_str().unwrap_or("").starts_with(svc)).unwrap_or_else(|| panic!("{svc}: {spans:?}"))
    };
    let (sa, sb) = (by("a."), by("b."));
    assert_eq!(sa["trace_id"], sb["trace_id"], "one trace");
    assert_eq!(sa["parent_span_id"], "", "a started the trace");
    assert_eq!(sb["parent_span_id"], sa["span_id"], "b's span is a's child");
    assert_eq!(
        tp,
        format!("00-{}-{}-01", sb["trace_id"].as_str().unwrap(), sb["span_id"].as_str().unwrap()),
        "the app sees b's span as parent"
    );
    assert_eq!(sa["kind"], 3, "a client span on the outbound side");
    assert_eq!(sb["kind"], 2, "a server span on the inbound side");
    assert_eq!(sa["attributes"]["upstream_cluster"], "outbound|80||app");
    assert!(sb["attributes"]["upstream_cluster"].as_str().unwrap().starts_with("inbound|"), "{sb}");
    for s in [sa, sb] {
        assert_eq!(s["content_type"], "application/x-protobuf");
        assert_eq!(s["attributes"]["http.method"], "GET");
        assert_eq!(s["attributes"]["http.status_code"], 200);
        assert_eq!(s["attributes"]["guid:x-request-id"], id.as_str(), "one request id along the way");
        assert_eq!(s["attributes"]["http.url"], "http://app/hello?x=1");
        assert!(s["end"].as_u64() >= s["start"].as_u64());
    }
}

#[test]
fn the_callers_decision_and_b3_are_followed() {
    let rx = Receiver::start();
    let app = backend("app", &[]);
    // Sampling 0 %: only what a caller asks for is traced.
    let p = proxy_with(&se("app", app.addr), &["--otlp-endpoint", &rx.endpoint(), "--trace-sampling", "0"]);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    let r = get(p.addr(), "app", "/", &[("traceparent", &format!("{parent}-00")), ("x-request-id", "keep-me")]);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-request-id"], "keep-me");
    assert!(seen["headers"]["traceparent"].as_str().unwrap().ends_with("-00"), "not sampled, said so upstream");
    get(p.addr(), "app", "/", &[("traceparent", &format!("{parent}-01"))]);
    // B3 multi-header, sampled.
    let r = get(
        p.addr(),
        "app",
        "/b3",
        &[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"), ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "1")],
    );
    let seen = r.json();
    assert_eq!(seen["headers"]["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(seen["headers"]["x-b3-parentspanid"], "e457b5a2e4d86bd1");
    // Garbage context: a new trace (not sampled at 0 %), the request unharmed.
    assert_eq!(get(p.addr(), "app", "/", &[("traceparent", "00-zz-zz-01"), ("b3", "not-a-trace-context")]).status, 200);

    let spans = rx.spans(2);
    std::thread::sleep(Duration::from_millis(1500));
    let spans_later = rx.spans(2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans_later.len(), 2, "no more: the unsampled were not exported");
    let w3c = spans.iter().find(|s| s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736").expect("the sampled W3C trace");
    assert_eq!(w3c["parent_span_id"], "00f067aa0ba902b7");
    let b3 = spans.iter().find(|s| s["trace_id"] == "80f198ee56343ba864fe8b2a57d3eff7").expect("the B3 trace");
    assert_eq!(b3["parent_span_id"], "e457b5a2e4d86bd1");
    assert_eq!(seen["headers"]["x-b3-spanid"], b3["span_id"]);
}

#[test]
fn a_collector_away_costs_requests_nothing() {
    // Nothing listens there: spans are dropped and counted, requests go on.
    let app = backend("app", &[]);
    let dead = free_addr();
    let p = proxy_with(&se("app", app.addr), &["--otlp-endpoint", &format!("http://{dead}/v1/traces"), "--trace-sampling", "100"]);
    for _ in 0..20 {
        assert_eq!(get(p.addr(), "app", "/", &[]).status, 200);
    }
    let start = Instant::now();
    while p.metric("weft_trace_spans_dropped_total", &[]) < 20.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the spans were not counted dropped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.metric("weft_trace_spans_exported_total", &[]), 0.0);
    // A malformed endpoint is refused at start, naming the flag.
    let cfg = temp_dir().join("empty.yaml");
    std::fs::write(&cfg, "").unwrap();
    for bad in ["ftp://x/v1/traces", "not a url", "http://"] {
        let out = Command::new(weft())
            .args(["proxy", "--config", cfg.to_str().unwrap(), "--otlp-endpoint", bad, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--otlp-endpoint"), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn without_tracing_a_request_id_is_made_only_when_asked() {
    let app = backend("app", &[]);
    let plain = proxy(&se("app", app.addr));
    assert!(get(plain.addr(), "app", "/", &[]).json()["headers"]["x-request-id"].is_null(), "not by default: it costs every request");
    let with = proxy_with(&se("app", app.addr), &["--request-id"]);
    let seen = get(with.addr(), "app", "/", &[]).json();
    assert_eq!(seen["headers"]["x-request-id"].as_str().map(str::len), Some(36));
    assert_eq!(get(with.addr(), "app", "/", &[("x-request-id", "mine")]).json()["headers"]["x-request-id"], "mine");
}
