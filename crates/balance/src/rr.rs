use std::sync::atomic::{AtomicUsize, Ordering};

/// Smooth weighted round robin (nginx's algorithm, which Envoy's weighted RR
/// approximates): weights 5,1,1 give a a b a c a a, never a a a a a b c.
///
/// The smooth sequence is computed once per endpoint set; a pick is one atomic
/// increment and an index, so workers never contend on a lock.
#[derive(Debug)]
pub struct RoundRobin {
    n: usize,
    /// Empty when all weights are equal (plain rotation).
    schedule: Vec<u32>,
    next: AtomicUsize,
}

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 16;

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let start = if n > 0 { fastrand::usize(..n.max(1)) } else { 0 };
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        if equal || n == 0 {
            return RoundRobin { n, schedule: Vec::new(), next: AtomicUsize::new(start) };
        }
        let mut w: Vec<u64> = weights.iter().map(|&x| x.max(1) as u64).collect();
        let g = w.iter().fold(0, |a, &b| crate::gcd(a, b));
        w.iter_mut().for_each(|x| *x /= g);
        let mut total: u64 = w.iter().sum();
        if total > MAX_SCHEDULE {
            w.iter_mut().for_each(|x| *x = (*x * MAX_SCHEDULE / total).max(1));
            total = w.iter().sum();
        }
        let mut current = vec![0i64; n];
        let mut schedule = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..n {
                current[i] += w[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            schedule.push(best as u32);
        }
        let start = fastrand::usize(..schedule.len());
        RoundRobin { n, schedule, next: AtomicUsize::new(start) }
    }

    #[inline]
    pub fn pick(&self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.schedule.is_empty() {
            Some(i % self.n)
        } else {
            Some(self.schedule[i % self.schedule.len()] as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_and_proportional() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| rr.pick().unwrap()).collect();
        let mut counts = [0; 3];
        seq.iter().for_each(|&i| counts[i] += 1);
        assert_eq!(counts, [5, 1, 1]);
        // Smooth: the heavy endpoint never runs more than 2 in a row within a cycle.
        assert!(rr.schedule.windows(3).all(|w| !(w[0] == 0 && w[1] == 0 && w[2] == 0)), "{:?}", rr.schedule);
    }

    #[test]
    fn equal_weights_rotate() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let a: Vec<usize> = (0..6).map(|_| rr.pick().unwrap()).collect();
        assert_eq!(a[0..3].iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
        assert_eq!(a[0], a[3]);
        assert_eq!(RoundRobin::new(&[]).pick(), None);
    }
}
