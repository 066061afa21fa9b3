//! The admin endpoint: `/metrics`, `/ready`, `/config_dump`, `/clusters`, `/stats/inbound`
//! (the inbound listener's cumulative counts, JSON), and
//! `/debug/pprof/{profile,heap}` ([`weft_profiling`]). It runs on its own small runtime
//! (the main thread's), so scrapes never compete with traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::state::Shared;

/// Admin connections open at once; past it new ones are closed at accept (a scraper or
/// an operator needs a handful; the cap keeps idle or half-sent ones from piling up).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin request head must arrive within this (nginx's `client_header_timeout`), and a
/// connection idle this long between requests is closed.
pub const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn serve(shared: &'static Shared, listener: tokio::net::TcpListener) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors: pause rather than spin on the queued connection.
                if let Some(pause) = crate::server::accept_backoff(&e) {
                    shared.metrics.counters.accept_exhausted.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| async move { Ok::<_, Infallible>(answer(shared, req).await) });
            let mut b = hyper::server::conn::http1::Builder::new();
            // hyper's header timeout also bounds the wait for the next request's head.
            b.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(ADMIN_HEADER_TIMEOUT);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            drop(slot);
        });
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A profile (which answers after its seconds), or one of the routes below.
async fn answer(shared: &'static Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let uri = req.uri();
    if !weft_profiling::is_profiling_path(uri.path()) {
        return route(shared, req);
    }
    let a = weft_profiling::serve(uri.path(), uri.query()).await;
    let mut r = Response::new(Full::new(a.body));
    *r.status_mut() = a.status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(a.content_type));
    r
}

fn route(shared: &'static Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", shared.metrics.render()),
        "/ready" => {
            if shared.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
            } else {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            }
        }
        // (Cheaper than /metrics: what `weft run --replicas` samples every second.)
        "/stats/inbound" => {
            text(StatusCode::OK, "application/json", serde_json::to_string(&crate::report::inbound(shared)).unwrap_or_default() + "\n")
        }
        "/config_dump" => {
            let rt = shared.current.load();
            let v = json!({
                "revision": rt.revision,
                "files": match &shared.source {
                    crate::state::ConfigSource::Files(f) => f.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    crate::state::ConfigSource::ControlPlane(_) => Vec::new(),
                },
                "control_plane": match &shared.source {
                    crate::state::ConfigSource::ControlPlane(url) => Some(url.as_str()),
                    crate::state::ConfigSource::Files(_) => None,
                },
                "identity": shared.identity.as_ref().map(|i| identity_json(i)),
                "resources": rt.resources.iter().map(|r| &**r).collect::<Vec<_>>(),
                "clusters": rt.specs.iter().map(|s| &**s).collect::<Vec<_>>(),
                // Mesh DNS's table: each service's addresses, and whether they are a VIP.
                "dns": rt.vips.iter().map(|(host, addresses, vip)| json!({
                    "host": host,
                    "addresses": addresses,
                    "vip": vip,
                })).collect::<Vec<_>>(),
            });
            text(StatusCode::OK, "application/json", serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
        }
        "/clusters" => {
            let rt = shared.current.load();
            let clusters: Vec<_> = rt
                .clusters
                .iter()
                .map(|c| {
                    json!({
                        "name": c.spec.name,
                        "service": c.spec.service,
                        "port": c.spec.port,
                        "subset": c.spec.subset,
                        "lb": c.spec.lb,
                        "protocol": c.spec.pool.protocol,
                        "endpoints": c.endpoints.iter().enumerate().map(|(i, e)| json!({
                            "address": e.id,
                            "weight": e.spec.weight,
                            "locality": e.spec.locality,
                            // Locality priority level (0 = nearest); null without levels, or when the endpoint gets no traffic.
                            "priority": c.levels.as_ref().and_then(|lv| lv.level_of.get(i).copied().filter(|l| *l != u8::MAX)),
                            "labels": e.spec.labels,
                            "health": match (e.checked.is_healthy(), e.health.ejection(crate::cluster::now_ns())) {
                                (false, _) => "UNHEALTHY",
                                (true, Some(_)) => "EJECTED",
                                (true, None) => "HEALTHY",
                            },
                            "ejection": e.health.ejection(crate::cluster::now_ns()).map(|(until, reason)| json!({
                                "reason": reason.name(),
                                "remaining_ms": until.saturating_sub(crate::cluster::now_ns()) / 1_000_000,
                            })),
                            "active_requests": e.load.active(),
                            "requests_total": e.requests.load(Ordering::Relaxed),
                            "errors_total": e.errors.load(Ordering::Relaxed),
                            "idle_connections": e.pools.iter().map(|p| p.idle_len()).sum::<usize>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&json!({ "revision": rt.revision, "clusters": clusters })).unwrap_or_default() + "\n",
            )
        }
        "/" => text(StatusCode::OK, "text/plain", "weft admin: /metrics /ready /config_dump /clusters /stats/inbound\n".into()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found; try /metrics /ready /config_dump /clusters\n".into()),
    }
}

fn text(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

/// The workload certificate as `/config_dump` shows it: never the key.
fn identity_json(i: &weft_tls::WorkloadIdentity) -> serde_json::Value {
    let s = i.summary();
    let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    json!({
        "spiffe_id": i.id().to_string(),
        "subject": s.subject,
        "issuer": s.issuer,
        "sans": s.sans,
        "serial": s.serial,
        "not_before": unix(s.not_before),
        "not_after": unix(s.not_after),
        "renew_at": unix(i.renew_at()),
    })
}
