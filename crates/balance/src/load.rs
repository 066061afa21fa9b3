use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Live load of one endpoint, shared by every worker: active requests and the
/// peak-EWMA latency estimate. Plain atomics; races only blur an estimate.
#[derive(Debug)]
pub struct EndpointLoad {
    pub active: AtomicU32,
    /// The latency estimate in nanoseconds, as f64 bits.
    pub(crate) ewma_ns: AtomicU64,
    /// When the estimate was last updated (caller's clock, nanoseconds).
    pub(crate) stamp_ns: AtomicU64,
}

impl Default for EndpointLoad {
    fn default() -> Self {
        EndpointLoad {
            active: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(crate::ewma::DEFAULT_RTT_NS.to_bits()),
            stamp_ns: AtomicU64::new(0),
        }
    }
}

impl EndpointLoad {
    #[inline]
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn start(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn finish(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Feeds one observed latency into the peak-EWMA estimate.
    pub fn observe(&self, rtt_ns: u64, now_ns: u64) {
        crate::ewma::observe(self, rtt_ns as f64, now_ns);
    }

    /// The current latency estimate in nanoseconds (decayed to `now_ns`).
    pub fn estimate_ns(&self, now_ns: u64) -> f64 {
        crate::ewma::decayed(self, now_ns)
    }
}
