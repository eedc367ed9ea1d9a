//! `conditionsV4` / `conditionsV6` for the nftables backend.
//!
//! The reference splices the words into `nft` text. We speak netlink, so the conditions are
//! read here into expressions, for the forms that exclude or select traffic by address or
//! interface (what the option is documented for, "exclude specific IPs from port-mapping"):
//!
//! ```text
//! ip|ip6 saddr|daddr [==|!=] ADDRESS[/PREFIX]
//! [meta] iifname|oifname [==|!=] NAME        (NAME may be quoted, and end in * for a prefix)
//! ```
//!
//! Several matches in a row must all hold, as in nft. Anything else (sets, other
//! expressions, a family other than the table's) is refused with a message naming what was
//! not understood; the plugin checks this when it reads its configuration, before anything
//! is installed.

use ipnetwork::IpNetwork;

use crate::Error;
use crate::nftables::matches::{self, Dir};
use crate::nftables::{CmpOp, Expr, Family};

/// What the nftables backend understands, for error messages.
const SUPPORTED: &str = "supported: \"ip|ip6 saddr|daddr [==|!=] ADDRESS[/PREFIX]\" and \"iifname|oifname [==|!=] NAME\"";
/// `IFNAMSIZ - 1`.
const IFNAME_MAX: usize = 15;

/// The expressions for `words` (the config's list, whose entries may each hold one word or
/// several), in a table of family `v6` (`ip6`) or not (`ip`).
pub fn parse(words: &[String], v6: bool) -> Result<Vec<Expr>, Error> {
    let text = words.join(" ");
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let fam = if v6 { Family::Ip6 } else { Family::Ip };
    let mut out = Vec::new();
    let mut rest = &tokens[..];
    while let Some((&first, tail)) = rest.split_first() {
        let unsupported = |why: &str| {
            Error::InvalidCondition(format!(
                "unsupported nftables condition {:?} ({why}); {SUPPORTED}",
                rest.join(" ")
            ))
        };
        rest = tail;
        let word = if first == "meta" {
            let Some((&w, tail)) = rest.split_first() else {
                return Err(unsupported("incomplete"));
            };
            rest = tail;
            w
        } else {
            first
        };
        match word {
            "ip" | "ip6" if first != "meta" => {
                if (word == "ip6") != v6 {
                    return Err(unsupported(if v6 {
                        "conditionsV6 apply to the ip6 table"
                    } else {
                        "conditionsV4 apply to the ip table"
                    }));
                }
                let dir = match rest.first() {
                    Some(&"saddr") => Dir::Src,
                    Some(&"daddr") => Dir::Dst,
                    _ => return Err(unsupported("expected saddr or daddr")),
                };
                rest = &rest[1..];
                let op = operator(&mut rest);
                let value = take(&mut rest).ok_or_else(|| unsupported("no address"))?;
                let net = address(value, v6).ok_or_else(|| {
                    unsupported(if value.starts_with('{') {
                        "sets are not supported: write one match per address"
                    } else {
                        "not an address or prefix of the table's family"
                    })
                })?;
                out.extend(matches::addr(fam, dir, &net, op));
            }
            "iifname" | "oifname" => {
                let dir = if word == "iifname" {
                    Dir::Src
                } else {
                    Dir::Dst
                };
                let op = operator(&mut rest);
                let value = take(&mut rest).ok_or_else(|| unsupported("no interface name"))?;
                let name = value.trim_matches('"');
                let stem = name.strip_suffix('*').unwrap_or(name);
                if stem.is_empty() || stem.len() > IFNAME_MAX || stem.contains(['*', '"', '{', '/'])
                {
                    return Err(unsupported("not an interface name"));
                }
                out.extend(matches::ifname(dir, name, op));
            }
            _ => return Err(unsupported("unknown match")),
        }
    }
    Ok(out)
}

/// An optional comparison operator (`==`, `!=`, `eq`, `ne`); equality when there is none.
fn operator(rest: &mut &[&str]) -> CmpOp {
    let op = match rest.first() {
        Some(&("==" | "eq")) => CmpOp::Eq,
        Some(&("!=" | "ne")) => CmpOp::Neq,
        _ => return CmpOp::Eq,
    };
    *rest = &rest[1..];
    op
}

fn take<'a>(rest: &mut &[&'a str]) -> Option<&'a str> {
    let (first, tail) = rest.split_first()?;
    *rest = tail;
    Some(first)
}

/// An address (a host) or a prefix, of the family `v6`.
fn address(s: &str, v6: bool) -> Option<IpNetwork> {
    let net: IpNetwork = match s.parse() {
        Ok(n) => n,
        Err(_) => s.parse::<std::net::IpAddr>().ok()?.into(),
    };
    (net.is_ipv6() == v6).then_some(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::matches::Dir;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_interfaces() {
        let e = parse(&words(&["ip", "daddr", "!=", "192.0.2.0/24"]), false).unwrap();
        assert_eq!(
            e,
            matches::addr(Family::Ip, Dir::Dst, &net("192.0.2.0/24"), CmpOp::Neq)
        );
        // One entry may hold several words; matches follow each other.
        let e = parse(
            &words(&[
                "ip6 saddr fd00::1",
                "iifname != \"eth1\"",
                "meta oifname eth*",
            ]),
            true,
        )
        .unwrap();
        let mut want = matches::addr(Family::Ip6, Dir::Src, &net("fd00::1/128"), CmpOp::Eq);
        want.extend(matches::ifname(Dir::Src, "eth1", CmpOp::Neq));
        want.extend(matches::ifname(Dir::Dst, "eth*", CmpOp::Eq));
        assert_eq!(e, want);
        assert_eq!(
            parse(&words(&["ip", "saddr", "eq", "10.0.0.1"]), false).unwrap(),
            matches::addr(Family::Ip, Dir::Src, &net("10.0.0.1/32"), CmpOp::Eq)
        );
        assert!(parse(&[], false).unwrap().is_empty());
        assert!(parse(&words(&["", " "]), true).unwrap().is_empty());
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        let bad = |w: &[&str], v6: bool| parse(&words(w), v6).unwrap_err().to_string();
        assert!(bad(&["tcp", "dport", "80"], false).contains("unknown match"));
        assert!(bad(&["ip6", "daddr", "fd00::1"], false).contains("conditionsV4 apply"));
        assert!(bad(&["ip", "daddr", "10.0.0.1"], true).contains("conditionsV6 apply"));
        assert!(bad(&["ip", "daddr", "fd00::1"], false).contains("family"));
        assert!(bad(&["ip", "daddr", "{", "10.0.0.1", "}"], false).contains("sets"));
        assert!(bad(&["ip", "daddr"], false).contains("no address"));
        assert!(bad(&["ip", "proto", "6"], false).contains("saddr or daddr"));
        assert!(bad(&["iifname", "averyveryverylongname"], false).contains("interface"));
        assert!(bad(&["iifname"], false).contains("no interface"));
        assert!(bad(&["meta"], false).contains("incomplete"));
        assert!(bad(&["meta", "ip", "saddr", "1.2.3.4"], false).contains("unknown"));
        let e = bad(&["ip", "daddr", "1.2.3.4", "counter"], false);
        assert!(
            e.contains("\"counter\"") && e.contains("supported: "),
            "{e}"
        );
    }
}
