//! `GET /v1/endpoints`: the registry as `weft get endpoints` shows it, each
//! registration with the time its TTL has left and the proxies whose outlier
//! detection ejects it (from their reports).

use http::StatusCode;
use weft_api::{EndpointInfo, Listing};

use super::{json_reply, Resp, Server};

impl Server {
    pub(super) async fn endpoints(&self) -> Resp {
        let ejected = self.reports.ejected(tokio::time::Instant::now());
        let p = self.plane.lock().await;
        let items: Vec<EndpointInfo> = p
            .registrations()
            .into_iter()
            .map(|r| EndpointInfo {
                ttl_left_ms: p.ttl_left_ms(&r),
                ejected_by: ejected
                    .iter()
                    .filter(|(_, e)| e.service == r.service && e.address == r.address)
                    .map(|(node, e)| format!("{node}: {}", e.reason))
                    .collect(),
                registration: r,
            })
            .collect();
        json_reply(StatusCode::OK, &Listing { revision: p.revision(), items })
    }
}
