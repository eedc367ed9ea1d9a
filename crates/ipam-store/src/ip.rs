//! Address arithmetic and parsing with the reference plugin's rules.
//!
//! Addresses are handled as `u128` plus a family so that one code path serves
//! IPv4 and IPv6. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4, as
//! Go's `net.IP.To4` decides.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ConfigError;

/// Returns the canonical form of `ip`: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Number of bits of the address family of `ip` (32 or 128).
pub fn bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address as an integer.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Builds an address of the family of `like` from an integer (truncated to
/// the family's width).
pub fn from_u128(value: u128, like: IpAddr) -> IpAddr {
    match like {
        // Truncation is the point: the value is within 32 bits for IPv4.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((value & 0xffff_ffff) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The netmask of `prefix` bits in the family of `like`, as an integer.
pub fn mask(prefix: u8, like: IpAddr) -> u128 {
    let width = u32::from(bits(like));
    let prefix = u32::from(prefix).min(width);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    all & !all.checked_shr(prefix).unwrap_or(0)
}

/// The address following `ip` (wraps around like Go's `ip.NextIP`).
pub fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}

/// Whether `a` and `b` are of the same family.
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Parses an address as Go's `net.IP` JSON decoding does
/// (error `invalid IP address: <text>`). The result is canonical.
pub fn parse_ip(text: &str) -> Result<IpAddr, ConfigError> {
    text.parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| ConfigError(format!("invalid IP address: {text}")))
}

/// Parses `ip/prefix` as Go's `types.ParseCIDR` does: the host bits are kept
/// (they are rejected later, with a precise message). Error
/// `invalid CIDR address: <text>`. The address is returned as written
/// (not canonicalised), the prefix is relative to its written family.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), ConfigError> {
    let bad = || ConfigError(format!("invalid CIDR address: {text}"));
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > bits(ip) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// Parses a requested address written `ip` or `ip/prefix` (the prefix is
/// ignored, as Go's `ip.ParseIP` does for the `ips` capability).
/// Error `invalid IP address: <text>`.
pub fn parse_ip_maybe_prefix(text: &str) -> Result<IpAddr, ConfigError> {
    if text.contains('/') {
        parse_cidr(text)
            .map(|(ip, _)| canonical(ip))
            .map_err(|_| ConfigError(format!("invalid IP address: {text}")))
    } else {
        parse_ip(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn masks() {
        assert_eq!(mask(24, ip("1.2.3.4")), 0xffff_ff00);
        assert_eq!(mask(0, ip("1.2.3.4")), 0);
        assert_eq!(mask(32, ip("1.2.3.4")), 0xffff_ffff);
        assert_eq!(mask(128, ip("::1")), u128::MAX);
        assert_eq!(mask(64, ip("::1")), u128::MAX << 64);
    }

    #[test]
    fn next_and_canonical() {
        assert_eq!(next(ip("10.0.0.255")), ip("10.0.1.0"));
        assert_eq!(next(ip("255.255.255.255")), ip("0.0.0.0"));
        assert_eq!(next(ip("fd00::ffff")), ip("fd00::1:0"));
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_cidr("10.1.2.3/24"), Ok((ip("10.1.2.3"), 24)));
        assert!(parse_cidr("10.1.2.3").is_err());
        assert!(parse_cidr("10.1.2.3/33").is_err());
        assert!(parse_cidr("10.1.2.3/-1").is_err());
        assert_eq!(
            parse_cidr("nope/8").expect_err("must fail").to_string(),
            "invalid CIDR address: nope/8"
        );
        assert_eq!(
            parse_ip("1.2.3").expect_err("must fail").to_string(),
            "invalid IP address: 1.2.3"
        );
        assert_eq!(parse_ip_maybe_prefix("10.0.0.5/24"), Ok(ip("10.0.0.5")));
        assert_eq!(parse_ip_maybe_prefix("fd00::5"), Ok(ip("fd00::5")));
    }
}
