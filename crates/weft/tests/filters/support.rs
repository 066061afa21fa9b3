//! What the filter tests share: the python origin, the proxy in front of it, decoders.

#![allow(dead_code)]

pub use crate::common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ORIGIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/filters_backend.py");

/// The python origin; see the script for the query parameters that shape a response.
pub struct Origin {
    p: Proc,
}

impl Origin {
    pub fn start() -> Origin {
        Origin { p: spawn_program("python3", &[ORIGIN]) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.p.addr
    }

    /// Requests the origin has seen for `path` (no query).
    pub fn hits(&self, path: &str) -> u64 {
        let r = get(self.addr(), "origin", &format!("/_hits{path}"), &[]);
        r.text().trim().parse().unwrap_or_else(|_| panic!("hits: {}", r.text()))
    }

    /// The headers of the last request the origin saw for `path`.
    pub fn last(&self, path: &str) -> serde_json::Value {
        get(self.addr(), "origin", &format!("/_last{path}"), &[]).json()
    }

    pub fn release(&self, path: &str) {
        assert_eq!(get(self.addr(), "origin", &format!("/_release{path}"), &[]).status, 200);
    }

    /// The bytes the origin sends for `target` (asked directly, not counted).
    pub fn body(&self, target: &str) -> Vec<u8> {
        let r = get(self.addr(), "origin", target, &[("x-uncounted", "1")]);
        assert_eq!(r.status, 200);
        r.body
    }
}

pub const COMPRESSION: &str =
    "---\napiVersion: policy.weft.dev/v1alpha1\nkind: Compression\nmetadata: {name: c}\nspec: {host: svc, minContentLength: 100}\n";

pub fn cache(fields: &str) -> String {
    format!("---\napiVersion: policy.weft.dev/v1alpha1\nkind: ResponseCache\nmetadata: {{name: rc}}\nspec: {{host: svc{fields}}}\n")
}

/// An origin and a proxy serving it as `svc` with `policies`.
pub fn setup(policies: &str) -> (Origin, Proxy) {
    let o = Origin::start();
    let p = proxy(&(service_entry("svc", &[(o.addr(), "v: a", 1)]) + policies));
    (o, p)
}

pub fn decode_py(codec: &str, data: &[u8]) -> Vec<u8> {
    let code = match codec {
        "gzip" => "import sys, gzip; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        "br" => "import sys, brotli; sys.stdout.buffer.write(brotli.decompress(sys.stdin.buffer.read()))",
        "zstd" => "import sys, zstandard; sys.stdout.buffer.write(zstandard.ZstdDecompressor().decompressobj().decompress(sys.stdin.buffer.read()))",
        _ => unreachable!(),
    };
    let mut c =
        Command::new("python3").args(["-c", code]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "python {codec} decoder: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// `curl --compressed` through the proxy: (decoded body, response head).
pub fn curl_compressed(p: &Proxy, target: &str, accept: Option<&str>) -> (Vec<u8>, String) {
    let head = temp_dir().join("head");
    let mut args = vec!["-sS".to_owned(), "--max-time".into(), "10".into(), "--compressed".into(), "-H".into(), "Host: svc".into()];
    if let Some(a) = accept {
        args.extend(["-H".into(), format!("Accept-Encoding: {a}")]);
    }
    args.extend(["-D".into(), head.to_str().unwrap().to_owned(), format!("http://{}{target}", p.addr())]);
    let o = Command::new("curl").args(&args).output().expect("curl");
    assert!(o.status.success(), "curl: {}", String::from_utf8_lossy(&o.stderr));
    (o.stdout, std::fs::read_to_string(head).unwrap().to_ascii_lowercase())
}

/// Polls `f` every 20 ms until it gives `Some`; fails after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
