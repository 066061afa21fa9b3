//! Active health checking: consecutive probe results flip an endpoint between healthy
//! and unhealthy at the configured thresholds (per endpoint, in atomics).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub struct Checked {
    healthy: AtomicBool,
    /// Consecutive results agreeing with the latest one.
    streak: AtomicU32,
    last_ok: AtomicBool,
}

impl Default for Checked {
    /// An endpoint counts as healthy until checks say otherwise.
    fn default() -> Self {
        Checked { healthy: AtomicBool::new(true), streak: AtomicU32::new(0), last_ok: AtomicBool::new(true) }
    }
}

impl Checked {
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one probe; returns the new state when it changed.
    pub fn record(&self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        let streak = if self.last_ok.swap(ok, Ordering::Relaxed) == ok {
            self.streak.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.streak.store(1, Ordering::Relaxed);
            1
        };
        let healthy = self.is_healthy();
        let flip = if ok { !healthy && streak >= healthy_threshold.max(1) } else { healthy && streak >= unhealthy_threshold.max(1) };
        if flip {
            self.healthy.store(ok, Ordering::Relaxed);
            return Some(ok);
        }
        None
    }
}

/// gRPC health checking (`grpc.health.v1.Health/Check`): the request's gRPC frame, a
/// `HealthCheckRequest { string service = 1 }` behind the 5-byte message prefix.
pub fn grpc_health_request(service: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// The `status` of a `HealthCheckResponse` body (one gRPC frame): `Some(true)` for
/// SERVING (1), `Some(false)` for any other status, `None` for a body that is not one
/// well-formed uncompressed frame.
pub fn grpc_health_serving(body: &[u8]) -> Option<bool> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0u64;
    while !msg.is_empty() {
        let (tag, n) = varint(msg)?;
        msg = &msg[n..];
        match tag & 7 {
            0 => {
                let (v, n) = varint(msg)?;
                msg = &msg[n..];
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let (l, n) = varint(msg)?;
                msg = msg.get(n + usize::try_from(l).ok()?..)?;
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status == 1)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let c = Checked::default();
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), None, "a success breaks the streak");
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), Some(false));
        assert!(!c.is_healthy());
        assert_eq!(c.record(true, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), Some(true));
        assert_eq!(c.record(true, 2, 3), None, "no change, no report");
    }
    #[test]
    fn grpc_health_frames() {
        assert_eq!(grpc_health_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(grpc_health_request("svc"), vec![0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']);
        let long = "x".repeat(200);
        assert_eq!(&grpc_health_request(&long)[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 2, 0x08, 1]), Some(true));
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 2, 0x08, 2]), Some(false), "NOT_SERVING");
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 0]), Some(false), "UNKNOWN (empty message)");
        // An unknown field before the status is skipped.
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 5, 0x12, 1, b'z', 0x08, 1]), Some(true));
        assert_eq!(grpc_health_serving(&[1, 0, 0, 0, 2, 0x08, 1]), None, "compressed");
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 9, 0x08, 1]), None, "truncated");
        assert_eq!(grpc_health_serving(&[0, 0, 0, 0, 2, 0x08, 0xff]), None, "bad varint");
    }
}
