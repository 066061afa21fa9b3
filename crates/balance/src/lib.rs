//! Load balancers, pure: they see endpoint weights, identities and live load
//! counters, never a socket. Each pick is lock-free; the shared state is atomics.
//!
//! Semantics follow Envoy (see `shared/design/semantics.md`); `PeakEwma` is a weft
//! extension modelled on Linkerd's latency-aware balancer.
#![forbid(unsafe_code)]

mod ewma;
pub mod hash;
mod load;
pub mod locality;
mod maglev;
mod p2c;
mod random;
mod ring;
mod rr;

pub use ewma::PeakEwma;
pub use load::EndpointLoad;
pub use maglev::{Maglev, MAX_TABLE as MAGLEV_MAX_TABLE};
pub use p2c::LeastRequest;
pub use random::WeightedRandom;
pub use ring::{RingHash, MAX_RING};
pub use rr::RoundRobin;

/// Anything that carries an endpoint's live load (the proxy's endpoint type does).
pub trait HasLoad {
    fn load(&self) -> &EndpointLoad;
}

impl HasLoad for EndpointLoad {
    #[inline]
    fn load(&self) -> &EndpointLoad {
        self
    }
}

impl<T: HasLoad> HasLoad for std::sync::Arc<T> {
    #[inline]
    fn load(&self) -> &EndpointLoad {
        (**self).load()
    }
}

/// What a pick may look at besides the balancer's own tables.
pub struct PickCtx<'a, L> {
    /// The request's hash key, for the consistent-hash balancers.
    pub hash: Option<u64>,
    /// Live load per endpoint, indexed like the endpoints the balancer was built from.
    pub loads: &'a [L],
}

/// One balancer over a fixed set of endpoints (a new set builds a new balancer).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
    PeakEwma(PeakEwma),
    RingHash(RingHash),
    Maglev(Maglev),
}

impl Balancer {
    /// The index of the chosen endpoint, or `None` when there are none.
    #[inline]
    pub fn pick<L: HasLoad>(&self, ctx: &PickCtx<'_, L>) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(),
            Balancer::Random(b) => b.pick(),
            Balancer::LeastRequest(b) => b.pick(ctx.loads),
            Balancer::PeakEwma(b) => b.pick(ctx.loads),
            // With no key (e.g. the header is absent) Envoy picks at random.
            Balancer::RingHash(b) => match ctx.hash {
                Some(h) => b.pick(h),
                None => b.pick(fastrand::u64(..)),
            },
            Balancer::Maglev(b) => match ctx.hash {
                Some(h) => b.pick(h),
                None => b.pick(fastrand::u64(..)),
            },
        }
    }
}

/// Greatest common divisor, for reducing weights.
pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Test helper: how often each endpoint is picked over `n` picks.
#[cfg(test)]
pub(crate) fn tally(n: usize, endpoints: usize, mut pick: impl FnMut() -> Option<usize>) -> Vec<u32> {
    let mut c = vec![0u32; endpoints];
    for _ in 0..n {
        c[pick().expect("a pick")] += 1;
    }
    c
}
