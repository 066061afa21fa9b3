//! Traffic mirroring (`mirror` / `mirrorPercentage`): a copy of the request goes to
//! another cluster, fire-and-forget, with `-shadow` appended to its authority as
//! Envoy does. A request body is teed frame by frame through a small channel; if the
//! mirror falls behind, its copy is abandoned rather than slowing the real request.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Request, Version};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use weft_balance::PickCtx;

use crate::body::ReqBody;
use crate::cluster::Cluster;
use crate::pool;
use crate::request::ConnCtx;

/// Frames of body the mirror may lag behind before it is dropped.
const TEE_FRAMES: usize = 16;

/// The sending half of a mirror's body; dropping it ends the mirror's body.
pub struct Tee {
    tx: mpsc::Sender<Bytes>,
}

impl Tee {
    /// Copies a frame to the mirror; if the mirror lags, stops copying (the mirror's
    /// request then fails on its own, and the real one never waits).
    pub fn feed(&mut self, b: &Bytes) {
        if self.tx.try_send(b.clone()).is_err() {
            let (dead, _) = mpsc::channel(1);
            self.tx = dead;
        }
    }
}

/// Starts the mirror copy of `req` and returns the request to send for real.
pub fn send(req: Request<ReqBody>, mc: &Cluster, ctx: ConnCtx, authority: &str) -> Request<ReqBody> {
    let Some(i) = mc.balancer.pick(&PickCtx { hash: None, loads: &mc.endpoints }) else {
        return req;
    };
    let ep = mc.endpoints[i].clone();
    let (parts, body) = req.into_parts();
    let shadow_host = match authority.split_once(':') {
        Some((h, p)) => format!("{h}-shadow:{p}"),
        None => format!("{authority}-shadow"),
    };
    let mut mparts = http::request::Builder::new()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .map(|r| r.into_parts().0)
        .ok();
    let (body, mbody) = match body {
        ReqBody::Empty => (ReqBody::Empty, ReqBody::Empty),
        ReqBody::Stream { body, state, tee: None } => {
            let (tx, rx) = mpsc::channel(TEE_FRAMES);
            (ReqBody::Stream { body, state, tee: Some(Tee { tx }) }, ReqBody::Channel(rx))
        }
        other => (other, ReqBody::Empty),
    };
    if let Some(mp) = mparts.as_mut() {
        mp.headers = parts.headers.clone();
        if mp.version != Version::HTTP_2 {
            if let Ok(v) = HeaderValue::from_str(&shadow_host) {
                mp.headers.insert(HOST, v);
            }
        } else if let Some(u) = crate::headers::absolute_uri(&shadow_host, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")) {
            mp.uri = u;
        }
    }
    if let Some(mp) = mparts {
        let mreq = Request::from_parts(mp, mbody);
        let metrics = ctx.shared.metrics;
        metrics.counters.mirrored.fetch_add(1, Ordering::Relaxed);
        let worker = ctx.worker;
        let h2 = mreq.version() == Version::HTTP_2;
        tokio::spawn(async move {
            // The mirror's answer is read and thrown away; its connection goes back
            // to the pool once the body is drained.
            if h2 {
                if let Ok(r) = pool::send_h2(&ep, worker, mreq).await {
                    let _ = r.into_body().collect().await;
                }
            } else if let Ok((r, ret)) = pool::send_h1(&ep, worker, mreq).await {
                if r.into_body().collect().await.is_ok() {
                    ret.release();
                }
            }
        });
    }
    Request::from_parts(parts, body)
}
