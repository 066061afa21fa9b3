//! `weft run --replicas`'s flags, checked before anything starts, and each instance's
//! own arguments: instance i on `--port` + i (`{port}` in the command, `$PORT`), its
//! sidecar's listeners on `--inbound`/`--outbound` + i when those are given.

use std::net::SocketAddr;
use std::time::Duration;

use super::scaler::Policy;
use super::RunArgs;

/// The most instances one `weft run` may run.
pub const MAX_REPLICAS: usize = 64;
/// The longest stabilisation window.
const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// The highest target p95: the duration histogram's last bound (10 s).
const MAX_P95: Duration = Duration::from_secs(10);
/// The highest target concurrency per instance.
const MAX_TARGET: f64 = 1e6;
/// In the app's arguments: the instance's port.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// The registration label the control plane's recommendation reads the target from.
pub const TARGET_LABEL: &str = weft_control::replicas::TARGET_LABEL;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub min: usize,
    pub max: usize,
}

/// `N` or `MIN..MAX`, 1 ≤ MIN ≤ MAX ≤ [`MAX_REPLICAS`].
pub fn parse_replicas(s: &str) -> Result<Replicas, String> {
    let count = |v: &str| -> Result<usize, String> {
        let n: usize = v.trim().parse().map_err(|_| format!("{:?} is not a count", weft_api::truncate(v, 32)))?;
        if !(1..=MAX_REPLICAS).contains(&n) {
            return Err(format!("{n}: 1 to {MAX_REPLICAS} instances"));
        }
        Ok(n)
    };
    let (min, max) = match s.split_once("..") {
        Some((lo, hi)) => (count(lo)?, count(hi)?),
        None => (count(s)?, count(s)?),
    };
    if min > max {
        return Err(format!("{min}..{max}: MIN is above MAX"));
    }
    Ok(Replicas { min, max })
}

/// A target concurrency: a number above 0, at most a million.
pub fn parse_target(s: &str) -> Result<f64, String> {
    let t: f64 = s.trim().parse().map_err(|_| format!("{:?} is not a number", weft_api::truncate(s, 32)))?;
    if !(t.is_finite() && (weft_control::replicas::MIN_TARGET..=MAX_TARGET).contains(&t)) {
        return Err(format!("{}: from {} to {MAX_TARGET}", weft_api::truncate(s.trim(), 32), weft_control::replicas::MIN_TARGET));
    }
    Ok(t)
}

/// What the fleet scales on: (the metric's target, whether it is the p95).
pub fn target(a: &RunArgs) -> Option<(f64, bool)> {
    match (a.target_concurrency, a.target_p95) {
        (Some(c), _) => Some((c, false)),
        (None, Some(p95)) => Some((p95.as_secs_f64() * 1000.0, true)),
        (None, None) => None,
    }
}

/// The scaling policy of `a`, refusing what cannot work, before anything starts.
pub fn policy(a: &RunArgs) -> Result<Policy, String> {
    let r = a.replicas.ok_or("no --replicas")?;
    if r.min < r.max && target(a).is_none() {
        return Err(format!("--replicas {}..{}: scaling needs --target-concurrency or --target-p95", r.min, r.max));
    }
    if let Some(p) = a.target_p95.filter(|p| p.is_zero() || *p > MAX_P95) {
        return Err(format!("--target-p95 {p:?}: above 0, at most {MAX_P95:?} (the duration histogram's last bound)"));
    }
    for (flag, w) in [("--scale-down-window", a.scale_down_window), ("--scale-up-window", a.scale_up_window)] {
        if w > MAX_WINDOW {
            return Err(format!("{flag} {w:?}: at most 1h"));
        }
    }
    let ports = |flag: &str, base: u16| -> Result<(u16, u16), String> {
        let last = usize::from(base) + r.max - 1;
        u16::try_from(last)
            .map(|l| (base, l))
            .map_err(|_| format!("{flag} {base}: {} instances need ports up to {last}, past 65535", r.max))
    };
    let mut ranges = vec![("--port", ports("--port", a.port)?)];
    for (flag, addr) in [("--inbound", a.inbound), ("--outbound", a.outbound)] {
        if let Some(addr) = addr {
            ranges.push((flag, ports(flag, addr.port())?));
        }
    }
    for (i, (f1, (lo1, hi1))) in ranges.iter().enumerate() {
        for (f2, (lo2, hi2)) in &ranges[i + 1..] {
            if lo1 <= hi2 && lo2 <= hi1 {
                return Err(format!("{f1} {lo1}..={hi1} and {f2} {lo2}..={hi2} overlap: each instance takes the next port of each"));
            }
        }
    }
    Ok(Policy { min: r.min, max: r.max, up_window: a.scale_up_window, down_window: a.scale_down_window })
}

/// Instance `i`'s own arguments: its port, the command with `{port}` replaced, its
/// sidecar's listeners and admin, the target label; no `--metrics` (the fleet serves it).
pub fn instance_args(a: &RunArgs, i: usize, admin: SocketAddr) -> RunArgs {
    let shift = |addr: SocketAddr| SocketAddr::new(addr.ip(), addr.port().saturating_add(i as u16));
    let port = a.port.saturating_add(i as u16);
    let mut one = a.clone();
    one.port = port;
    one.command = a.command.iter().map(|arg| arg.replace(PORT_PLACEHOLDER, &port.to_string())).collect();
    one.inbound = a.inbound.map(shift);
    one.outbound = a.outbound.map(shift);
    one.metrics = None;
    one.instance = Some(i);
    one.sidecar_admin = Some(admin);
    if let Some(t) = a.target_concurrency {
        one.labels.retain(|(k, _)| k != TARGET_LABEL);
        one.labels.push((TARGET_LABEL.into(), t.to_string()));
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_bounded_and_ordered() {
        assert_eq!(parse_replicas("3"), Ok(Replicas { min: 3, max: 3 }));
        assert_eq!(parse_replicas("1..3"), Ok(Replicas { min: 1, max: 3 }));
        assert!(parse_replicas("3..1").unwrap_err().contains("MIN is above MAX"));
        assert!(parse_replicas("0..2").unwrap_err().contains("1 to 64"));
        assert!(parse_replicas("1..65").unwrap_err().contains("1 to 64"));
        assert!(parse_replicas("1..99999999999999999999999").unwrap_err().contains("not a count"));
        assert!(parse_replicas("-1..2").unwrap_err().contains("not a count"));
        assert!(parse_replicas("..").is_err() && parse_replicas("").is_err() && parse_replicas("1..2..3").is_err());
        let long = parse_replicas(&"9".repeat(10_000)).unwrap_err();
        assert!(long.len() < 100, "{long}");
    }

    #[test]
    fn targets_are_bounded() {
        assert_eq!(parse_target("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "1e7", "x"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
