//! Common matches and statements, built exactly as `nft` builds them (same loads, same
//! byte counts, same order), so a rule made here lists like the `nft` text it stands for.
//!
//! | nft text | helper |
//! |---|---|
//! | `ip saddr 10.0.0.5`, `ip6 daddr != fd00::/64` | [`addr`] |
//! | `ip saddr vmap @m` | [`addr_lookup`] |
//! | `meta l4proto tcp` | [`l4proto`] |
//! | `tcp dport 8080` (after `l4proto`) | [`transport_port`] |
//! | `th dport 8080` (after `l4proto`) | [`transport_port`] |
//! | `iifname "veth1"`, `oifname != "eth*"` | [`iifname`], [`ifname`] |
//! | `ether saddr 02:00:00:00:00:01` | [`ether_saddr`] |
//! | `ip daddr . meta l4proto . th dport vmap @m` | [`concat_lookup`] |
//! | `fib daddr type local` | [`fib_daddr_local`] |
//! | `meta mark set meta mark or 0x2000` | [`mark_set_or`] |
//! | `meta mark and 0x2000 == 0x2000` | [`mark_all`] |
//! | `dnat to 10.0.0.1:80`, `dnat to [fd00::1]:80` (after a port match) | [`dnat`] |
//! | `masquerade` | [`masquerade`] |
//! | `accept`, `jump c`, ... | [`verdict`] |
//!
//! In an `inet` table an IPv4/IPv6 match is preceded by `meta nfproto ipv4|ipv6`, as nft
//! does; `ip`/`ip6` tables need no such guard.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::expr::{
    Bitwise, Cmp, CmpOp, Expr, Fib, Immediate, Lookup, Masq, Meta, MetaKey, Nat, NatType, Payload,
    PayloadBase, Reg, Verdict, fib, nat_flags,
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
            op: None,
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
    ifname(Dir::Src, name, CmpOp::Eq)
}

/// `iifname` ([`Dir::Src`]) or `oifname` ([`Dir::Dst`]) `==|!= "<name>"`: the whole name
/// NUL-padded to IFNAMSIZ, or, for a name ending in `*`, only the bytes before the `*`
/// (a prefix match), as nft compares them.
pub fn ifname(dir: Dir, name: &str, op: CmpOp) -> Vec<Expr> {
    let data = match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut d = name.as_bytes().to_vec();
            d.resize(IFNAMSIZ, 0);
            d
        }
    };
    let key = if dir == Dir::Src {
        MetaKey::IifName
    } else {
        MetaKey::OifName
    };
    vec![
        Expr::Meta(Meta {
            key,
            dreg: Some(Reg::R1),
            sreg: None,
        }),
        cmp(op, data),
    ]
}

/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// One part of a concatenated lookup key ([`concat_lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `ip saddr`/`ip daddr` (`v6`: `ip6 ...`).
    Addr {
        /// Source or destination.
        dir: Dir,
        /// IPv6.
        v6: bool,
    },
    /// `meta l4proto` (1 byte).
    L4Proto,
    /// `th sport`/`th dport` (2 bytes of the transport header).
    Port(Dir),
}

impl Field {
    /// Bytes the field loads.
    fn len(self) -> u32 {
        match self {
            Field::Addr { dir, v6 } => addr_field(v6, dir).1,
            Field::L4Proto => 1,
            Field::Port(_) => 2,
        }
    }

    fn load(self, dreg: Reg) -> Expr {
        match self {
            Field::Addr { dir, v6 } => {
                let (offset, len) = addr_field(v6, dir);
                Expr::Payload(Payload::load(PayloadBase::Network, offset, len, dreg))
            }
            Field::L4Proto => Expr::Meta(Meta {
                key: MetaKey::L4Proto,
                dreg: Some(dreg),
                sreg: None,
            }),
            Field::Port(dir) => {
                let offset = if dir == Dir::Src { 0 } else { 2 };
                Expr::Payload(Payload::load(PayloadBase::Transport, offset, 2, dreg))
            }
        }
    }
}

/// The register nft names for the 32-bit register slot `slot` (0-based): a 16-byte
/// register (`NFT_REG_1`..`4`) when the slot starts one, else `NFT_REG32_00 + slot`.
fn reg32(slot: u32) -> Reg {
    if slot.is_multiple_of(4) {
        Reg(1 + slot / 4)
    } else {
        Reg(8 + slot)
    }
}

/// `<field> . <field> ... vmap @set` (with `dreg` [`Reg::VERDICT`]) or `... @set` (a
/// membership test, `dreg: None`): the fields loaded into consecutive 32-bit registers
/// starting at register 1, as nft lays out a concatenation, then one lookup. The set's key
/// type is the [`super::DataType::concat`] of the fields' types, its keys
/// [`super::concat_key`]s. An `inet` table gets nft's `meta nfproto` guard first when an
/// address is part of the key.
pub fn concat_lookup(table: Family, fields: &[Field], set: &str, dreg: Option<Reg>) -> Vec<Expr> {
    let mut out = match fields.iter().find_map(|f| match f {
        Field::Addr { v6, .. } => Some(*v6),
        _ => None,
    }) {
        Some(v6) => guard(table, v6),
        None => Vec::new(),
    };
    let mut slot = 0;
    for f in fields {
        out.push(f.load(reg32(slot)));
        slot += f.len().div_ceil(4);
    }
    out.push(Expr::Lookup(Lookup {
        set: set.to_string(),
        set_id: None,
        sreg: Reg::R1,
        dreg,
        invert: false,
    }));
    out
}

/// `fib daddr type local`: the destination is one of this host's addresses (Linux 4.10).
pub fn fib_daddr_local() -> Vec<Expr> {
    vec![
        Expr::Fib(Fib {
            flags: fib::F_DADDR,
            result: fib::RESULT_ADDRTYPE,
            dreg: Reg::R1,
        }),
        cmp(CmpOp::Eq, fib::RTN_LOCAL.to_ne_bytes().to_vec()),
    ]
}

fn load_mark() -> Expr {
    Expr::Meta(Meta {
        key: MetaKey::Mark,
        dreg: Some(Reg::R1),
        sreg: None,
    })
}

/// `meta mark set meta mark or <bits>`: sets `bits` in the packet mark, keeping the others.
pub fn mark_set_or(bits: u32) -> Vec<Expr> {
    vec![
        load_mark(),
        Expr::Bitwise(Bitwise::mask_xor(
            (!bits).to_ne_bytes().to_vec(),
            bits.to_ne_bytes().to_vec(),
        )),
        Expr::Meta(Meta {
            key: MetaKey::Mark,
            dreg: None,
            sreg: Some(Reg::R1),
        }),
    ]
}

/// `meta mark and <bits> == <bits>`: every bit of `bits` is set in the packet mark.
pub fn mark_all(bits: u32) -> Vec<Expr> {
    vec![
        load_mark(),
        Expr::Bitwise(Bitwise::mask_xor(bits.to_ne_bytes().to_vec(), vec![0; 4])),
        cmp(CmpOp::Eq, bits.to_ne_bytes().to_vec()),
    ]
}

/// `dnat to <ip>:<port>` (`[<ip>]:<port>` for IPv6), in a table of `ip`'s family. nft wants
/// a transport protocol match before it (`meta l4proto tcp`, `tcp dport ...`).
pub fn dnat(ip: IpAddr, port: u16) -> Vec<Expr> {
    vec![
        Expr::Immediate(Immediate::value(Reg::R1, octets(ip))),
        Expr::Immediate(Immediate::value(Reg::R2, port.to_be_bytes().to_vec())),
        Expr::Nat(Nat {
            kind: NatType::Dnat,
            family: u32::from(if ip.is_ipv6() {
                NFPROTO_IPV6
            } else {
                NFPROTO_IPV4
            }),
            addr_min: Some(Reg::R1),
            addr_max: None,
            proto_min: Some(Reg::R2),
            proto_max: None,
            flags: nat_flags::PROTO_SPECIFIED,
        }),
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
