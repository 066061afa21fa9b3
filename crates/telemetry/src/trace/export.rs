//! Spans to an OTLP collector, in batches, from a bounded queue: over HTTP/protobuf
//! (`POST <endpoint>`, usually `http://collector:4318/v1/traces`) or gRPC (the
//! `TraceService/Export` call on `http://collector:4317`). A full queue drops the span and
//! counts it (`weft_trace_spans_dropped_total`) — tracing never blocks or slows a
//! request, and never grows without bound. The export runs on a thread of its own
//! (`weft-trace`), apart from the workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::record::{SpanRecord, Value};
use super::{truncate, wire};

/// Spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per request to the collector, at most.
pub const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A collector that does not answer within this is given up on (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The gRPC method OTLP collectors serve.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How spans travel to the collector (`--otlp-protocol`, `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `http/protobuf`: a POST of the encoded request.
    #[default]
    HttpProtobuf,
    /// `grpc`: the TraceService's Export call over HTTP/2 (cleartext).
    Grpc,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!("OTLP protocol {:?}: http/protobuf or grpc (http/json is not supported)", truncate(other, 64))),
        }
    }
}

/// Where spans go: the collector's URL and the protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: Uri,
    pub protocol: Protocol,
}

impl Target {
    /// Checks the collector's URL: `http://host[:port][/path]` (the path is the
    /// HTTP/protobuf endpoint's; gRPC uses the service's method path).
    pub fn parse(endpoint: &str, protocol: Protocol) -> Result<Target, String> {
        let shown = truncate(endpoint, 128);
        let uri: Uri = endpoint.parse().map_err(|_| format!("--otlp-endpoint {shown:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("--otlp-endpoint {shown:?}: an http://host:port[/path] URL (https is not supported)"));
        }
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            return Err(format!("--otlp-endpoint {shown:?}: no user or password in the URL (they would be sent as the Host)"));
        }
        // A port that is there but no port (`:99999`, `:x`) must not mean the default one.
        let after_host = &authority[uri.host().map_or(0, str::len)..];
        if !after_host.is_empty() && uri.port_u16().is_none_or(|p| p == 0) {
            return Err(format!("--otlp-endpoint {shown:?}: the port is 1 to 65535"));
        }
        Ok(Target { uri, protocol })
    }

    /// The HTTP/protobuf endpoint's path: the URL's, or `/v1/traces` when it has none.
    fn path(&self) -> &str {
        match self.uri.path_and_query().map(|p| p.as_str()) {
            None | Some("" | "/") => "/v1/traces",
            Some(p) => p,
        }
    }

    fn host(&self) -> &str {
        self.uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']')
    }

    fn port(&self) -> u16 {
        self.uri.port_u16().unwrap_or(match self.protocol {
            Protocol::HttpProtobuf => 4318,
            Protocol::Grpc => 4317,
        })
    }
}

/// The sending end (cheap to share); the export runs until the process ends.
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    dropped: &'static AtomicU64,
}

impl Exporter {
    /// Starts exporting to `target`, the spans described by `resource` (`service.name`
    /// and the like); `exported` and `dropped` count the spans' fates.
    pub fn start(
        target: Target,
        resource: Vec<(&'static str, Value)>,
        exported: &'static AtomicU64,
        dropped: &'static AtomicU64,
    ) -> Result<Arc<Exporter>, String> {
        let rt = background().ok_or("cannot start the trace export thread")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        rt.spawn(run(rx, target, resource, exported, dropped));
        Ok(Arc::new(Exporter { tx, dropped }))
    }

    /// Queues a finished span; dropped (and counted) when the queue is full.
    pub fn send(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    target: Target,
    resource: Vec<(&'static str, Value)>,
    exported: &'static AtomicU64,
    dropped: &'static AtomicU64,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        let n = batch.len() as u64;
        let body = wire::export_request(&resource, env!("CARGO_PKG_VERSION"), &batch);
        batch.clear();
        let sent = match target.protocol {
            Protocol::HttpProtobuf => tokio::time::timeout(EXPORT_TIMEOUT, post(&target, body)).await,
            Protocol::Grpc => tokio::time::timeout(EXPORT_TIMEOUT, grpc_export(&target, body)).await,
        };
        match sent {
            Ok(Ok(())) => _ = exported.fetch_add(n, Ordering::Relaxed),
            Ok(Err(e)) => {
                dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(endpoint = %target.uri, "trace export failed: {e}; {n} spans dropped");
            }
            Err(_) => {
                dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(endpoint = %target.uri, "trace export: no answer within {EXPORT_TIMEOUT:?}; {n} spans dropped");
            }
        }
    }
}

/// One POST of an encoded batch; Ok on a 2xx answer.
async fn post(target: &Target, body: Vec<u8>) -> Result<(), String> {
    let tcp = TcpStream::connect((target.host(), target.port())).await.map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let req = Request::post(target.path())
        .header(header::HOST, target.uri.authority().map_or(target.host(), |a| a.as_str()))
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    // (The answer's body is read and dropped, bounded: an ExportTraceServiceResponse.)
    let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// One gRPC Export call (HTTP/2, the message in a length-prefixed frame); Ok when the
/// collector's `grpc-status` is 0.
async fn grpc_export(target: &Target, message: Vec<u8>) -> Result<(), String> {
    let tcp = TcpStream::connect((target.host(), target.port())).await.map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.map_err(|e| format!("HTTP/2: {e}"))?;
    tokio::spawn(conn);
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0); // not compressed
    frame.put_u32(u32::try_from(message.len()).map_err(|_| "batch too large")?);
    frame.put_slice(&message);
    let uri = format!("http://{}{GRPC_EXPORT}", target.uri.authority().map_or(target.host(), |a| a.as_str()));
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame.freeze()))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| format!("HTTP/2: {e}"))?;
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        return Err(format!("the collector answered {}", parts.status));
    }
    // A "trailers-only" answer carries grpc-status in its headers; else in trailers.
    let collected = http_body_util::Limited::new(body, 64 * 1024).collect().await.map_err(|e| format!("gRPC answer: {e}"))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    match parts.headers.contains_key("grpc-status") {
        true => grpc_ok(&parts.headers),
        false => grpc_ok(&trailers),
    }
}

/// `grpc-status: 0`, else the status and message as an error.
fn grpc_ok(h: &HeaderMap) -> Result<(), String> {
    match h.get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"0") => Ok(()),
        Some(code) => {
            let msg = h.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
            Err(format!("the collector answered grpc-status {} {}", String::from_utf8_lossy(code), truncate(msg, 256)))
        }
        None => Err("the collector's answer has no grpc-status".into()),
    }
}

/// One small runtime on a thread of its own for the process's exporter.
fn background() -> Option<&'static tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let handle = rt.handle().clone();
        let run = move || rt.block_on(std::future::pending::<()>());
        std::thread::Builder::new().name("weft-trace".into()).spawn(run).ok()?;
        Some(handle)
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_protocols() {
        let t = Target::parse("http://127.0.0.1:4318/v1/traces", Protocol::HttpProtobuf).unwrap();
        assert_eq!((t.host(), t.port()), ("127.0.0.1", 4318));
        let g = Target::parse("http://[::1]", Protocol::Grpc).unwrap();
        assert_eq!((g.host(), g.port()), ("::1", 4317));
        for bad in ["https://c:4317", "c:4317", "", "http://", "ftp://x/", "http://c:99999/v1/traces", "http://c:0", "http://u:p@c:4318/"] {
            assert!(Target::parse(bad, Protocol::Grpc).is_err(), "{bad:?}");
        }
        let bare = Target::parse("http://c:4318", Protocol::HttpProtobuf).unwrap();
        assert_eq!(bare.path(), "/v1/traces", "no path: OTLP's");
        assert_eq!(Target::parse("http://c:4318/otlp/v1/traces?x=1", Protocol::HttpProtobuf).unwrap().path(), "/otlp/v1/traces?x=1");
        assert_eq!(Target::parse("http://[::1]:4318", Protocol::HttpProtobuf).unwrap().port(), 4318);
        assert_eq!("grpc".parse::<Protocol>(), Ok(Protocol::Grpc));
        assert!("http/json".parse::<Protocol>().unwrap_err().contains("not supported"));
        assert!("x".repeat(10_000).parse::<Protocol>().unwrap_err().len() < 200);
    }

    #[test]
    fn grpc_status() {
        let mut h = HeaderMap::new();
        assert!(grpc_ok(&h).is_err());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_ok(&h).is_ok());
        h.insert("grpc-status", "14".parse().unwrap());
        h.insert("grpc-message", "unavailable".parse().unwrap());
        assert_eq!(grpc_ok(&h).unwrap_err(), "the collector answered grpc-status 14 unavailable");
    }
}
