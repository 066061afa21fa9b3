//! `weft backend`: a small HTTP server for demos and tests. Every response carries
//! `x-backend: NAME`; the body is a JSON echo of the request (or, on `/echo`, the
//! request body streamed back). Latency and an error rate can be configured, and a
//! request may ask for its own delay with `x-delay-ms` and its status with `x-status`
//! (or, as httpbin, with the path `/status/N`).
//! `Upgrade` requests get `101` and an echo of the raw bytes. `GET /_served` tells how
//! many requests it has served. `--capacity` makes it saturate. Speaks HTTP/1.1 and h2c.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[derive(clap::Args, Clone)]
pub struct BackendArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The name it answers with (header x-backend and the body).
    #[arg(long, default_value = "backend")]
    pub name: String,
    /// Added to every response, e.g. "5ms".
    #[arg(long, default_value = "0s", value_parser = crate::parse_dur)]
    pub latency: Duration,
    /// Fraction of requests answered 503 (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Serve at most this many requests at once (0 = no limit); the rest wait their
    /// turn, so with --latency it models a backend that saturates.
    #[arg(long, default_value_t = 0)]
    pub capacity: usize,
}

pub fn run(a: BackendArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let l = match tokio::net::TcpListener::bind(a.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", a.listen);
                return ExitCode::FAILURE;
            }
        };
        eprintln!("backend {} listening on {}", a.name, l.local_addr().map(|x| x.to_string()).unwrap_or_default());
        tokio::select! {
            _ = serve(l, a) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}

/// Serves on `l` forever (used in-process by the demo).
pub async fn serve(l: tokio::net::TcpListener, a: BackendArgs) {
    let a: &'static BackendArgs = Box::leak(Box::new(a));
    let served: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let slots: &'static Option<tokio::sync::Semaphore> =
        Box::leak(Box::new((a.capacity > 0).then(|| tokio::sync::Semaphore::new(a.capacity))));
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req| async move {
                // A closed semaphore cannot happen (it is never closed); serve unlimited if it did.
                let _slot = match slots {
                    Some(s) => s.acquire().await.ok(),
                    None => None,
                };
                handle(a, served, req).await
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(s), svc).await;
        });
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn handle(a: &'static BackendArgs, served: &'static AtomicU64, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/_served" {
        return Ok(Response::new(full(format!("{}\n", served.load(Ordering::Relaxed)))));
    }
    served.fetch_add(1, Ordering::Relaxed);
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(a.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        if let Some(u) = req.headers().get(http::header::UPGRADE) {
            r.headers_mut().insert(http::header::UPGRADE, u.clone());
        }
        r
    } else if a.error_rate > 0.0 && fastrand::f64() < a.error_rate {
        let mut r = Response::new(full(format!("{} failed (injected error)\n", a.name)));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else if req.uri().path() == "/echo" {
        Response::new(req.into_body().boxed())
    } else {
        let status = req
            .headers()
            .get("x-status")
            .and_then(|v| v.to_str().ok())
            // (`/status/N` as httpbin answers it, for Istio's tasks that call httpbin.)
            .or_else(|| req.uri().path().strip_prefix("/status/"))
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let headers: serde_json::Map<String, serde_json::Value> =
            req.headers().iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v.to_str().unwrap_or("")))).collect();
        let body = serde_json::json!({
            "backend": a.name,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        });
        let mut r = Response::new(full(body.to_string() + "\n"));
        *r.status_mut() = status;
        r
    };
    if let Ok(v) = http::HeaderValue::from_str(&a.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}
