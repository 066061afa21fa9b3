//! How many instances `weft run --replicas MIN..MAX` wants: Kubernetes' horizontal pod
//! autoscaler rule, pure (the caller says when and what it observed).
//!
//! - desired = ceil(current × observed / target), unchanged while observed/target is
//!   within 10 % of 1;
//! - bounded by MIN..MAX, and a step up at most doubles the count;
//! - stabilised against flapping: a step down goes no lower than the highest
//!   recommendation of the last `down_window` (default 5 min), a step up no higher than
//!   the lowest of the last `up_window` (default 0: at once).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The most recommendations remembered (windows of at most an hour, a sample a second).
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min: usize,
    pub max: usize,
    pub up_window: Duration,
    pub down_window: Duration,
}

pub struct Scaler {
    policy: Policy,
    /// Past raw recommendations, oldest first.
    recent: VecDeque<(Instant, usize)>,
}

/// The HPA rule without memory (the control plane's, [`weft_control::replicas::hpa`]):
/// what `current` instances observing `observed` (a mean per instance, or a latency)
/// against `target` call for, bounded by MIN..MAX. Nonsense (a NaN, a negative value,
/// no instance) changes nothing.
pub fn rule(p: &Policy, current: usize, observed: f64, target: f64) -> usize {
    weft_control::replicas::hpa(current, observed, target, p.min, p.max)
}

impl Scaler {
    pub fn new(policy: Policy) -> Scaler {
        Scaler { policy, recent: VecDeque::new() }
    }

    /// The count to run now, `current` instances observing `observed` against `target`.
    pub fn recommend(&mut self, now: Instant, current: usize, observed: f64, target: f64) -> usize {
        let p = self.policy;
        let raw = rule(&p, current, observed, target);
        let (mut up, mut down) = (raw, raw);
        for (at, r) in &self.recent {
            let age = now.saturating_duration_since(*at);
            if age < p.up_window {
                up = up.min(*r);
            }
            if age < p.down_window {
                down = down.max(*r);
            }
        }
        self.remember(now, raw);
        let mut next = current;
        if next < up {
            next = up;
        }
        if next > down {
            next = down;
        }
        next.min(current.saturating_mul(2).max(1)).clamp(p.min, p.max)
    }

    fn remember(&mut self, now: Instant, raw: usize) {
        let keep = self.policy.up_window.max(self.policy.down_window);
        while self.recent.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= keep) || self.recent.len() >= MAX_REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((now, raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy(min: usize, max: usize, down: u64) -> Policy {
        Policy { min, max, up_window: Duration::ZERO, down_window: Duration::from_secs(down) }
    }

    #[test]
    fn the_rule_is_kubernetes_own() {
        let p = policy(1, 10, 0);
        assert_eq!(rule(&p, 1, 2.0, 1.0), 2);
        assert_eq!(rule(&p, 3, 4.0, 2.0), 6);
        assert_eq!(rule(&p, 4, 0.5, 1.0), 2);
        // Within 10 %: no change either way.
        assert_eq!(rule(&p, 4, 1.09, 1.0), 4);
        assert_eq!(rule(&p, 4, 0.91, 1.0), 4);
        assert_eq!(rule(&p, 4, 1.2, 1.0), 5, "ceil(4.8)");
        // Bounded, and nonsense changes nothing.
        assert_eq!(rule(&p, 4, 1e300, 1.0), 10);
        assert_eq!(rule(&p, 4, 0.0, 1.0), 1);
        assert_eq!(rule(&p, 4, f64::NAN, 1.0), 4);
        assert_eq!(rule(&p, 4, f64::INFINITY, 1.0), 4);
        assert_eq!(rule(&p, 4, -3.0, 1.0), 4);
        assert_eq!(rule(&p, 0, 3.0, 1.0), 1);
        assert_eq!(rule(&policy(2, 3, 0), 1, 1.0, 1.0), 2, "below MIN: MIN");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_up_at_most_doubles() {
        let mut s = Scaler::new(policy(1, 64, 300));
        let mut current = 1;
        let mut seen = Vec::new();
        for _ in 0..8 {
            current = s.recommend(Instant::now(), current, 100.0, 1.0);
            seen.push(current);
            tokio::time::advance(SECOND).await;
        }
        assert_eq!(seen, [2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_down_waits_out_the_window() {
        let mut s = Scaler::new(policy(1, 10, 60));
        assert_eq!(s.recommend(Instant::now(), 1, 3.0, 1.0), 2);
        tokio::time::advance(SECOND).await;
        assert_eq!(s.recommend(Instant::now(), 2, 1.5, 1.0), 3);
        // The load stops: the highest recommendation of the last minute holds.
        let quiet_since = Instant::now();
        let mut current = 3;
        while Instant::now() < quiet_since + Duration::from_secs(58) {
            tokio::time::advance(SECOND).await;
            current = s.recommend(Instant::now(), current, 0.0, 1.0);
            assert_eq!(current, 3, "after {:?}", quiet_since.elapsed());
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(s.recommend(Instant::now(), current, 0.0, 1.0), 1, "a minute later: MIN");
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_load_holds_the_highest() {
        let mut s = Scaler::new(policy(1, 10, 30));
        let mut current = 4;
        for i in 0..100 {
            let observed = if i % 2 == 0 { 1.0 } else { 0.2 };
            current = s.recommend(Instant::now(), current, observed, 1.0);
            assert_eq!(current, 4, "step {i}");
            tokio::time::advance(SECOND).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_up_window_ignores_a_short_spike() {
        let mut s = Scaler::new(Policy { up_window: Duration::from_secs(5), ..policy(1, 10, 0) });
        assert_eq!(s.recommend(Instant::now(), 2, 1.0, 1.0), 2);
        tokio::time::advance(SECOND).await;
        assert_eq!(s.recommend(Instant::now(), 2, 3.0, 1.0), 2, "a spike: the lowest of the last 5 s is 2");
        tokio::time::advance(SECOND).await;
        assert_eq!(s.recommend(Instant::now(), 2, 1.0, 1.0), 2);
        // Sustained for the whole window: up.
        let mut current = 2;
        for _ in 0..5 {
            tokio::time::advance(SECOND).await;
            current = s.recommend(Instant::now(), current, 3.0, 1.0);
        }
        assert_eq!(current, 4, "at most doubled");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let mut s = Scaler::new(policy(1, 10, 3600));
        for _ in 0..10_000 {
            s.recommend(Instant::now(), 2, 1.0, 1.0);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(s.recent.len() <= MAX_REMEMBERED);
    }
}
