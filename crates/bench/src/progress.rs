//! The live progress line drawn while a run goes on (only on a terminal).

use std::io::Write;

use crate::engine::LoadSpec;
use crate::record::Second;
use crate::report::{dur, group, Percentiles};

/// Redraws one status line on stderr each second.
#[derive(Default)]
pub struct Progress {
    done: u64,
}

impl Progress {
    pub fn line(&mut self, s: &Second, spec: &LoadSpec) -> String {
        self.done += s.responses + s.errors;
        let fraction = match (spec.duration, spec.requests) {
            (Some(d), _) => s.index as f64 / d.as_secs_f64().max(1.0),
            (None, Some(n)) => self.done as f64 / n.max(1) as f64,
            (None, None) => 0.0,
        }
        .clamp(0.0, 1.0);
        let width = 24;
        let filled = (fraction * width as f64).round() as usize;
        let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
        let p99 = Percentiles::of(&s.latency).p99;
        format!("[{bar}] {:>4} s  {:>9} rps  p99 {:>9}  errors {}", s.index, group(s.responses), dur(p99), group(s.errors))
    }

    pub fn draw(&mut self, s: &Second, spec: &LoadSpec) {
        let line = self.line(s, spec);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Clears the line before the report is printed.
    pub fn finish() {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}
