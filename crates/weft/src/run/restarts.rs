//! When a crashed app is started again: exponential back-off (1 s, 2 s, 4 s … at most
//! 30 s) over the crashes of the last window, and a crash loop — more than `max` crashes
//! within the window — ends it (systemd's `Restart=on-failure` with a start limit,
//! Kubernetes' CrashLoopBackOff). Pure: the caller says when.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(30);

pub struct Restarts {
    window: Duration,
    max: usize,
    crashes: VecDeque<Instant>,
}

impl Restarts {
    pub fn new(max: usize, window: Duration) -> Restarts {
        Restarts { window, max, crashes: VecDeque::new() }
    }

    /// A crash at `now`: how long to wait before starting the app again, or None when it
    /// is crash-looping (give up).
    pub fn crashed(&mut self, now: Instant) -> Option<Duration> {
        while self.crashes.front().is_some_and(|t| now.saturating_duration_since(*t) > self.window) {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        let n = self.crashes.len();
        if n > self.max {
            return None;
        }
        Some(FIRST.saturating_mul(1 << (n - 1).min(16)).min(LONGEST))
    }

    /// Crashes within the window.
    pub fn recent(&self) -> usize {
        self.crashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_gives_up_on_a_crash_loop() {
        let t0 = Instant::now();
        let mut r = Restarts::new(3, Duration::from_secs(60));
        assert_eq!(r.crashed(t0), Some(Duration::from_secs(1)));
        assert_eq!(r.crashed(t0 + Duration::from_secs(2)), Some(Duration::from_secs(2)));
        assert_eq!(r.crashed(t0 + Duration::from_secs(5)), Some(Duration::from_secs(4)));
        assert_eq!(r.crashed(t0 + Duration::from_secs(10)), None, "4 crashes in a minute: a crash loop");
        // Crashes far apart are no loop, and start the back-off over.
        let mut r = Restarts::new(3, Duration::from_secs(60));
        for i in 0..10 {
            assert_eq!(r.crashed(t0 + Duration::from_secs(120 * i)), Some(Duration::from_secs(1)));
        }
        assert_eq!(r.recent(), 1);
        let mut r = Restarts::new(100, Duration::from_secs(3600));
        let last = (0..20).map(|i| r.crashed(t0 + Duration::from_secs(i))).last().flatten();
        assert_eq!(last, Some(Duration::from_secs(30)), "at most 30 s");
    }
}
