//! Traffic mirroring (`mirror` / `mirrorPercentage`): this filter decides whether a
//! request is mirrored and to which cluster; the copy is made when the upstream
//! request is built ([`crate::mirror::send`]), so that its body can be teed.

use std::sync::Arc;

use super::Flow;
use crate::cluster::Cluster;
use crate::request::RequestCtx;

#[derive(Clone)]
pub struct Mirror {
    /// The mirror's cluster by the request's port (`by_port`), else `default`.
    pub default: Arc<Cluster>,
    pub by_port: Vec<(u16, Arc<Cluster>)>,
    /// Fraction of requests mirrored (0..=1).
    pub fraction: f64,
}

impl Mirror {
    pub fn on_request(&self, cx: &mut RequestCtx) -> Flow {
        if self.fraction >= 1.0 || fastrand::f64() < self.fraction {
            let port = cx.port.unwrap_or(0);
            let c = self.by_port.iter().find(|(p, _)| *p == port).map(|(_, c)| c).unwrap_or(&self.default);
            cx.filters.mirror = Some(c.clone());
        }
        Flow::Next
    }
}
