//! InfluxDB line protocol from Prometheus text: what `--influxdb-url` pushes. Each sample
//! of the exposition (as [`Metrics::render`](crate::Metrics::render) writes it, or any
//! Prometheus text) becomes one point: the sample's name is the measurement
//! (`istio_requests_total`, `istio_request_duration_milliseconds_bucket`), its labels
//! the tags, its value the float field `value`, all at one timestamp.
//!
//! Escaping follows the line protocol's rules, so that no label value can break a
//! line or start a new field: in measurements `,` and space; in tag keys, tag values
//! and field keys `,`, `=` and space; a backslash as `\\` everywhere; a newline or
//! carriage return as `\n`/`\r` (the protocol has no way to carry one). An empty tag
//! value is left out (the protocol allows none), and a sample that is not a finite
//! number (`NaN`, `+Inf`) is skipped.

use std::fmt::Write;

/// Appends one line per sample of `text` to `out`, each stamped `timestamp_ns` (unix
/// nanoseconds); returns how many points were written. Comments, blank lines and lines
/// that are not a well-formed sample are skipped.
pub fn from_prometheus(text: &str, timestamp_ns: u64, out: &mut String) -> usize {
    let mut points = 0;
    for line in text.lines() {
        let Some(mut s) = parse_sample(line) else { continue };
        if !s.value.is_finite() {
            continue;
        }
        s.labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        escape_into(out, s.name, &[',', ' ']);
        for (k, v) in s.labels.iter().filter(|(_, v)| !v.is_empty()) {
            out.push(',');
            escape_into(out, k, TAG_SPECIALS);
            out.push('=');
            escape_into(out, v, TAG_SPECIALS);
        }
        let _ = writeln!(out, " value={} {timestamp_ns}", s.value);
        points += 1;
    }
    points
}

/// What must be escaped in tag keys, tag values and field keys.
const TAG_SPECIALS: &[char] = &[',', '=', ' '];

/// Writes `s` with `specials`, backslashes, newlines and carriage returns escaped.
pub fn escape_into(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// One sample of Prometheus text: `name{label="value",…} value [timestamp]`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '{' || c.is_ascii_whitespace())?;
    let name = &line[..end];
    if !is_name(name, true) {
        return None;
    }
    let (labels, rest) = match line[end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), &line[end..]),
    };
    let value = rest.split_ascii_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// `label="value",…}` (just after the `{`): the labels, unescaped, and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let key = key.trim();
        if !is_name(key, false) {
            return None;
        }
        let (value, rest) = quoted(rest.trim_start().strip_prefix('"')?)?;
        labels.push((key, value));
        s = rest;
    }
}

/// A label value just after its opening quote, unescaped (`\\`, `\"`, `\n`), and what
/// follows its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// A Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label name (no `:`).
fn is_name(s: &str, metric: bool) -> bool {
    let ok = |c: char, first: bool| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (!first && c.is_ascii_digit());
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests;
