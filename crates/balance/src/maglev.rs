use crate::hash::{hash64, mix};

/// Maglev (Google's consistent hash, Envoy's `MAGLEV`): a lookup table of prime size
/// in which each endpoint fills slots along its own permutation, in turns
/// proportional to its weight. A pick is one modulo and one load.
/// Envoy's largest Maglev table (a prime) and its default.
pub const MAX_TABLE: u64 = 5_000_011;
pub const DEFAULT_TABLE: u64 = 65_537;

#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// `table_size` must be prime (validated by the config compiler).
    pub fn new(ids: &[String], weights: &[u32], table_size: u64) -> Self {
        let n = ids.len();
        // (Validation refuses a table over Envoy's largest; past it, the default.)
        let m = if table_size > MAX_TABLE { DEFAULT_TABLE } else { table_size.max(1) } as usize;
        if n == 0 {
            return Maglev { table: Vec::new() };
        }
        let w: Vec<f64> = (0..n).map(|i| weights.get(i).copied().unwrap_or(1).max(1) as f64).collect();
        let wmax = w.iter().cloned().fold(0.0, f64::max);
        let perm: Vec<(usize, usize)> = ids
            .iter()
            .map(|id| {
                let h = hash64(id.as_bytes());
                let offset = (h % m as u64) as usize;
                let skip = if m > 1 { (mix(h ^ 0x9e37_79b9_7f4a_7c15) % (m as u64 - 1)) as usize + 1 } else { 1 };
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut placed = vec![0f64; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        let mut round = 0f64;
        while filled < m {
            round += 1.0;
            for i in 0..n {
                // Endpoint i takes a slot this round only while it is behind its share.
                if placed[i] + 1.0 > round * w[i] / wmax {
                    continue;
                }
                let (offset, skip) = perm[i];
                loop {
                    let c = (offset + next[i] * skip) % m;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        placed[i] += 1.0;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        Maglev { table }
    }

    #[inline]
    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_filled_and_weighted() {
        let ids: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:80")).collect();
        let m = Maglev::new(&ids, &[1, 1, 2], 65537);
        assert!(m.table.iter().all(|&x| x < 3));
        let c2 = m.table.iter().filter(|&&x| x == 2).count() as f64 / 65537.0;
        assert!((c2 - 0.5).abs() < 0.01, "{c2}");
    }

    #[test]
    fn huge_table_and_weights_are_bounded() {
        let ids: Vec<String> = (0..2).map(|i| format!("10.0.0.{i}:80")).collect();
        let m = Maglev::new(&ids, &[u32::MAX, 1], u64::MAX);
        assert_eq!(m.table.len() as u64, DEFAULT_TABLE);
        assert!(m.table.iter().all(|&x| x < 2));
    }

    #[test]
    fn removal_keeps_most_keys() {
        let ids: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let a = Maglev::new(&ids, &[1; 5], 65537);
        let b = Maglev::new(&ids[..4], &[1; 4], 65537);
        let moved = (0..10_000u64)
            .filter(|k| {
                let h = mix(*k);
                ids[a.pick(h).unwrap()] != ids[b.pick(h).unwrap()]
            })
            .count() as f64
            / 10_000.0;
        assert!(moved < 0.45, "{moved}");
    }
}
