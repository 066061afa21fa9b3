//! Spans to an OTLP collector over HTTP/protobuf (`POST <endpoint>`, usually
//! `http://collector:4318/v1/traces`), in batches, from a bounded queue: a full queue
//! drops the span and counts it (`weft_trace_spans_dropped_total`) — tracing never
//! blocks or slows a request, and never grows without bound. The export runs on a thread
//! of its own (`weft-trace`), apart from the workers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::otlp;

/// Spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per request to the collector, at most.
pub const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A collector that does not answer within this is given up on (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending end (cheap to share); the export runs until the process ends.
pub struct Exporter {
    tx: mpsc::Sender<otlp::Span>,
    metrics: &'static weft_telemetry::Metrics,
}

impl Exporter {
    /// Starts exporting to `endpoint` (http://…) as service `service` of `namespace`.
    pub fn start(
        endpoint: &str,
        service: &str,
        namespace: &str,
        metrics: &'static weft_telemetry::Metrics,
    ) -> Result<Arc<Exporter>, String> {
        let uri = check_endpoint(endpoint)?;
        let rt = background().ok_or("cannot start the trace export thread")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let resource = otlp::Resource {
            attributes: vec![
                otlp::kv("service.name", format!("{service}.{namespace}")),
                otlp::kv("k8s.namespace.name", namespace),
                otlp::kv("telemetry.sdk.name", "weft"),
            ],
        };
        rt.spawn(run(rx, uri, resource, metrics));
        Ok(Arc::new(Exporter { tx, metrics }))
    }

    /// Queues a finished span; dropped (and counted) when the queue is full.
    pub fn send(&self, span: otlp::Span) {
        if self.tx.try_send(span).is_err() {
            self.metrics.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The collector's URL, checked: http://host[:port]/path.
pub fn check_endpoint(endpoint: &str) -> Result<Uri, String> {
    let uri: Uri = endpoint.parse().map_err(|_| format!("--otlp-endpoint {:?} is not a URL", weft_api::truncate(endpoint, 128)))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "--otlp-endpoint {:?}: an http://host:port/path URL (OTLP over HTTP/protobuf)",
            weft_api::truncate(endpoint, 128)
        ));
    }
    Ok(uri)
}

async fn run(mut rx: mpsc::Receiver<otlp::Span>, uri: Uri, resource: otlp::Resource, metrics: &'static weft_telemetry::Metrics) {
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
        let body = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope { name: "weft".into(), version: env!("CARGO_PKG_VERSION").into() }),
                    spans: std::mem::take(&mut batch),
                }],
            }],
        }
        .encode_to_vec();
        match tokio::time::timeout(EXPORT_TIMEOUT, post(&uri, body)).await {
            Ok(Ok(())) => _ = metrics.counters.spans_exported.fetch_add(n, Ordering::Relaxed),
            Ok(Err(e)) => {
                metrics.counters.spans_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(endpoint = %uri, "trace export failed: {e}; {n} spans dropped");
            }
            Err(_) => {
                metrics.counters.spans_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(endpoint = %uri, "trace export: no answer within {EXPORT_TIMEOUT:?}; {n} spans dropped");
            }
        }
    }
}

/// One POST of an encoded batch; Ok on a 2xx answer.
async fn post(uri: &Uri, body: Vec<u8>) -> Result<(), String> {
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let req = Request::post(uri.path_and_query().map_or("/v1/traces", |p| p.as_str()))
        .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
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
