//! Common matches and statements, built exactly as `nft` builds them (same loads, same
//! byte counts, same order), so a rule made here lists like the `nft` text it stands for.
//!
//! | nft text | helper |
//! |---|---|
//! | `ip saddr 10.0.0.5`, `ip6 daddr != fd00::/64` | [`addr`] |
//! | `ip saddr vmap @m` | [`addr_lookup`] |
//! | `meta l4proto tcp` | [`l4proto`] |
//! | `tcp dport 8080` (after `l4proto`) | [`transport_port`] |
//! | `iifname "veth1"` | [`iifname`] |
//! | `ether saddr 02:00:00:00:00:01` | [`ether_saddr`] |
//! | `masquerade` | [`masquerade`] |
//! | `accept`, `jump c`, ... | [`verdict`] |
//!
//! In an `inet` table an IPv4/IPv6 match is preceded by `meta nfproto ipv4|ipv6`, as nft
//! does; `ip`/`ip6` tables need no such guard.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::expr::{
    Bitwise, Cmp, CmpOp, Expr, Immediate, Lookup, Masq, Meta, MetaKey, Payload, PayloadBase, Reg,
    Verdict,
};
use super::object::Family;

/// Which address of the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `saddr`.
    Src,
    /// `daddr`.
    Dst,
}

/// `NFPROTO_IPV4` / `NFPROTO_IPV6`.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

fn cmp(op: CmpOp, data: Vec<u8>) -> Expr {
    Expr::Cmp(Cmp {
        sreg: Reg::R1,
        op,
        data,
    })
}

/// The `meta nfproto` guard an `inet` table needs before an IP header match.
fn guard(table: Family, v6: bool) -> Vec<Expr> {
    if table != Family::Inet {
        return Vec::new();
    }
    vec![
        Expr::Meta(Meta {
            key: MetaKey::NfProto,
            dreg: Some(Reg::R1),
            sreg: None,
        }),
        cmp(
            CmpOp::Eq,
            vec![if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
        ),
    ]
}

/// (offset, length) of the source or destination address in the IP header.
fn addr_field(v6: bool, dir: Dir) -> (u32, u32) {
    match (v6, dir) {
        (false, Dir::Src) => (12, 4),
        (false, Dir::Dst) => (16, 4),
        (true, Dir::Src) => (8, 16),
        (true, Dir::Dst) => (24, 16),
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `ip|ip6 saddr|daddr ==|!= <net>` in a chain of a `table`-family table. A host prefix
/// compares the whole address; a byte-aligned prefix loads only its bytes; any other
/// prefix loads the address, masks it and compares with the network address (as nft).
pub fn addr(table: Family, dir: Dir, net: &IpNetwork, op: CmpOp) -> Vec<Expr> {
    let v6 = net.is_ipv6();
    let (offset, len) = addr_field(v6, dir);
    let prefix = u32::from(net.prefix());
    let network = octets(net.network());
    let mut out = guard(table, v6);
    if prefix == len * 8 {
        out.push(Expr::Payload(Payload::load(
            PayloadBase::Network,
            offset,
            len,
            Reg::R1,
        )));
        out.push(cmp(op, octets(net.ip())));
    } else if prefix % 8 == 0 && prefix > 0 {
        let n = prefix / 8;
        out.push(Expr::Payload(Payload::load(
            PayloadBase::Network,
            offset,
            n,
            Reg::R1,
        )));
        out.push(cmp(op, network[..n as usize].to_vec()));
    } else {
        out.push(Expr::Payload(Payload::load(
            PayloadBase::Network,
            offset,
            len,
            Reg::R1,
        )));
        out.push(Expr::Bitwise(Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            len,
            mask: octets(net.mask()),
            xor: vec![0; len as usize],
        }));
        out.push(cmp(op, network));
    }
    out
}

/// `ip|ip6 saddr|daddr vmap @set` (a verdict map lookup; the map's verdict is the rule's),
/// or, with `dreg: None`, `... @set` (a plain set membership test).
pub fn addr_lookup(table: Family, dir: Dir, v6: bool, set: &str, dreg: Option<Reg>) -> Vec<Expr> {
    let (offset, len) = addr_field(v6, dir);
    let mut out = guard(table, v6);
    out.push(Expr::Payload(Payload::load(
        PayloadBase::Network,
        offset,
        len,
        Reg::R1,
    )));
    out.push(Expr::Lookup(Lookup {
        set: set.to_string(),
        set_id: None,
        sreg: Reg::R1,
        dreg,
        invert: false,
    }));
    out
}

/// `meta l4proto <proto>` (6 tcp, 17 udp, 132 sctp).
pub fn l4proto(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Meta(Meta {
            key: MetaKey::L4Proto,
            dreg: Some(Reg::R1),
            sreg: None,
        }),
        cmp(CmpOp::Eq, vec![proto]),
    ]
}

/// `tcp|udp sport|dport <port>`; put [`l4proto`] first, as nft does.
pub fn transport_port(dir: Dir, port: u16) -> Vec<Expr> {
    let offset = if dir == Dir::Src { 0 } else { 2 };
    vec![
        Expr::Payload(Payload::load(PayloadBase::Transport, offset, 2, Reg::R1)),
        cmp(CmpOp::Eq, port.to_be_bytes().to_vec()),
    ]
}

/// `iifname "<name>"` (the name NUL-padded to IFNAMSIZ, as nft compares it).
pub fn iifname(name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    vec![
        Expr::Meta(Meta {
            key: MetaKey::IifName,
            dreg: Some(Reg::R1),
            sreg: None,
        }),
        cmp(CmpOp::Eq, data),
    ]
}

/// `ether saddr <mac>`.
pub fn ether_saddr(mac: [u8; 6]) -> Vec<Expr> {
    vec![
        Expr::Payload(Payload::load(PayloadBase::LinkLayer, 6, 6, Reg::R1)),
        cmp(CmpOp::Eq, mac.to_vec()),
    ]
}

/// `masquerade`.
pub fn masquerade() -> Expr {
    Expr::Masq(Masq::default())
}

/// A verdict statement: `accept`, `drop`, `return`, `jump <chain>`, `goto <chain>`.
pub fn verdict(v: Verdict) -> Expr {
    Expr::Immediate(Immediate::verdict(v))
}
