//! CNI specification versions.
//!
//! The spec's version table (SPEC.md "Version") lists 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0 and
//! 1.1.0. A configuration without `cniVersion` is read as 0.1.0 (Go `version.ParseVersion` and
//! `ConfigDecoder.Decode`).

use std::fmt;

use crate::error::{CniError, code};

/// All spec versions we support, oldest first.
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest spec version implemented; what `VERSION` reports as its own `cniVersion`
/// (Go `version.Current()`).
pub const CURRENT: &str = "1.1.0";

/// The version assumed when a configuration has no (or an empty) `cniVersion` (SPEC 0.1.0 rule).
pub const DEFAULT_CONFIG_VERSION: &str = "0.1.0";

/// Parsed, ordered spec version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecVersion {
    /// Major number.
    pub major: u8,
    /// Minor number.
    pub minor: u8,
    /// Patch ("micro" in Go) number.
    pub patch: u8,
}

impl SpecVersion {
    /// 0.1.0, the version of a config without `cniVersion`.
    pub const V0_1_0: SpecVersion = SpecVersion::new(0, 1, 0);
    /// 0.2.0, the last version with the legacy `ip4`/`ip6` result.
    pub const V0_2_0: SpecVersion = SpecVersion::new(0, 2, 0);
    /// 0.3.0, the first version with the rich result and chaining.
    pub const V0_3_0: SpecVersion = SpecVersion::new(0, 3, 0);
    /// 0.4.0, the first version with `CHECK`.
    pub const V0_4_0: SpecVersion = SpecVersion::new(0, 4, 0);
    /// 1.0.0, where `ips[].version` was removed.
    pub const V1_0_0: SpecVersion = SpecVersion::new(1, 0, 0);
    /// 1.1.0, the first version with `STATUS` and `GC`.
    pub const V1_1_0: SpecVersion = SpecVersion::new(1, 1, 0);

    /// Builds a version from its parts.
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        SpecVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `"X"`, `"X.Y"` or `"X.Y.Z"` like Go `version.ParseVersion`; `""` is 0.1.0.
    ///
    /// Errors (code 6, decoding failure, as the Go skel reports them) carry Go's messages, e.g.
    /// `failed to convert major version part "x": strconv.Atoi: parsing "x": invalid syntax`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        if s.is_empty() {
            return Ok(Self::V0_1_0);
        }
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() >= 4 {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                format!("invalid version {s:?}: too many parts"),
            ));
        }
        let mut nums = [0u8; 3];
        for (i, (part, name)) in parts.iter().zip(["major", "minor", "micro"]).enumerate() {
            nums[i] = parse_part(part).map_err(|why| {
                CniError::new(
                    code::DECODING_FAILURE,
                    format!("failed to convert {name} version part {part:?}: {why}"),
                )
            })?;
        }
        Ok(SpecVersion::new(nums[0], nums[1], nums[2]))
    }

    /// The canonical `"X.Y.Z"` text.
    pub fn as_str(&self) -> String {
        self.to_string()
    }

    /// `CHECK` exists from 0.4.0 on (SPEC version table).
    pub fn has_check(&self) -> bool {
        *self >= Self::V0_4_0
    }

    /// `STATUS` and `GC` exist from 1.1.0 on.
    pub fn has_status_gc(&self) -> bool {
        *self >= Self::V1_1_0
    }

    /// 0.1.0 and 0.2.0 use the legacy `ip4`/`ip6` result layout.
    pub fn is_legacy(&self) -> bool {
        *self < Self::V0_3_0
    }

    /// Whether this version is one of [`SUPPORTED`].
    pub fn is_supported(&self) -> bool {
        SUPPORTED.contains(&self.as_str().as_str())
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for SpecVersion {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Mimics the text of Go's `strconv.Atoi` errors so messages read like the reference's.
fn parse_part(part: &str) -> Result<u8, String> {
    let digits = part.strip_prefix('+').unwrap_or(part);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {part:?}: invalid syntax"));
    }
    digits
        .parse::<u8>()
        .map_err(|_| format!("strconv.Atoi: parsing {part:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(SpecVersion::parse("").unwrap(), SpecVersion::V0_1_0);
        assert_eq!(SpecVersion::parse("1").unwrap(), SpecVersion::new(1, 0, 0));
        assert_eq!(SpecVersion::parse("0.4").unwrap(), SpecVersion::V0_4_0);
        assert_eq!(SpecVersion::parse("1.1.0").unwrap().as_str(), "1.1.0");
        let e = SpecVersion::parse("1.2.3.4").unwrap_err();
        assert_eq!(e.msg, "invalid version \"1.2.3.4\": too many parts");
        assert_eq!(e.code, code::DECODING_FAILURE);
        let e = SpecVersion::parse("x.1").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to convert major version part \"x\": strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn ordering_and_features() {
        assert!(SpecVersion::parse("0.3.1").unwrap() < SpecVersion::V0_4_0);
        assert!(!SpecVersion::parse("0.3.1").unwrap().has_check());
        assert!(SpecVersion::V0_4_0.has_check());
        assert!(!SpecVersion::V1_0_0.has_status_gc());
        assert!(SpecVersion::V1_1_0.has_status_gc());
        assert!(SpecVersion::V0_2_0.is_legacy());
        assert!(!SpecVersion::V0_3_0.is_legacy());
        for v in SUPPORTED {
            assert!(SpecVersion::parse(v).unwrap().is_supported());
        }
        assert!(!SpecVersion::parse("0.5.0").unwrap().is_supported());
    }
}
