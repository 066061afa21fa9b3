use crate::hash::{hash64, mix};

/// Ring hash (Envoy's `RING_HASH`, ketama-style): each endpoint owns points on a
/// 64-bit ring in proportion to its weight; a key goes to the first point at or after
/// its hash. Points are hashed from the endpoint's identity (its address), not its
/// index, so removing one of N endpoints moves only the keys it owned (about 1/N).
/// The ring holds between `minimumRingSize` and twice that many points.
#[derive(Debug)]
pub struct RingHash {
    points: Vec<(u64, u32)>,
}

/// Envoy's cap on the ring size (`maximumRingSize`'s default, which Istio does not
/// expose): the ring never holds more points, whatever `minimumRingSize` and the weights.
pub const MAX_RING: u64 = 8 * 1024 * 1024;

impl RingHash {
    /// `ids` identify the endpoints (e.g. "10.0.0.1:8080"); `weights` parallel them.
    pub fn new(ids: &[String], weights: &[u32], minimum_ring_size: u64) -> Self {
        let total: u64 = weights.iter().map(|w| (*w).max(1) as u64).sum();
        if ids.is_empty() || total == 0 {
            return RingHash { points: Vec::new() };
        }
        // Points per unit of weight, rounded up to a power of two: the count an
        // endpoint gets then rarely changes when another joins or leaves, so only the
        // leaver's keys move (plain `size * w / total` would reshuffle ~10 % more).
        let per_unit = minimum_ring_size.clamp(1, MAX_RING).div_ceil(total).next_power_of_two();
        let per_unit = per_unit.min((MAX_RING / total).max(1));
        // Past MAX_RING points of weight, Envoy's scaling: the ring is as large as
        // gives the lightest endpoint its share of `minimumRingSize`, but at most
        // MAX_RING, and each endpoint gets its share of it (at least one point): the
        // ring stays within MAX_RING + endpoints whatever the weights (one weight of
        // 4294967295 once asked for 64 GB).
        let scaled = per_unit * total > MAX_RING;
        let min_w = weights.iter().take(ids.len()).map(|w| (*w).max(1) as u128).min().unwrap_or(1);
        let (t, min_ring) = (total as u128, minimum_ring_size.clamp(1, MAX_RING) as u128);
        let target = ((min_w * min_ring).div_ceil(t) * t / min_w).min(MAX_RING as u128);
        let count_of = |w: u64| if scaled { ((w as u128 * target / t) as u64).max(1) } else { per_unit * w };
        let capacity: u64 = (0..ids.len()).map(|i| count_of(weights.get(i).copied().unwrap_or(1).max(1) as u64)).sum();
        let mut points = Vec::with_capacity(capacity as usize);
        for (i, id) in ids.iter().enumerate() {
            let w = weights.get(i).copied().unwrap_or(1).max(1) as u64;
            let count = count_of(w);
            let base = hash64(id.as_bytes());
            for k in 0..count {
                points.push((mix(base ^ mix(k.wrapping_add(1))), i as u32));
            }
        }
        points.sort_unstable();
        RingHash { points }
    }

    #[inline]
    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 < hash);
        let p = if i == self.points.len() { self.points[0] } else { self.points[i] };
        Some(p.1 as usize)
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn removal_moves_about_one_nth() {
        let a = ids(5);
        let r5 = RingHash::new(&a, &[1; 5], 1024);
        let b: Vec<String> = a[..4].to_vec();
        let r4 = RingHash::new(&b, &[1; 4], 1024);
        let mut moved = 0;
        for k in 0..10_000u64 {
            let h = mix(k);
            let x = &a[r5.pick(h).unwrap()];
            let y = &b[r4.pick(h).unwrap()];
            if x != y {
                moved += 1;
            }
        }
        let frac = moved as f64 / 10_000.0;
        assert!(frac > 0.15 && frac < 0.3, "moved {frac}");
    }

    #[test]
    fn huge_weights_keep_the_ring_bounded() {
        let r = RingHash::new(&ids(3), &[u32::MAX, 1, u32::MAX / 2], u64::MAX);
        assert!(r.len() as u64 <= MAX_RING + 3, "{}", r.len());
        let mut c = [0u32; 3];
        for k in 0..30_000u64 {
            c[r.pick(mix(k)).unwrap()] += 1;
        }
        assert!(c[0] > c[2] && c[2] > c[1], "{c:?}");
        let one = RingHash::new(&ids(1), &[u32::MAX], 1024);
        assert!(one.len() == 1024 && one.pick(7) == Some(0), "{}", one.len());
    }

    #[test]
    fn weights_shape_the_ring() {
        let r = RingHash::new(&ids(2), &[1, 3], 4096);
        let mut c = [0u32; 2];
        for k in 0..40_000u64 {
            c[r.pick(mix(k)).unwrap()] += 1;
        }
        let share = c[1] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.05, "{share}");
    }
}
