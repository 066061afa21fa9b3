use crate::WeightedRandom;

/// LEAST_REQUEST: power of two choices. Two distinct endpoints are drawn (by weight,
/// when weights differ) and the one with fewer active requests per unit of weight
/// wins; a tie keeps the first draw.
///
/// Envoy's weighted form schedules by `weight / (active + 1)` with an EDF queue, which
/// needs a lock; drawing both candidates by weight and comparing
/// `(active + 1) / weight` gives the same long-run shares at rest and the same
/// load-avoidance under load, lock-free.
#[derive(Debug)]
pub struct LeastRequest {
    weights: Vec<u32>,
    draw: WeightedRandom,
}

impl LeastRequest {
    pub fn new(weights: &[u32]) -> Self {
        LeastRequest { weights: weights.iter().map(|w| (*w).max(1)).collect(), draw: WeightedRandom::new(weights) }
    }

    #[inline]
    pub fn pick<L: crate::HasLoad>(&self, loads: &[L]) -> Option<usize> {
        let n = self.weights.len();
        if n <= 1 {
            return if n == 1 { Some(0) } else { None };
        }
        let (a, b) = self.draw.pick_two()?;
        let la = loads.get(a).map_or(0, |l| l.load().active()) as u64;
        let lb = loads.get(b).map_or(0, |l| l.load().active()) as u64;
        // la/wa <= lb/wb  ⇔  la*wb <= lb*wa. A tie keeps the first draw, which was
        // made by weight, so shares at rest follow the weights exactly.
        let (wa, wb) = (self.weights[a] as u64, self.weights[b] as u64);
        Some(if la * wb <= lb * wa { a } else { b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointLoad;

    #[test]
    fn avoids_the_busy_endpoint() {
        let loads: Vec<EndpointLoad> = (0..3).map(|_| EndpointLoad::default()).collect();
        for _ in 0..50 {
            loads[0].start();
        }
        let b = LeastRequest::new(&[1, 1, 1]);
        let c = crate::tally(3000, 3, || b.pick(&loads));
        // Endpoint 0 is only chosen when both candidates are 0, which cannot happen.
        assert_eq!(c[0], 0, "{c:?}");
    }

    #[test]
    fn weighted_at_rest() {
        let loads: Vec<EndpointLoad> = (0..2).map(|_| EndpointLoad::default()).collect();
        let b = LeastRequest::new(&[1, 3]);
        let c = crate::tally(40_000, 2, || b.pick(&loads));
        let share = c[1] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
