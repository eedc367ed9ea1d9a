//! A range set: the ranges one address is taken from (one family).

use std::fmt;
use std::net::IpAddr;

use crate::error::ConfigError;
use crate::ip;
use crate::range::{Range, RangeConf};

/// A validated, non-empty list of non-overlapping ranges of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Canonicalises every range and checks the set (Go's
    /// `RangeSet.Canonicalize`): `empty range set`, `mixed address families`,
    /// `subnets <a> and <b> overlap`.
    pub fn canonicalize(confs: &[RangeConf]) -> Result<RangeSet, ConfigError> {
        if confs.is_empty() {
            return Err(ConfigError::new("empty range set"));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(confs.len());
        for conf in confs {
            let r = conf.canonicalize()?;
            if let Some(first) = ranges.first()
                && !ip::same_family(first.range_start, r.range_start)
            {
                return Err(ConfigError::new("mixed address families"));
            }
            ranges.push(r);
        }
        for (i, r1) in ranges.iter().enumerate() {
            for r2 in &ranges[i + 1..] {
                if r1.overlaps(r2) {
                    return Err(ConfigError(format!("subnets {r1} and {r2} overlap")));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    /// Builds a set from already validated ranges (tests, callers that
    /// validated themselves). Returns `None` when empty.
    pub fn from_ranges(ranges: Vec<Range>) -> Option<RangeSet> {
        (!ranges.is_empty()).then_some(RangeSet { ranges })
    }

    /// The ranges, in config order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The range holding `addr`, if any.
    pub fn range_for(&self, addr: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(addr))
    }

    /// Whether some range of the set holds `addr`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.range_for(addr).is_some()
    }

    /// Whether any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Whether the set is IPv4 (decided by its first range).
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(Range::is_ipv4)
    }
}

impl fmt::Display for RangeSet {
    /// `start-end[,start-end...]`, as in the reference error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RawRange;

    fn conf(subnet: &str) -> RangeConf {
        RawRange {
            subnet: Some(subnet.into()),
            ..Default::default()
        }
        .parse()
        .expect("parse")
    }

    #[test]
    fn validation_messages() {
        assert_eq!(
            RangeSet::canonicalize(&[])
                .expect_err("must fail")
                .to_string(),
            "empty range set"
        );
        assert_eq!(
            RangeSet::canonicalize(&[conf("10.0.0.0/24"), conf("fd00::/64")])
                .expect_err("must fail")
                .to_string(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::canonicalize(&[conf("10.0.0.0/24"), conf("10.0.0.0/16")])
                .expect_err("must fail")
                .to_string(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.255.254 overlap"
        );
    }

    #[test]
    fn display_and_lookup() {
        let set =
            RangeSet::canonicalize(&[conf("10.0.0.0/30"), conf("10.0.1.0/30")]).expect("valid");
        assert_eq!(set.to_string(), "10.0.0.1-10.0.0.2,10.0.1.1-10.0.1.2");
        assert!(set.contains("10.0.1.2".parse().expect("ip")));
        assert!(!set.contains("10.0.1.3".parse().expect("ip")));
        assert!(set.is_ipv4());
    }
}
