//! One range of a range set: a subnet, the first and last address to hand
//! out, and a gateway. Canonicalisation follows the reference `Range.Canonicalize`.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::ip;

/// A range as written in the config (`ipam.ranges[][]`, the legacy
/// top-level keys, or `runtimeConfig.ipRanges`). Values are kept as text
/// and parsed by [`RawRange::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRange {
    /// `subnet` (`ip/prefix`, must be the network address).
    #[serde(default)]
    pub subnet: Option<String>,
    /// `rangeStart` (inclusive).
    #[serde(default)]
    pub range_start: Option<String>,
    /// `rangeEnd` (inclusive).
    #[serde(default)]
    pub range_end: Option<String>,
    /// `gateway`.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A range whose values parsed, not yet validated (Go's decoded `Range`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeConf {
    /// Subnet address as written (host bits kept) and prefix length.
    pub subnet: Option<(IpAddr, u8)>,
    /// `rangeStart`.
    pub range_start: Option<IpAddr>,
    /// `rangeEnd`.
    pub range_end: Option<IpAddr>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
}

impl RawRange {
    /// Parses the texts (Go's JSON decoding step). An empty address string
    /// means "unset", as Go's `net.IP` decoding does; an empty subnet is an
    /// error.
    pub fn parse(&self) -> Result<RangeConf, ConfigError> {
        let opt_ip = |v: &Option<String>| -> Result<Option<IpAddr>, ConfigError> {
            match v.as_deref() {
                None | Some("") => Ok(None),
                Some(s) => ip::parse_ip(s).map(Some),
            }
        };
        Ok(RangeConf {
            subnet: self.subnet.as_deref().map(ip::parse_cidr).transpose()?,
            range_start: opt_ip(&self.range_start)?,
            range_end: opt_ip(&self.range_end)?,
            gateway: opt_ip(&self.gateway)?,
        })
    }
}

/// A validated range: every field is set and consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Network address of the subnet.
    pub network: IpAddr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// First address handed out (inclusive).
    pub range_start: IpAddr,
    /// Last address handed out (inclusive).
    pub range_end: IpAddr,
    /// Gateway: returned with every address, never handed out.
    pub gateway: IpAddr,
}

/// Go's `Range.Contains` on a range that may still be half filled.
fn contains(
    network: IpAddr,
    prefix: u8,
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    addr: IpAddr,
) -> bool {
    let addr = ip::canonical(addr);
    if !ip::same_family(addr, network) {
        return false;
    }
    let m = ip::mask(prefix, network);
    if ip::to_u128(addr) & m != ip::to_u128(network) & m {
        return false;
    }
    let v = ip::to_u128(addr);
    if let Some(s) = start
        && ip::same_family(s, addr)
        && v < ip::to_u128(s)
    {
        return false;
    }
    if let Some(e) = end
        && ip::same_family(e, addr)
        && v > ip::to_u128(e)
    {
        return false;
    }
    true
}

impl RangeConf {
    /// Validates the range and fills in the defaults: gateway = network + 1,
    /// rangeStart = network + 1 (the gateway is skipped when allocating),
    /// rangeEnd = broadcast − 1 for IPv4 and the last address for IPv6.
    pub fn canonicalize(&self) -> Result<Range, ConfigError> {
        let (written, ones) = self
            .subnet
            .ok_or_else(|| ConfigError::new("IP <nil> not v4 nor v6"))?;
        let masklen = ip::bits(written);
        if ones > masklen.saturating_sub(2) {
            return Err(ConfigError(format!(
                "Network {written}/{ones} too small to allocate from"
            )));
        }
        let subnet_ip = ip::canonical(written);
        if ip::bits(subnet_ip) != masklen {
            return Err(ConfigError::new("IPNet IP and Mask version mismatch"));
        }
        let m = ip::mask(ones, subnet_ip);
        let network = ip::from_u128(ip::to_u128(subnet_ip) & m, subnet_ip);
        if network != subnet_ip {
            return Err(ConfigError(format!(
                "Network has host bits set. For a subnet mask of length {ones} the network address is {network}"
            )));
        }
        let cidr = format!("{network}/{ones}");
        let gateway = match self.gateway {
            Some(g) => ip::canonical(g),
            None => ip::next(network),
        };
        let range_start = match self.range_start {
            Some(s) => {
                let s = ip::canonical(s);
                if !contains(network, ones, Some(s), self.range_end, s) {
                    return Err(ConfigError(format!("RangeStart {s} not in network {cidr}")));
                }
                s
            }
            None => ip::next(network),
        };
        let range_end = match self.range_end {
            Some(e) => {
                let e = ip::canonical(e);
                if !contains(network, ones, Some(range_start), Some(e), e) {
                    return Err(ConfigError(format!("RangeEnd {e} not in network {cidr}")));
                }
                e
            }
            None => {
                let last = ip::to_u128(network) | (!m & ip::mask(masklen, network));
                let last = if network.is_ipv4() { last - 1 } else { last };
                ip::from_u128(last, network)
            }
        };
        Ok(Range {
            network,
            prefix: ones,
            range_start,
            range_end,
            gateway,
        })
    }
}

impl Range {
    /// Whether `addr` is an allocatable address of this range
    /// (same family, inside the subnet, between rangeStart and rangeEnd).
    pub fn contains(&self, addr: IpAddr) -> bool {
        contains(
            self.network,
            self.prefix,
            Some(self.range_start),
            Some(self.range_end),
            addr,
        )
    }

    /// Whether the two ranges share an address (Go's `Range.Overlaps`).
    pub fn overlaps(&self, other: &Range) -> bool {
        if !ip::same_family(self.range_start, other.range_start) {
            return false;
        }
        self.contains(other.range_start)
            || self.contains(other.range_end)
            || other.contains(self.range_start)
            || other.contains(self.range_end)
    }

    /// Whether this is an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// `addr` with this range's prefix length, as returned in results.
    pub fn with_prefix(&self, addr: IpAddr) -> IpNetwork {
        // The prefix was validated against the family at canonicalisation.
        IpNetwork::new(addr, self.prefix).unwrap_or_else(|_| IpNetwork::from(addr))
    }
}

impl fmt::Display for Range {
    /// `start-end`, as in the reference error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn raw(subnet: &str) -> RawRange {
        RawRange {
            subnet: Some(subnet.into()),
            ..Default::default()
        }
    }

    fn canon(r: RawRange) -> Result<Range, String> {
        r.parse()
            .and_then(|c| c.canonicalize())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_v4() {
        let r = canon(raw("10.1.2.0/24")).expect("valid");
        assert_eq!(r.gateway, ip("10.1.2.1"));
        assert_eq!(r.range_start, ip("10.1.2.1"));
        assert_eq!(r.range_end, ip("10.1.2.254"));
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
    }

    #[test]
    fn defaults_v6_reach_last_address() {
        let r = canon(raw("fd00::/120")).expect("valid");
        assert_eq!(r.range_start, ip("fd00::1"));
        assert_eq!(r.range_end, ip("fd00::ff"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            canon(raw("10.1.2.5/24")).expect_err("must fail"),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.1.2.0"
        );
        assert_eq!(
            canon(raw("10.1.2.0/31")).expect_err("must fail"),
            "Network 10.1.2.0/31 too small to allocate from"
        );
        assert_eq!(
            canon(raw("fd00::/127")).expect_err("must fail"),
            "Network fd00::/127 too small to allocate from"
        );
        assert_eq!(
            canon(RawRange::default()).expect_err("must fail"),
            "IP <nil> not v4 nor v6"
        );
        let mut r = raw("10.1.2.0/24");
        r.range_start = Some("10.1.3.5".into());
        assert_eq!(
            canon(r).expect_err("must fail"),
            "RangeStart 10.1.3.5 not in network 10.1.2.0/24"
        );
        let mut r = raw("10.1.2.0/24");
        r.range_start = Some("10.1.2.50".into());
        r.range_end = Some("10.1.2.40".into());
        assert_eq!(
            canon(r).expect_err("must fail"),
            "RangeStart 10.1.2.50 not in network 10.1.2.0/24"
        );
        let mut r = raw("10.1.2.0/24");
        r.range_end = Some("10.1.2.0".into());
        assert_eq!(
            canon(r).expect_err("must fail"),
            "RangeEnd 10.1.2.0 not in network 10.1.2.0/24"
        );
        let mut r = raw("10.1.2.0/24");
        r.gateway = Some("10.1.2.x".into());
        assert_eq!(
            canon(r).expect_err("must fail"),
            "invalid IP address: 10.1.2.x"
        );
    }

    #[test]
    fn contains_and_overlaps() {
        let mut r = raw("10.1.2.0/24");
        r.range_start = Some("10.1.2.10".into());
        r.range_end = Some("10.1.2.20".into());
        let a = canon(r).expect("valid");
        assert!(a.contains(ip("10.1.2.10")));
        assert!(a.contains(ip("10.1.2.20")));
        assert!(!a.contains(ip("10.1.2.21")));
        assert!(!a.contains(ip("fd00::1")));
        let b = canon(raw("10.1.0.0/16")).expect("valid");
        assert!(a.overlaps(&b));
        let c = canon(raw("fd00::/64")).expect("valid");
        assert!(!a.overlaps(&c));
        assert_eq!(a.with_prefix(ip("10.1.2.11")).to_string(), "10.1.2.11/24");
    }
}
