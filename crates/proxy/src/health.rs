//! Active health checks (the HealthCheck kind): one task on the admin runtime probes
//! each checked host's endpoints every interval, reading the live config each round so
//! reloads need no restart, and flips endpoints in and out of service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_config::{HealthProbe, Probe};

use crate::cluster::Endpoint;
use crate::state::Shared;
use crate::transport::Conn;

/// How often the task looks for checks that are due.
const TICK: Duration = Duration::from_millis(25);

pub async fn run(shared: &'static Shared) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let rt = shared.current.load_full();
        for hc in &rt.snap.health_checks {
            let due = last.get(&hc.name).is_none_or(|t| t.elapsed() >= hc.interval);
            if !due {
                continue;
            }
            last.insert(hc.name.clone(), Instant::now());
            // An address is probed once, its result applied to every cluster's copy of it.
            let mut by_address: HashMap<&str, Vec<Arc<Endpoint>>> = HashMap::new();
            for c in rt.clusters.iter().filter(|c| c.spec.service.eq_ignore_ascii_case(&hc.host)) {
                for e in &c.endpoints {
                    by_address.entry(e.id.as_str()).or_default().push(e.clone());
                }
            }
            for (_, eps) in by_address {
                let hc = hc.clone();
                tokio::spawn(async move {
                    let ok = tokio::time::timeout(hc.timeout, probe(&eps[0], &hc)).await.unwrap_or(false);
                    for e in &eps {
                        if let Some(now_healthy) = e.checked.record(ok, hc.healthy_threshold, hc.unhealthy_threshold) {
                            let state = if now_healthy { "passes its health check again" } else { "fails its health check" };
                            tracing::warn!("{} {state} ({})", e.id, hc.name);
                        }
                    }
                });
            }
        }
    }
}

/// One probe, over the endpoint's transport (as its traffic goes).
async fn probe(ep: &Endpoint, hc: &HealthProbe) -> bool {
    let Ok(mut stream) = ep.transport.connect(&ep.target, &ep.pool_settings).await else { return false };
    match &hc.probe {
        Probe::Tcp => true,
        Probe::Grpc { service } => grpc(stream, &hc.host, service).await,
        Probe::Http { path, expected } => {
            let req = format!("GET {path} HTTP/1.1\r\nhost: {}\r\nuser-agent: weft-health-check\r\nconnection: close\r\n\r\n", hc.host);
            if stream.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            // The status line is all that is needed.
            let mut buf = [0u8; 32];
            let mut n = 0;
            while n < 12 {
                match stream.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(k) => n += k,
                }
            }
            let status = std::str::from_utf8(&buf[9..12]).ok().and_then(|s| s.parse::<u16>().ok());
            match status {
                Some(s) if buf.starts_with(b"HTTP/1.") => {
                    if expected.is_empty() {
                        (200..300).contains(&s)
                    } else {
                        expected.contains(&s)
                    }
                }
                _ => false,
            }
        }
    }
}

/// One `grpc.health.v1.Health/Check` over a fresh h2c connection: healthy when the call
/// ends with grpc-status 0 and the answer says SERVING.
async fn grpc(stream: Conn, host: &str, service: &str) -> bool {
    use http_body_util::{BodyExt, Full};
    let Ok((mut tx, conn)) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await else {
        return false;
    };
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{host}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "weft-health-check")
        .body(Full::new(bytes::Bytes::from(weft_resilience::health::grpc_health_request(service))));
    let Ok(req) = req else { return false };
    let Ok(resp) = tx.send_request(req).await else { return false };
    if resp.status() != http::StatusCode::OK {
        return false;
    }
    let ok_status = |h: &http::HeaderMap| h.get("grpc-status").map(|v| v.as_bytes() == b"0");
    // A trailers-only answer carries its status in the headers (always an error here).
    if ok_status(resp.headers()) == Some(false) {
        return false;
    }
    let Ok(body) = resp.into_body().collect().await else { return false };
    let trailers_ok = body.trailers().and_then(ok_status).unwrap_or(false);
    trailers_ok && weft_resilience::health::grpc_health_serving(&body.to_bytes()) == Some(true)
}
