/// Weighted random in O(1): Vose's alias method. Each of the n slots holds a
/// threshold and an alias; a pick draws a slot and a number below the total weight
/// and takes the slot or its alias. Exact for integer weights.
#[derive(Debug)]
pub struct WeightedRandom {
    n: usize,
    /// Sum of weights; 0 when all weights are equal (plain uniform draw).
    total: u64,
    /// Per slot: keep the slot when the draw is below this (out of `total`).
    keep: Vec<u64>,
    alias: Vec<u32>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        if equal || n == 0 {
            return WeightedRandom { n, total: 0, keep: Vec::new(), alias: Vec::new() };
        }
        let w: Vec<u64> = weights.iter().map(|&x| x.max(1) as u64).collect();
        let total: u64 = w.iter().sum();
        // Scaled so that an average slot holds exactly `total`.
        let mut scaled: Vec<u64> = w.iter().map(|x| x * n as u64).collect();
        let mut keep = vec![total; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= total - scaled[s];
            if scaled[l] < total {
                large.pop();
                small.push(l);
            }
        }
        WeightedRandom { n, total, keep, alias }
    }

    pub fn is_weighted(&self) -> bool {
        self.total != 0
    }

    #[inline]
    pub fn pick(&self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        // One 64-bit draw: the high half picks the slot, the low half the threshold
        // (multiply-shift; the bias is below 2^-32).
        let r = fastrand::u64(..);
        let i = (((r >> 32) * self.n as u64) >> 32) as usize;
        if self.total == 0 {
            return Some(i);
        }
        let x = (((r & 0xFFFF_FFFF) as u128 * self.total as u128) >> 32) as u64;
        Some(if x < self.keep[i] { i } else { self.alias[i] as usize })
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
    fn alias_table_is_exact() {
        // Every slot's keep + the parts aliased to it add up to each weight exactly.
        for weights in [vec![1u32, 3], vec![5, 1, 1], vec![1, 2, 3, 4, 100], vec![7, 7, 1]] {
            let r = WeightedRandom::new(&weights);
            let n = weights.len() as u64;
            let mut mass = vec![0u64; weights.len()];
            for i in 0..weights.len() {
                mass[i] += r.keep[i];
                mass[r.alias[i] as usize] += r.total - r.keep[i];
            }
            let want: Vec<u64> = weights.iter().map(|&w| w as u64 * n).collect();
            assert_eq!(mass, want, "{weights:?}");
        }
    }

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
