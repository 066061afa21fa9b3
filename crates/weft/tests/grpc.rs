//! A real gRPC client and server (python grpcio) through the proxy.

mod common;
use common::*;

#[test]
fn grpc_unary_streaming_trailers_and_errors_pass_through() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo}}\nspec:\n  hosts: [echo]\n  resolution: STATIC\n  ports: [{{number: 80, name: grpc, protocol: GRPC}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]\n"
    );
    let p = proxy(&cfg);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_check.py");
    let out = std::process::Command::new("python3")
        .args([script, "--port", &port.to_string(), "--proxy", &p.addr().to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpc checks failed:\n{text}\nproxy log:\n{}", p.p.log_text());
    assert!(text.contains("ok   bidirectional streaming"), "{text}");
    // Istio's metrics see gRPC: protocol and status.
    assert!(p.metric("istio_requests_total", &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""]) >= 100.0);
    assert_eq!(p.metric("istio_requests_total", &["request_protocol=\"grpc\"", "grpc_response_status=\"5\""]), 1.0);
}
