/// Weighted random: one uniform draw, a binary search over running weight sums.
#[derive(Debug)]
pub struct WeightedRandom {
    n: usize,
    /// Empty when all weights are equal.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Self {
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let mut cumulative = Vec::new();
        if !equal {
            let mut t = 0u64;
            for &w in weights {
                t += w.max(1) as u64;
                cumulative.push(t);
            }
        }
        WeightedRandom { n: weights.len(), cumulative }
    }

    pub fn is_weighted(&self) -> bool {
        !self.cumulative.is_empty()
    }

    #[inline]
    pub fn pick(&self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        if self.cumulative.is_empty() {
            return Some(fastrand::usize(..self.n));
        }
        let total = *self.cumulative.last()?;
        let x = fastrand::u64(..total);
        Some(self.cumulative.partition_point(|&c| c <= x))
    }
}

impl WeightedRandom {
    /// Two distinct candidates for a power-of-two-choices pick (n ≥ 2), the first
    /// drawn by weight. When weighted, a clash is redrawn once by weight too.
    #[inline]
    pub fn pick_two(&self) -> Option<(usize, usize)> {
        let a = self.pick()?;
        let mut b = self.pick()?;
        if a == b && self.n > 1 {
            b = if self.is_weighted() { self.pick()? } else { (a + 1 + fastrand::usize(..self.n - 1)) % self.n };
        }
        Some((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional() {
        let r = WeightedRandom::new(&[1, 3]);
        let mut c = [0u32; 2];
        for _ in 0..40_000 {
            c[r.pick().unwrap()] += 1;
        }
        let share = c[1] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
