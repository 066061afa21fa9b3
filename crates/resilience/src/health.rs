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
}
