use super::*;
use crate::{DestLabels, Metrics, PeerId, Protocol, ResponseFlags, SeriesKey};

type Pairs = Vec<(String, String)>;

/// A strict reading of one line, as InfluxDB splits it: measurement, tags, fields,
/// timestamp, with `\x` read as the character x (and `\n`/`\r` as the control character).
fn split_line(line: &str) -> (String, Pairs, Pairs, String) {
    assert!(!line.contains('\n') && !line.contains('\r'), "one line: {line:?}");
    // Cut at unescaped separators: a backslash always takes the next character with it.
    let mut parts: Vec<Vec<String>> = vec![vec![String::new()]];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().unwrap();
        match c {
            '\\' => {
                let n = chars.next().expect("no backslash ends a line");
                cur.last_mut().unwrap().push(match n {
                    'n' => '\n',
                    'r' => '\r',
                    other => other,
                });
            }
            ' ' => parts.push(vec![String::new()]),
            ',' => cur.push(String::new()),
            '=' => cur.last_mut().unwrap().push('\u{0}'),
            c => cur.last_mut().unwrap().push(c),
        }
    }
    assert_eq!(parts.len(), 3, "measurement+tags, fields, timestamp: {line:?}");
    let kv = |s: &String| {
        let (k, v) = s.split_once('\u{0}').unwrap_or_else(|| panic!("key=value in {line:?}"));
        assert!(!v.contains('\u{0}'), "one unescaped = per pair: {line:?}");
        (k.to_owned(), v.to_owned())
    };
    let measurement = parts[0][0].clone();
    assert!(!measurement.contains('\u{0}'));
    let tags = parts[0][1..].iter().map(kv).collect();
    let fields = parts[1].iter().map(kv).collect();
    (measurement, tags, fields, parts[2].concat())
}

const HOSTILE: &str = "a,b=c d\"e\\f\ng\rh\\";

#[test]
fn hostile_label_values_stay_inside_their_tag() {
    let m = Metrics::new(HOSTILE, "ns with space");
    let d = m.dest_id(DestLabels { service: format!("{HOSTILE}.svc"), namespace: "x=y".into(), version: "v,1".into(), inbound: false });
    let key = SeriesKey { dest: d, code: 200, flags: ResponseFlags::NONE, protocol: Protocol::Http, grpc_status: -1, peer: PeerId(0) };
    for _ in 0..3 {
        m.record(key, 2.0, 1, 5);
    }
    let mut out = String::new();
    let n = from_prometheus(&m.render(), 1_700_000_000_000_000_000, &mut out);
    assert_eq!(n, out.lines().count());
    let line = out.lines().find(|l| l.starts_with("istio_requests_total,")).expect("the request series");
    let (measurement, tags, fields, ts) = split_line(line);
    assert_eq!(measurement, "istio_requests_total");
    let tag = |k: &str| tags.iter().find(|t| t.0 == k).map(|t| t.1.as_str());
    assert_eq!(tag("source_workload"), Some(HOSTILE), "{line}");
    assert_eq!(tag("destination_service"), Some(format!("{HOSTILE}.svc").as_str()));
    assert_eq!(tag("source_workload_namespace"), Some("ns with space"));
    assert_eq!(tag("destination_service_namespace"), Some("x=y"));
    assert_eq!(tag("destination_version"), Some("v,1"));
    assert_eq!(tag("grpc_response_status"), None, "empty values are left out");
    assert_eq!(fields, vec![("value".to_owned(), "3".to_owned())]);
    assert_eq!(ts, "1700000000000000000");
    for l in out.lines() {
        split_line(l);
    }
}

#[test]
fn escapes_exactly_what_the_spec_names() {
    let esc = |s: &str, sp: &[char]| {
        let mut o = String::new();
        escape_into(&mut o, s, sp);
        o
    };
    assert_eq!(esc("a,b c=d", &[',', ' ']), "a\\,b\\ c=d", "measurement: commas and spaces");
    assert_eq!(esc("a,b c=d", TAG_SPECIALS), "a\\,b\\ c\\=d", "tags: commas, spaces, equals signs");
    assert_eq!(esc("q\"\\\n", TAG_SPECIALS), "q\"\\\\\\n");
}

#[test]
fn every_kind_of_sample_converts() {
    let text = "# HELP x y\n# TYPE x counter\nx 5\nh_bucket{le=\"+Inf\",a=\"1\"} 2\nh_sum{a=\"1\"} 0.25\nf{a=\"q\\\"\\\\\\n\"} 1.5 1234\n";
    let mut out = String::new();
    assert_eq!(from_prometheus(text, 7, &mut out), 4);
    assert_eq!(out, "x value=5 7\nh_bucket,a=1,le=+Inf value=2 7\nh_sum,a=1 value=0.25 7\nf,a=q\"\\\\\\n value=1.5 7\n");
}

#[test]
fn malformed_and_non_finite_samples_are_skipped() {
    let text = "x NaN\ny +Inf\n9bad 1\nz{a=\"unterminated} 1\nw{a=b} 1\nv{=\"x\"} 1\nu\nt{a=\"1\"} nope\nok 1\n";
    let mut out = String::new();
    assert_eq!(from_prometheus(text, 1, &mut out), 1, "{out}");
    assert_eq!(out, "ok value=1 1\n");
}
