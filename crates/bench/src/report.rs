//! A run's results, and their text, JSON and CSV forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{LoadSpec, Outcome};
use crate::record::{ErrorKind, Second};

/// Percentiles of one measured phase, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn us(ns: f64) -> f64 {
    (ns / 100.0).round() / 10.0
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| us(h.value_at_quantile(p) as f64);
        Percentiles {
            count: h.len(),
            min: us(h.min() as f64),
            mean: us(h.mean()),
            stdev: us(h.stdev()),
            p50: q(0.50),
            p75: q(0.75),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: us(h.max() as f64),
        }
    }
}

/// One row of the per-second series.
#[derive(Clone, Debug, Serialize)]
pub struct SecondRow {
    pub second: u64,
    pub responses: u64,
    /// Responses per second over the part of this second the run covered.
    pub rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl SecondRow {
    /// `elapsed_s`: the run's length, so that a last, partial second reads as a rate.
    pub fn of(s: &Second, elapsed_s: f64) -> SecondRow {
        let p = Percentiles::of(&s.latency);
        let covered = (elapsed_s - (s.index - 1) as f64).clamp(0.001, 1.0);
        let rps = (s.responses as f64 / covered).round();
        SecondRow { second: s.index, responses: s.responses, rps, ok: s.ok, errors: s.errors, p50_us: p.p50, p99_us: p.p99, max_us: p.max }
    }
}

/// Everything `weft bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// "closed" or "open".
    pub mode: &'static str,
    pub url: String,
    /// "http/1.1" or "h2c".
    pub protocol: &'static str,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    /// The open loop's target rate.
    pub target_rps: Option<f64>,
    pub duration_s: f64,
    /// Requests that finished: answered or failed.
    pub requests: u64,
    pub responses: u64,
    /// Responses with a 2xx or 3xx status.
    pub ok: u64,
    pub success_rate: f64,
    /// Responses per second.
    pub rps: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub status_codes: BTreeMap<String, u64>,
    /// Open loop: requests the schedule held that never went out before the run ended.
    pub unsent: u64,
    /// Open loop: from the intended send time; closed loop: from the actual send.
    pub latency_us: Percentiles,
    /// From the send to the first byte of the response.
    pub ttfb_us: Percentiles,
    /// Open loop: how late requests left against the schedule (waiting for a free
    /// connection, or the load generator itself falling behind).
    pub send_delay_us: Percentiles,
    pub connect_us: Percentiles,
    pub connections_opened: u64,
    pub per_second: Vec<SecondRow>,
    #[serde(skip)]
    pub latency: Histogram<u64>,
}

impl Report {
    pub fn new(url: &str, spec: &LoadSpec, out: &Outcome) -> Report {
        let rec = &out.recorder;
        let responses = rec.responses();
        let ok = rec.ok();
        let errors = rec.error_total();
        let secs = out.elapsed.as_secs_f64();
        let requests = responses + errors;
        let mut status_codes = BTreeMap::new();
        for (code, n) in rec.statuses.iter().enumerate().filter(|(_, n)| **n > 0) {
            status_codes.insert(code.to_string(), *n);
        }
        Report {
            mode: spec.mode(),
            url: url.to_string(),
            protocol: if spec.h2 { "h2c" } else { "http/1.1" },
            connections: spec.connections,
            streams: if spec.h2 { spec.streams } else { 1 },
            threads: spec.threads.clamp(1, spec.connections.max(1)),
            target_rps: spec.rate,
            duration_s: (secs * 1000.0).round() / 1000.0,
            requests,
            responses,
            ok,
            success_rate: if requests == 0 { 0.0 } else { ok as f64 / requests as f64 },
            rps: if secs > 0.0 { responses as f64 / secs } else { 0.0 },
            errors,
            errors_by_kind: ErrorKind::ALL.iter().map(|k| (k.name(), rec.errors[*k as usize])).filter(|(_, n)| *n > 0).collect(),
            status_codes,
            unsent: rec.unsent,
            latency_us: Percentiles::of(&rec.latency),
            ttfb_us: Percentiles::of(&rec.ttfb),
            send_delay_us: Percentiles::of(&rec.send_delay),
            connect_us: Percentiles::of(&rec.connect),
            connections_opened: rec.connections,
            per_second: out.seconds.iter().map(|s| SecondRow::of(s, secs)).collect(),
            latency: rec.latency.clone(),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The per-second series, then a `total` row.
    pub fn csv(&self) -> String {
        let mut out = String::from("second,responses,ok,errors,rps,p50_us,p99_us,max_us\n");
        for r in &self.per_second {
            let _ = writeln!(out, "{},{},{},{},{},{},{},{}", r.second, r.responses, r.ok, r.errors, r.rps, r.p50_us, r.p99_us, r.max_us);
        }
        let l = &self.latency_us;
        let _ = writeln!(out, "total,{},{},{},{:.1},{},{},{}", self.responses, self.ok, self.errors, self.rps, l.p50, l.p99, l.max);
        out
    }

    pub fn text(&self) -> String {
        let mut o = String::new();
        let mode = match self.target_rps {
            Some(r) => format!("open loop at {} requests/s (latency from each request's intended send time)", group(r.round() as u64)),
            None => "closed loop (latency from each request's send)".to_string(),
        };
        let _ = writeln!(o, "{} {}, {mode}", self.protocol, self.url);
        let streams = if self.protocol == "h2c" { format!(" × {} streams", self.streams) } else { String::new() };
        let _ = writeln!(o, "  {} connections{streams}, {} thread(s), {:.2} s", self.connections, self.threads, self.duration_s);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  requests     {:>12}   ({} answered, {} failed)",
            group(self.requests),
            group(self.responses),
            group(self.errors)
        );
        let achieved = match self.target_rps {
            Some(t) if t > 0.0 => format!("   ({:.1} % of the target)", 100.0 * self.rps / t),
            _ => String::new(),
        };
        let _ = writeln!(o, "  rps          {:>12.1}{achieved}", self.rps);
        let _ = writeln!(o, "  success      {:>11.2} %   (2xx and 3xx)", 100.0 * self.success_rate);
        let codes: Vec<String> = self.status_codes.iter().map(|(c, n)| format!("{c}: {}", group(*n))).collect();
        let _ = writeln!(o, "  status codes {}", if codes.is_empty() { "none".to_string() } else { codes.join(", ") });
        if self.errors > 0 {
            let kinds: Vec<String> = self.errors_by_kind.iter().map(|(k, n)| format!("{k}: {}", group(*n))).collect();
            let _ = writeln!(o, "  errors       {}", kinds.join(", "));
        }
        if self.unsent > 0 {
            let _ = writeln!(o, "  unsent       {:>12}   (scheduled, still queued when the run ended)", group(self.unsent));
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p75", "p90", "p95", "p99", "p99.9", "max", "mean"
        );
        for (name, p) in [
            ("latency", &self.latency_us),
            ("first byte", &self.ttfb_us),
            ("send delay", &self.send_delay_us),
            ("connect", &self.connect_us),
        ] {
            if p.count == 0 {
                continue;
            }
            let _ = writeln!(
                o,
                "  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                name,
                dur(p.p50),
                dur(p.p75),
                dur(p.p90),
                dur(p.p95),
                dur(p.p99),
                dur(p.p999),
                dur(p.max),
                dur(p.mean)
            );
        }
        let _ = writeln!(o, "  ({} connections opened)", group(self.connections_opened));
        o
    }
}

/// A duration in microseconds, in the unit that reads best.
pub fn dur(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(dur(523.4), "523µs");
        assert_eq!(dur(2034.0), "2.03ms");
        assert_eq!(dur(1_500_000.0), "1.50s");
    }
}
