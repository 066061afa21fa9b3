//! What a run measures: HDR histograms of latency, time to first byte and
//! connect time, status codes, errors by kind, and a per-second series.
//! Each worker thread records into its own [`Recorder`]; the results merge at the end.

use hdrhistogram::Histogram;

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection (or the h2 handshake) could not be made.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The server closed or reset the connection (or the h2 stream) before the response ended.
    Reset,
    /// The response could not be parsed.
    Protocol,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Reset, ErrorKind::Protocol, ErrorKind::Io];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
        }
    }

    /// Classifies an I/O error seen on an established connection.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => ErrorKind::Reset,
            K::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// Longest value a histogram holds: one hour in nanoseconds (longer ones saturate).
const MAX_NS: u64 = 3_600_000_000_000;

/// Latencies are recorded in nanoseconds, up to an hour, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_NS, 3).expect("static histogram bounds are valid")
}

/// The coarser histogram kept for each second of the series.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_NS, 2).expect("static histogram bounds are valid")
}

/// One second of the series, as measured by one thread.
#[derive(Clone)]
pub struct Second {
    /// 1 for the first second of the run.
    pub index: u64,
    pub responses: u64,
    pub ok: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Second {
    pub fn new(index: u64) -> Second {
        Second { index, responses: 0, ok: 0, errors: 0, latency: second_histogram() }
    }

    pub fn merge(&mut self, other: &Second) {
        self.responses += other.responses;
        self.ok += other.ok;
        self.errors += other.errors;
        self.latency.add(&other.latency).expect("histograms share bounds");
    }
}

/// Everything one thread measured.
pub struct Recorder {
    pub latency: Histogram<u64>,
    pub ttfb: Histogram<u64>,
    /// Open loop: how late each request left, against its intended send time.
    pub send_delay: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// Responses by status code (index = code, 0..1000).
    pub statuses: Vec<u64>,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub connections: u64,
    /// Open loop: requests scheduled but never sent because the run ended first.
    pub unsent: u64,
    pub second: Second,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            ttfb: histogram(),
            send_delay: histogram(),
            connect: histogram(),
            statuses: vec![0; 1000],
            errors: [0; ErrorKind::ALL.len()],
            connections: 0,
            unsent: 0,
            second: Second::new(1),
        }
    }
}

/// 2xx and 3xx count as success; 4xx and 5xx are answers, counted but not successes.
pub fn is_success(status: u16) -> bool {
    (200..400).contains(&status)
}

impl Recorder {
    pub fn response(&mut self, status: u16, latency_ns: u64, ttfb_ns: u64) {
        self.latency.saturating_record(latency_ns);
        self.ttfb.saturating_record(ttfb_ns);
        self.statuses[usize::from(status.min(999))] += 1;
        self.second.responses += 1;
        if is_success(status) {
            self.second.ok += 1;
        }
        self.second.latency.saturating_record(latency_ns);
    }

    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
        self.second.errors += 1;
    }

    pub fn connected(&mut self, ns: u64) {
        self.connections += 1;
        self.connect.saturating_record(ns);
    }

    /// Closes the current second of the series and starts the next.
    pub fn take_second(&mut self) -> Second {
        let next = Second::new(self.second.index + 1);
        std::mem::replace(&mut self.second, next)
    }

    pub fn responses(&self) -> u64 {
        self.statuses.iter().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.iter().enumerate().filter(|(code, _)| is_success(*code as u16)).map(|(_, n)| n).sum()
    }

    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latency.add(&other.latency).expect("histograms share bounds");
        self.ttfb.add(&other.ttfb).expect("histograms share bounds");
        self.send_delay.add(&other.send_delay).expect("histograms share bounds");
        self.connect.add(&other.connect).expect("histograms share bounds");
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        self.connections += other.connections;
        self.unsent += other.unsent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let mut a = Recorder::default();
        a.response(200, 2_000_000, 1_000_000);
        a.response(503, 3_000_000, 1_000_000);
        a.error(ErrorKind::Timeout);
        let mut b = Recorder::default();
        b.response(302, 500, 500);
        b.connected(40_000);
        a.merge(&b);
        assert_eq!((a.responses(), a.ok(), a.error_total(), a.connections), (3, 2, 1, 1));
        assert_eq!(a.latency.min(), 500);
        let s = a.take_second();
        assert_eq!((s.index, s.responses, s.ok, s.errors), (1, 2, 1, 1));
        assert_eq!(a.second.index, 2);
    }
}
