//! Sleeping until an exact instant, for the open loop's send schedule.
//!
//! tokio's timer wheel has millisecond resolution, so `sleep_until` wakes up to
//! 1 ms late: at 4,000 requests/s that turns a steady schedule into bursts of
//! four and puts up to a millisecond of the tool's own lateness into every
//! latency measured from the intended send time. On Linux a timerfd, armed with
//! nanosecond precision and read through the runtime's epoll, wakes within tens
//! of microseconds; the pacer learns that wake-up lateness and arms the timer
//! that much early, so wake-ups land around the deadline rather than after it.
//! (A request that leaves a little early is timed from when it left.) It never
//! spins: a spinning load generator competes with the server for the CPU.

use std::time::Instant;

#[cfg(target_os = "linux")]
pub struct Pacer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    /// How late timer wake-ups have been lately (a moving average).
    lateness: std::cell::Cell<std::time::Duration>,
}

/// The most the pacer arms early.
#[cfg(target_os = "linux")]
const MAX_LEAD: std::time::Duration = std::time::Duration::from_micros(200);

#[cfg(target_os = "linux")]
impl Pacer {
    pub fn new() -> std::io::Result<Pacer> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays open and the same for its whole life.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        Ok(Pacer { fd: fd.map_err(|e| e.into_parts().1)?, lateness: std::cell::Cell::new(std::time::Duration::from_micros(50)) })
    }

    /// Returns close to `deadline`: a few microseconds either side of it.
    pub async fn until(&self, deadline: Instant) -> std::io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        loop {
            let now = Instant::now();
            let Some(left) = deadline.checked_duration_since(now).filter(|d| !d.is_zero()) else { return Ok(()) };
            let lead = self.lateness.get().min(MAX_LEAD);
            let Some(wait) = left.checked_sub(lead).filter(|w| *w > std::time::Duration::from_micros(2)) else {
                // Waking up would take longer than what is left.
                return Ok(());
            };
            let spec = Itimerspec {
                it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ },
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // Reading the expiration count empties the fd; the next expiry is a new edge.
            match rustix::io::read(self.fd.get_ref(), &mut expirations[..]) {
                Ok(_) | Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
            let late = Instant::now().saturating_duration_since(now + wait);
            self.lateness.set((self.lateness.get() * 7 + late) / 8);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub struct Pacer;

#[cfg(not(target_os = "linux"))]
impl Pacer {
    pub fn new() -> std::io::Result<Pacer> {
        Ok(Pacer)
    }

    /// Millisecond resolution off Linux.
    pub async fn until(&self, deadline: Instant) -> std::io::Result<()> {
        tokio::time::sleep_until(deadline.into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wakes_on_time() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let pacer = Pacer::new().unwrap();
            let mut late = Vec::new();
            for _ in 0..50 {
                let deadline = Instant::now() + Duration::from_micros(300);
                pacer.until(deadline).await.unwrap();
                let now = Instant::now();
                late.push(now.saturating_duration_since(deadline).max(deadline.saturating_duration_since(now)));
            }
            late.sort();
            // The median distance from the deadline is well under tokio's 1 ms tick (a loaded CI machine may add a little).
            assert!(late[25] < Duration::from_micros(150), "median distance {:?}", late[25]);
        });
    }
}
