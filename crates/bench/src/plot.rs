//! An SVG of a run for a person to look at: latency over time (p50, p99 and
//! max of each second) and the latency percentile curve.

use std::fmt::Write as _;

use crate::report::{dur, Report};

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;

/// One panel's frame: maps data to pixels with linear axes starting at zero.
struct Panel {
    y0: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, v: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * v / self.x_max.max(f64::MIN_POSITIVE)
    }

    fn y(&self, v: f64) -> f64 {
        self.y0 + PANEL_H - PANEL_H * (v / self.y_max.max(f64::MIN_POSITIVE)).min(1.0)
    }

    fn frame(&self, out: &mut String, title: &str, x_label: &str, x_ticks: &[(f64, String)]) {
        let _ = writeln!(out, r#"<text x="{LEFT}" y="{}" font-weight="bold">{title}</text>"#, self.y0 - 12.0);
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = writeln!(out, r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, W - RIGHT);
            let _ = writeln!(out, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, dur(v));
        }
        for (v, label) in x_ticks {
            let x = self.x(*v);
            let _ = writeln!(out, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#, self.y0 + PANEL_H + 16.0);
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            self.y0 + PANEL_H + 34.0
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            self.y0,
            W - LEFT - RIGHT
        );
    }

    fn line(&self, out: &mut String, points: &[(f64, f64)], color: &str, label: &str, legend_row: usize) {
        let pts: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y))).collect();
        let _ = writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, pts.join(" "));
        let ly = self.y0 + 14.0 + 16.0 * legend_row as f64;
        let _ = writeln!(out, r#"<text x="{}" y="{ly}" fill="{color}" text-anchor="end">{label}</text>"#, W - RIGHT - 8.0);
    }
}

/// The whole picture, as an SVG document.
pub fn svg(report: &Report) -> String {
    let height = TOP + 2.0 * (PANEL_H + 70.0);
    let mut out = String::new();
    let _ =
        writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mode = if report.target_rps.is_some() { "open loop" } else { "closed loop" };
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">{} {} · {mode} · {:.0} rps · {} requests</text>"#,
        report.protocol,
        escape(&report.url),
        report.rps,
        report.requests
    );

    // Latency over time.
    let rows = &report.per_second;
    let y_max = rows.iter().map(|r| r.p99_us).fold(0.0, f64::max).max(rows.iter().map(|r| r.p50_us).fold(0.0, f64::max)) * 1.25;
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let time = Panel { y0: TOP + 30.0, x_max: rows.len().max(1) as f64, y_max };
    let ticks: Vec<(f64, String)> = (0..=rows.len()).step_by((rows.len() / 10).max(1)).map(|s| (s as f64, s.to_string())).collect();
    time.frame(&mut out, "Latency per second (max clipped to the chart)", "seconds", &ticks);
    let series =
        |f: fn(&crate::report::SecondRow) -> f64| -> Vec<(f64, f64)> { rows.iter().map(|r| (r.second as f64 - 0.5, f(r))).collect() };
    time.line(&mut out, &series(|r| r.max_us), "#bbb", "max", 0);
    time.line(&mut out, &series(|r| r.p99_us), "#d62728", "p99", 1);
    time.line(&mut out, &series(|r| r.p50_us), "#1f77b4", "p50", 2);

    // Percentile curve: x is the number of nines, so the tail gets the room.
    let h = &report.latency;
    if !h.is_empty() {
        let nines_max = ((h.len() as f64).log10()).clamp(1.0, 6.0);
        let points: Vec<(f64, f64)> = (0..=200)
            .map(|i| {
                let nines = nines_max * f64::from(i) / 200.0;
                let q = 1.0 - 10f64.powf(-nines);
                (nines, h.value_at_quantile(q) as f64 / 1000.0)
            })
            .collect();
        let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let curve = Panel { y0: TOP + PANEL_H + 100.0, x_max: nines_max, y_max };
        let ticks: Vec<(f64, String)> = (0..=nines_max.floor() as u32).map(|n| (f64::from(n), percentile_label(n))).collect();
        curve.frame(&mut out, "Latency by percentile", "percentile", &ticks);
        curve.line(&mut out, &points, "#2ca02c", "latency", 0);
    }
    out.push_str("</svg>\n");
    out
}

fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0".into(),
        1 => "90".into(),
        n => format!("99.{}", "9".repeat(n as usize - 2)).trim_end_matches('.').to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1), "90");
        assert_eq!(percentile_label(2), "99");
        assert_eq!(percentile_label(4), "99.99");
    }
}
