//! Errors and warnings that name the file, the resource and the field path.

use std::fmt;

/// Where a resource came from: the file and its 1-based document number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Source {
    pub file: String,
    pub doc: usize,
}

/// One problem in a config file.
///
/// Displays as `mesh.yaml: DestinationRule reviews: spec.trafficPolicy.loadBalancer.simple:
/// unknown value "ROUND_ROBBIN" (expected one of …)`. When the document has no
/// kind or name yet, the document number stands in for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Source,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(source: &Source, kind: Option<&str>, name: Option<&str>, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            source: source.clone(),
            kind: kind.map(str::to_owned),
            name: name.map(str::to_owned),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source.file)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) if !n.is_empty() => write!(f, "{k} {n}: ")?,
            (Some(k), _) => write!(f, "document {} ({k}): ", self.source.doc)?,
            _ => write!(f, "document {}: ", self.source.doc)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one load; the config is rejected when `errors` is non-empty.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Rewrites serde's enum message into the one users read:
/// ``unknown variant `X`, expected one of `A`, `B` `` → `unknown value "X" (expected one of A, B)`.
pub(crate) fn humanize_serde(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((value, tail)) = rest.split_once('`') {
            let expected =
                tail.trim_start_matches(", ").trim_start_matches("expected one of ").trim_start_matches("expected ").replace('`', "");
            return format!("unknown value \"{value}\" (expected one of {expected})");
        }
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_enum_message_is_rewritten() {
        let m = humanize_serde("unknown variant `ROUND_ROBBIN`, expected one of `RANDOM`, `ROUND_ROBIN`");
        assert_eq!(m, "unknown value \"ROUND_ROBBIN\" (expected one of RANDOM, ROUND_ROBIN)");
    }
}
