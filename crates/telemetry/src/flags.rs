use std::fmt;

/// Envoy's response flags, as a bit set (several can apply to one request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(pub u16);

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    /// No healthy upstream.
    pub const UH: Self = Self(1);
    /// Upstream connection failure.
    pub const UF: Self = Self(1 << 1);
    /// Upstream overflow (circuit breaking).
    pub const UO: Self = Self(1 << 2);
    /// No route configured.
    pub const NR: Self = Self(1 << 3);
    /// Upstream retry limit exceeded.
    pub const URX: Self = Self(1 << 4);
    /// Upstream request timeout.
    pub const UT: Self = Self(1 << 5);
    /// Delay injected.
    pub const DI: Self = Self(1 << 6);
    /// Fault injected.
    pub const FI: Self = Self(1 << 7);
    /// Rate limited.
    pub const RL: Self = Self(1 << 8);
    /// Upstream connection termination.
    pub const UC: Self = Self(1 << 9);
    /// Downstream connection termination.
    pub const DC: Self = Self(1 << 10);
    /// Downstream protocol error.
    pub const DPE: Self = Self(1 << 11);
    /// Stream idle timeout.
    pub const SI: Self = Self(1 << 12);
    /// Denied by an AuthorizationPolicy (Envoy's RBAC filter).
    pub const RBAC: Self = Self(1 << 13);
    /// Denied by an external authorizer (CUSTOM; Envoy's ext_authz).
    pub const UAEX: Self = Self(1 << 14);
    /// No cluster: a service asked for on demand did not arrive in time (Envoy's NC).
    pub const NC: Self = Self(1 << 15);

    const NAMES: [(Self, &'static str); 16] = [
        (Self::UH, "UH"),
        (Self::UF, "UF"),
        (Self::UO, "UO"),
        (Self::NR, "NR"),
        (Self::URX, "URX"),
        (Self::UT, "UT"),
        (Self::DI, "DI"),
        (Self::FI, "FI"),
        (Self::RL, "RL"),
        (Self::UC, "UC"),
        (Self::DC, "DC"),
        (Self::DPE, "DPE"),
        (Self::SI, "SI"),
        (Self::RBAC, "RBAC"),
        (Self::UAEX, "UAEX"),
        (Self::NC, "NC"),
    ];

    #[inline]
    pub fn contains(self, o: Self) -> bool {
        self.0 & o.0 == o.0 && o.0 != 0
    }

    #[inline]
    pub fn insert(&mut self, o: Self) {
        self.0 |= o.0;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }
}

/// `-` when empty, else comma-separated names, as in Envoy access logs.
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!((ResponseFlags::UF | ResponseFlags::URX).to_string(), "UF,URX");
    }
}
