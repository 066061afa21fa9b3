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

#[test]
fn grpc_health_checks_follow_the_servers_serving_status() {
    let ports: Vec<u16> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let dir = temp_dir();
    std::fs::write(dir.join(ports[0].to_string()), "SERVING").unwrap();
    std::fs::write(dir.join(ports[1].to_string()), "NOT_SERVING").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_health_server.py");
    let mut server = std::process::Command::new("python3")
        .args([
            script,
            "--port",
            &ports[0].to_string(),
            "--port",
            &ports[1].to_string(),
            "--service",
            "demo.Echo",
            "--status-dir",
            dir.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let se = |hc_service: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo}}\nspec:\n  hosts: [echo]\n  resolution: STATIC\n  ports: [{{number: 80, name: grpc, protocol: GRPC}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {}}}}}, {{address: 127.0.0.1, ports: {{grpc: {}}}}}]\n---\napiVersion: policy.weft.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: echo}}\nspec: {{host: echo, grpc: {{service: {hc_service}}}, interval: 100ms, timeout: 1s, unhealthyThreshold: 1, healthyThreshold: 1}}\n",
            ports[0], ports[1]
        )
    };
    let health = |p: &Proxy| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&p.admin("/clusters")).unwrap();
        v["clusters"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["health"].as_str().unwrap().to_owned()).collect()
    };
    let wait_for = |p: &Proxy, want: [&str; 2]| {
        let start = std::time::Instant::now();
        while health(p) != want && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(health(p), want);
    };
    let p = proxy(&se("demo.Echo"));
    wait_for(&p, ["HEALTHY", "UNHEALTHY"]);
    // The servers' status flips: so does the proxy's view.
    std::fs::write(dir.join(ports[0].to_string()), "NOT_SERVING").unwrap();
    std::fs::write(dir.join(ports[1].to_string()), "SERVING").unwrap();
    wait_for(&p, ["UNHEALTHY", "HEALTHY"]);
    // A service the servers do not know answers NOT_FOUND: unhealthy.
    let other = proxy(&se("demo.Other"));
    wait_for(&other, ["UNHEALTHY", "UNHEALTHY"]);
    let _ = server.kill();
    let _ = server.wait();
}
