//! Connections that stop being HTTP: `Upgrade` (WebSocket) and `CONNECT`. Each
//! takes a fresh upstream connection and copies bytes both ways until either side
//! closes; the bytes are counted as Istio's TCP metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weft_telemetry::{PeerId, ResponseFlags};

use crate::body::{ReqBody, RespBody};
use crate::cluster::Endpoint;
use crate::finish::Finish;
use crate::request::ConnCtx;
use crate::{local, pool};

/// Forwards an upgrade request; on `101` splices the two upgraded connections.
pub async fn upgrade(
    req: Request<ReqBody>,
    down: Option<OnUpgrade>,
    ep: Arc<Endpoint>,
    mut fin: Finish,
    ctx: ConnCtx,
    version: Version,
) -> Response<RespBody> {
    let metrics = ctx.shared.metrics;
    let io = match pool::connect_for_upgrade(&ep).await {
        Ok(io) => io,
        Err(e) => {
            metrics.counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
            return local::reply(fin, StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UF, format!("{e}\n").into(), version);
        }
    };
    let (mut tx, conn) = match http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => {
            return local::reply(
                fin,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UC,
                format!("upstream handshake failed: {e}\n").into(),
                version,
            )
        }
    };
    tokio::spawn(conn.with_upgrades());
    let mut resp = match tx.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            metrics.counters.upstream_reset.fetch_add(1, Ordering::Relaxed);
            return local::reply(
                fin,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UC,
                format!("upstream reset before response headers: {e}\n").into(),
                version,
            );
        }
    };
    fin.code = resp.status().as_u16();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = down {
            let up = hyper::upgrade::on(&mut resp);
            metrics.counters.upgrades.fetch_add(1, Ordering::Relaxed);
            let dest = (ep.dest, tunnel_peer(&fin, &ep));
            ctx.shared.tunnels.spawn(async move {
                let (Ok(d), Ok(u)) = tokio::join!(down, up) else {
                    return;
                };
                splice(TokioIo::new(d), TokioIo::new(u), metrics, dest).await;
            });
        }
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, RespBody::upstream(body, Some(fin), None))
}

/// `CONNECT host:port`: a TCP tunnel to the chosen endpoint.
pub async fn connect(down: OnUpgrade, ep: Arc<Endpoint>, fin: Finish, ctx: ConnCtx, version: Version) -> Response<RespBody> {
    let metrics = ctx.shared.metrics;
    let io = match pool::connect(&ep).await {
        Ok(io) => io,
        Err(e) => {
            metrics.counters.upstream_connect_failure.fetch_add(1, Ordering::Relaxed);
            return local::reply(fin, StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UF, format!("{e}\n").into(), version);
        }
    };
    metrics.counters.upgrades.fetch_add(1, Ordering::Relaxed);
    let dest = (ep.dest, tunnel_peer(&fin, &ep));
    ctx.shared.tunnels.spawn(async move {
        if let Ok(d) = down.await {
            splice(TokioIo::new(d), io, metrics, dest).await;
        }
    });
    local::reply(fin, StatusCode::OK, ResponseFlags::NONE, bytes::Bytes::new(), version)
}

/// A tunnel's mTLS principals: the caller's on the inbound side, else this proxy's to
/// the upstream (0: plaintext both ways).
fn tunnel_peer(fin: &Finish, ep: &Endpoint) -> PeerId {
    if fin.peer != PeerId(0) {
        fin.peer
    } else {
        ep.peer
    }
}

async fn splice<A, B>(mut a: A, mut b: B, metrics: &'static weft_telemetry::Metrics, (dest, peer): (weft_telemetry::DestId, PeerId))
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok((sent, received)) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        metrics.tcp_bytes(dest, peer, sent, received);
    }
}
