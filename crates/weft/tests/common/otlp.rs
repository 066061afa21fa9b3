//! A real OTLP receiver for the tracing tests: `otlp_receiver.py`, decoding what it is
//! sent with the official opentelemetry-proto package (over HTTP/protobuf, or gRPC with
//! grpcio), one JSON line per span.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Receiver {
    child: std::process::Child,
    pub port: u16,
    out: std::path::PathBuf,
    grpc: bool,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// An OTLP/HTTP receiver.
    pub fn start() -> Receiver {
        Receiver::spawn(false)
    }

    /// An OTLP/gRPC receiver.
    pub fn start_grpc() -> Receiver {
        Receiver::spawn(true)
    }

    fn spawn(grpc: bool) -> Receiver {
        let out = super::temp_dir().join("spans.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&out);
        if grpc {
            cmd.arg("grpc");
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("receiver port, got {line:?} (pip install opentelemetry-proto grpcio)"));
        Receiver { child, port, out, grpc }
    }

    /// The URL to give `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        match self.grpc {
            false => format!("http://127.0.0.1:{}/v1/traces", self.port),
            true => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The spans received so far, waiting (≤ 10 s) until there are at least `n`.
    pub fn spans(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let spans: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if spans.len() >= n || start.elapsed() > Duration::from_secs(10) {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
