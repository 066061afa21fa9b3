//! Durations as Istio writes them: protobuf JSON (`"1.5s"`) and the Go/humantime
//! forms people also use (`"100ms"`, `"1h30m"`).

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration field of an Istio resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

/// Parses `"1.5s"`, `"100ms"`, `"2m"`, `"1h 30m"`, `"0s"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    // protobuf JSON: decimal seconds with an `s` suffix ("1.500s", "0.1s").
    if let Some(num) = t.strip_suffix('s') {
        if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.') {
            let secs: f64 = num.parse().map_err(|_| format!("invalid duration {t:?}"))?;
            // Not `from_secs_f64`: it panics past `Duration::MAX` (found by fuzzing).
            return Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {t:?} is out of range"));
        }
    }
    // Go style "1h30m" has no spaces; humantime wants them between units.
    let mut spaced = String::with_capacity(t.len() + 4);
    let mut prev_alpha = false;
    for c in t.chars() {
        if c.is_ascii_digit() && prev_alpha {
            spaced.push(' ');
        }
        prev_alpha = c.is_ascii_alphabetic();
        spaced.push(c);
    }
    humantime::parse_duration(&spaced).map_err(|_| format!("invalid duration {t:?} (expected e.g. \"1.5s\", \"100ms\", \"1h\")"))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"1.5s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!("invalid duration {v} (a duration needs a unit, e.g. \"{v}s\")")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("").is_err());
    }

    /// Found by fuzzing: seconds past `Duration::MAX` panicked (and aborted `weft
    /// validate`, the control plane's `apply` and every proxy loading the file).
    #[test]
    fn out_of_range_seconds_are_an_error() {
        for s in ["18446744073709551616s", "18446744073709551615s", "1000000000000000000000000000.5s"] {
            assert_eq!(parse_duration(s), Err(format!("duration {s:?} is out of range")));
        }
        assert_eq!(parse_duration("31536000000.5s").unwrap(), Duration::from_millis(31_536_000_000_500));
    }
}
