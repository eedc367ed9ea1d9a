//! nf_tables objects (tables, chains, rules, sets, set elements): their messages, encoded
//! as `nft` encodes them, and their decoding from dumps.

use std::fmt;

use netlink::nfnetlink::{NFNL_SUBSYS_NFTABLES, NfMessage, NfReply};

use super::attr::{self, Writer};
use super::expr::{self, Data, Expr};

/// Message types (`NFT_MSG_*`).
pub(crate) mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
}

/// Netlink flags used on new objects.
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;

// Attribute numbers (`NFTA_*`).
const TABLE_NAME: u16 = 1;
const TABLE_FLAGS: u16 = 2;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const SET_TABLE: u16 = 1;
const SET_NAME: u16 = 2;
const SET_FLAGS: u16 = 3;
const SET_KEY_TYPE: u16 = 4;
const SET_KEY_LEN: u16 = 5;
const SET_DATA_TYPE: u16 = 6;
const SET_DATA_LEN: u16 = 7;
const SET_ID: u16 = 10;
const SET_USERDATA: u16 = 13;
const ELEM_LIST_TABLE: u16 = 1;
const ELEM_LIST_SET: u16 = 2;
const ELEM_LIST_ELEMENTS: u16 = 3;
const ELEM_LIST_SET_ID: u16 = 4;
const LIST_ELEM: u16 = 1;
const ELEM_KEY: u16 = 1;
const ELEM_DATA: u16 = 2;

/// libnftnl's userdata TLV types (1-byte type, 1-byte length).
const UDATA_RULE_COMMENT: u8 = 0;
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
/// Inside `UDATA_SET_KEY_TYPEOF`: the expression kind, and its own data.
const UDATA_TYPEOF_EXPR: u8 = 0;
const UDATA_TYPEOF_DATA: u8 = 1;
/// nft's `EXPR_CONCAT`.
const EXPR_CONCAT: u32 = 13;

/// Address family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `inet`: IPv4 and IPv6 (nat chains need Linux 5.2).
    Inet,
    /// `ip`: IPv4.
    Ip,
    /// `arp`.
    Arp,
    /// `netdev`.
    Netdev,
    /// `bridge`.
    Bridge,
    /// `ip6`: IPv6.
    Ip6,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// The family of an `NFPROTO_*` number.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        })
    }
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: String,
}

impl Table {
    /// Table `name` of `family`.
    pub fn new(family: Family, name: &str) -> Self {
        Self {
            family,
            name: name.to_string(),
        }
    }

    pub(crate) fn message(&self, kind: u8, flags: u16) -> NfMessage {
        let mut w = Writer::new();
        w.str(TABLE_NAME, &self.name);
        if kind == msg::NEWTABLE {
            w.u32(TABLE_FLAGS, 0);
        }
        message(kind, self.family, flags, w)
    }

    pub(crate) fn parse(r: &NfReply) -> Option<Table> {
        Some(Table {
            family: Family::from_number(r.family)?,
            name: attr::find_str(&r.attrs, TABLE_NAME)?,
        })
    }
}

/// A base chain's kind (`type ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
    /// `route`.
    Route,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// Netfilter hooks (`NF_INET_*`; for the `netdev` family `ingress` is hook 0).
pub mod hook {
    /// `prerouting`.
    pub const PREROUTING: u32 = 0;
    /// `input`.
    pub const INPUT: u32 = 1;
    /// `forward`.
    pub const FORWARD: u32 = 2;
    /// `output`.
    pub const OUTPUT: u32 = 3;
    /// `postrouting`.
    pub const POSTROUTING: u32 = 4;
}

/// Standard chain priorities (`nft`'s names for them).
pub mod priority {
    /// `raw`.
    pub const RAW: i32 = -300;
    /// `mangle`.
    pub const MANGLE: i32 = -150;
    /// `dstnat`.
    pub const DSTNAT: i32 = -100;
    /// `filter`.
    pub const FILTER: i32 = 0;
    /// `srcnat`.
    pub const SRCNAT: i32 = 100;
}

/// The hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// `type`.
    pub kind: ChainType,
    /// `hook` number ([`hook`]).
    pub hook: u32,
    /// `priority`.
    pub priority: i32,
    /// `policy`: `Some(true)` accept, `Some(false)` drop, `None` the kernel's default.
    pub accept: Option<bool>,
}

/// A chain: regular (reached by jump/goto) or base (attached to a hook).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Family of its table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// `Some` for a base chain.
    pub base: Option<BaseChain>,
}

impl Chain {
    /// A regular chain.
    pub fn regular(table: &Table, name: &str) -> Self {
        Self {
            family: table.family,
            table: table.name.clone(),
            name: name.to_string(),
            base: None,
        }
    }

    /// A base chain.
    pub fn base(table: &Table, name: &str, base: BaseChain) -> Self {
        Self {
            base: Some(base),
            ..Self::regular(table, name)
        }
    }

    pub(crate) fn message(&self, kind: u8, flags: u16) -> NfMessage {
        let mut w = Writer::new();
        w.str(CHAIN_TABLE, &self.table).str(CHAIN_NAME, &self.name);
        if let (Some(b), msg::NEWCHAIN) = (&self.base, kind) {
            w.str(CHAIN_TYPE, b.kind.name());
            if let Some(accept) = b.accept {
                w.u32(CHAIN_POLICY, u32::from(accept));
            }
            w.nested(CHAIN_HOOK, |h| {
                h.u32(HOOK_HOOKNUM, b.hook)
                    .u32(HOOK_PRIORITY, b.priority as u32);
            });
        }
        message(kind, self.family, flags, w)
    }

    pub(crate) fn parse(r: &NfReply) -> Option<Chain> {
        let a = &r.attrs;
        let base = attr::find(a, CHAIN_HOOK).map(|h| BaseChain {
            kind: match attr::find_str(a, CHAIN_TYPE).as_deref() {
                Some("nat") => ChainType::Nat,
                Some("route") => ChainType::Route,
                _ => ChainType::Filter,
            },
            hook: attr::find_u32(h, HOOK_HOOKNUM).unwrap_or(0),
            priority: attr::find_u32(h, HOOK_PRIORITY).unwrap_or(0) as i32,
            accept: attr::find_u32(a, CHAIN_POLICY).map(|p| p == 1),
        });
        Some(Chain {
            family: Family::from_number(r.family)?,
            table: attr::find_str(a, CHAIN_TABLE)?,
            name: attr::find_str(a, CHAIN_NAME)?,
            base,
        })
    }
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Family of its table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Kernel handle (dumps; `None` for a new rule).
    pub handle: Option<u64>,
    /// The expressions.
    pub exprs: Vec<Expr>,
    /// `comment "..."` (at most 128 bytes for `nft` to show it).
    pub comment: Option<String>,
}

impl Rule {
    /// A new rule for `chain`.
    pub fn new(chain: &Chain, exprs: Vec<Expr>, comment: Option<String>) -> Self {
        Self {
            family: chain.family,
            table: chain.table.clone(),
            chain: chain.name.clone(),
            handle: None,
            exprs,
            comment,
        }
    }

    pub(crate) fn message(&self) -> NfMessage {
        let mut w = Writer::new();
        w.str(RULE_TABLE, &self.table).str(RULE_CHAIN, &self.chain);
        expr::write_list(&mut w, RULE_EXPRESSIONS, &self.exprs);
        if let Some(c) = &self.comment {
            let mut ud = vec![UDATA_RULE_COMMENT, (c.len() + 1).min(255) as u8];
            ud.extend_from_slice(&c.as_bytes()[..c.len().min(254)]);
            ud.push(0);
            w.bytes(RULE_USERDATA, &ud);
        }
        message(msg::NEWRULE, self.family, NLM_F_CREATE | NLM_F_APPEND, w)
    }

    pub(crate) fn parse(r: &NfReply) -> Option<Rule> {
        let a = &r.attrs;
        Some(Rule {
            family: Family::from_number(r.family)?,
            table: attr::find_str(a, RULE_TABLE)?,
            chain: attr::find_str(a, RULE_CHAIN)?,
            handle: attr::find(a, RULE_HANDLE).and_then(attr::u64_of),
            exprs: attr::find(a, RULE_EXPRESSIONS)
                .map(expr::parse_list)
                .unwrap_or_default(),
            comment: attr::find(a, RULE_USERDATA).and_then(comment_of_udata),
        })
    }
}

/// The comment TLV of a rule's userdata.
fn comment_of_udata(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (kind, len) = (ud[0], ud[1] as usize);
        let value = ud.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            return Some(attr::str_of(value));
        }
        ud = &ud[2 + len..];
    }
    None
}

/// Byte order of a set's key or data, as `nft` records it for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// A concatenation (each part has its own; nft records 0, "invalid").
    Mixed = 0,
    /// Host order (marks, interface indexes).
    Host = 1,
    /// Network order (addresses, ports).
    Network = 2,
}

/// The type of a set key or map value (`nft`'s datatype number and its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataType {
    /// `nft` datatype id (`NFTA_SET_KEY_TYPE`), or `NFT_DATA_VERDICT` for verdicts.
    pub id: u32,
    /// Bytes.
    pub len: u32,
    /// Byte order.
    pub order: ByteOrder,
}

impl DataType {
    /// `ipv4_addr`.
    pub const IPV4_ADDR: DataType = DataType {
        id: 7,
        len: 4,
        order: ByteOrder::Network,
    };
    /// `ipv6_addr`.
    pub const IPV6_ADDR: DataType = DataType {
        id: 8,
        len: 16,
        order: ByteOrder::Network,
    };
    /// `ether_addr`.
    pub const ETHER_ADDR: DataType = DataType {
        id: 9,
        len: 6,
        order: ByteOrder::Network,
    };
    /// `inet_proto` (an IP protocol number, one byte).
    pub const INET_PROTO: DataType = DataType {
        id: 12,
        len: 1,
        order: ByteOrder::Network,
    };
    /// `inet_service` (a port).
    pub const INET_SERVICE: DataType = DataType {
        id: 13,
        len: 2,
        order: ByteOrder::Network,
    };
    /// `mark`.
    pub const MARK: DataType = DataType {
        id: 19,
        len: 4,
        order: ByteOrder::Host,
    };
    /// `verdict` (the value type of a verdict map).
    pub const VERDICT: DataType = DataType {
        id: 0xffff_ff00,
        len: 0,
        order: ByteOrder::Host,
    };

    /// The concatenation `a . b . ...` (e.g. `ipv4_addr . inet_proto . inet_service`), as
    /// nft types it: the ids folded 6 bits apart, each part taking a multiple of 4 bytes
    /// (a 32-bit register each). Keys of such a set are built with [`concat_key`].
    pub fn concat(parts: &[DataType]) -> DataType {
        DataType {
            id: parts
                .iter()
                .fold(0, |id, p| (id << CONCAT_TYPE_BITS) | p.id),
            len: parts.iter().map(|p| p.len.div_ceil(4) * 4).sum(),
            order: ByteOrder::Mixed,
        }
    }
}

/// Bits per part in a concatenation's type id (nft's `TYPE_BITS`).
const CONCAT_TYPE_BITS: u32 = 6;

/// A key (or lookup value) of a concatenated type ([`DataType::concat`]): each part in
/// the order the kernel compares it, zero-padded to a multiple of 4 bytes.
pub fn concat_key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for p in parts {
        key.extend_from_slice(p);
        key.resize(key.len() + p.len().next_multiple_of(4) - p.len(), 0);
    }
    key
}

/// Set flags (`NFT_SET_*`).
pub mod set_flags {
    /// `constant`.
    pub const CONSTANT: u32 = 2;
    /// `interval`.
    pub const INTERVAL: u32 = 4;
    /// A map (has values).
    pub const MAP: u32 = 8;
    /// `timeout`.
    pub const TIMEOUT: u32 = 16;
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    /// Family of its table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Set name.
    pub name: String,
    /// Key type.
    pub key: DataType,
    /// Value type for a map (`DataType::VERDICT` for a verdict map).
    pub data: Option<DataType>,
    /// Extra `NFT_SET_*` flags ([`set_flags`]); `MAP` is added for maps.
    pub flags: u32,
}

impl Set {
    /// A set (or, with `data`, a map) in `table`.
    pub fn new(table: &Table, name: &str, key: DataType, data: Option<DataType>) -> Self {
        Self {
            family: table.family,
            table: table.name.clone(),
            name: name.to_string(),
            key,
            data,
            flags: 0,
        }
    }

    pub(crate) fn message(&self, id: u32) -> NfMessage {
        let mut w = Writer::new();
        let flags = self.flags
            | if self.data.is_some() {
                set_flags::MAP
            } else {
                0
            };
        w.str(SET_TABLE, &self.table)
            .str(SET_NAME, &self.name)
            .u32(SET_FLAGS, flags)
            .u32(SET_KEY_TYPE, self.key.id)
            .u32(SET_KEY_LEN, self.key.len);
        if let Some(d) = &self.data {
            w.u32(SET_DATA_TYPE, d.id).u32(SET_DATA_LEN, d.len);
        }
        w.u32(SET_ID, id);
        // What nft records for `nft list` (see libnftnl udata.h).
        let mut ud = Vec::new();
        let mut tlv = |kind: u8, v: u32| {
            ud.extend_from_slice(&[kind, 4]);
            ud.extend_from_slice(&v.to_ne_bytes());
        };
        tlv(UDATA_SET_KEYBYTEORDER, self.key.order as u32);
        if let Some(d) = &self.data {
            let order = if *d == DataType::VERDICT {
                0
            } else {
                d.order as u32
            };
            tlv(UDATA_SET_DATABYTEORDER, order);
        }
        if self.key.order == ByteOrder::Mixed {
            // A concatenation: the "typeof" nest nft 1.0 writes for it (the expression
            // kind, `EXPR_CONCAT`, and an empty description of its parts).
            ud.extend_from_slice(&[UDATA_SET_KEY_TYPEOF, 8, UDATA_TYPEOF_EXPR, 4]);
            ud.extend_from_slice(&EXPR_CONCAT.to_ne_bytes());
            ud.extend_from_slice(&[UDATA_TYPEOF_DATA, 0]);
        }
        if self.data.is_some() {
            ud.extend_from_slice(&[UDATA_SET_DATA_INTERVAL, 4]);
            ud.extend_from_slice(&0u32.to_ne_bytes());
        }
        w.bytes(SET_USERDATA, &ud);
        message(msg::NEWSET, self.family, NLM_F_CREATE, w)
    }
}

/// A set element (a map entry when `data` is set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Elem {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value (maps).
    pub data: Option<Data>,
}

/// Which set a set-element message is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetRef {
    /// Family of its table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Set name.
    pub name: String,
}

impl SetRef {
    /// Set `name` in `table`.
    pub fn new(table: &Table, name: &str) -> Self {
        Self {
            family: table.family,
            table: table.name.clone(),
            name: name.to_string(),
        }
    }
}

pub(crate) fn elements_message(
    kind: u8,
    set: &SetRef,
    set_id: Option<u32>,
    elems: &[Elem],
) -> NfMessage {
    let mut w = Writer::new();
    w.str(ELEM_LIST_TABLE, &set.table)
        .str(ELEM_LIST_SET, &set.name);
    if let Some(id) = set_id {
        w.u32(ELEM_LIST_SET_ID, id);
    }
    w.nested(ELEM_LIST_ELEMENTS, |l| {
        for e in elems {
            l.nested(LIST_ELEM, |el| {
                Data::Value(e.key.clone()).write(el, ELEM_KEY);
                if let (Some(d), msg::NEWSETELEM) = (&e.data, kind) {
                    d.write(el, ELEM_DATA);
                }
            });
        }
    });
    let flags = if kind == msg::NEWSETELEM {
        NLM_F_CREATE
    } else {
        0
    };
    message(kind, set.family, flags, w)
}

/// Parses the elements of a `GETSETELEM` dump message.
pub(crate) fn parse_elements(r: &NfReply) -> Vec<Elem> {
    let Some(list) = attr::find(&r.attrs, ELEM_LIST_ELEMENTS) else {
        return Vec::new();
    };
    attr::iter(list)
        .filter(|(k, _)| *k == LIST_ELEM)
        .filter_map(|(_, e)| {
            let key = match attr::find(e, ELEM_KEY).and_then(Data::parse)? {
                Data::Value(v) => v,
                Data::Verdict(_) => return None,
            };
            Some(Elem {
                key,
                data: attr::find(e, ELEM_DATA).and_then(Data::parse),
            })
        })
        .collect()
}

/// A request message (GET/dump) with the given filter attributes.
pub(crate) fn get_message(
    kind: u8,
    family: Option<Family>,
    f: impl FnOnce(&mut Writer),
) -> NfMessage {
    let mut w = Writer::new();
    f(&mut w);
    NfMessage {
        subsys: NFNL_SUBSYS_NFTABLES,
        kind,
        family: family.map_or(0, Family::number),
        flags: 0,
        attrs: w.finish(),
    }
}

/// Filter attributes of a rule dump (table, chain).
pub(crate) fn rule_filter(w: &mut Writer, table: &str, chain: Option<&str>) {
    w.str(RULE_TABLE, table);
    if let Some(c) = chain {
        w.str(RULE_CHAIN, c);
    }
}

/// Filter attributes of a chain get/dump.
pub(crate) fn chain_filter(w: &mut Writer, table: &str, chain: Option<&str>) {
    w.str(CHAIN_TABLE, table);
    if let Some(c) = chain {
        w.str(CHAIN_NAME, c);
    }
}

/// Filter attributes of a set element dump.
pub(crate) fn elements_filter(w: &mut Writer, set: &SetRef) {
    w.str(ELEM_LIST_TABLE, &set.table)
        .str(ELEM_LIST_SET, &set.name);
}

/// The message deleting rule `handle` (or, with `None`, every rule: a flush) of a chain.
pub(crate) fn delete_rule_message(
    family: Family,
    table: &str,
    chain: &str,
    handle: Option<u64>,
) -> NfMessage {
    let mut w = Writer::new();
    w.str(RULE_TABLE, table).str(RULE_CHAIN, chain);
    if let Some(h) = handle {
        w.u64(RULE_HANDLE, h);
    }
    message(msg::DELRULE, family, 0, w)
}

fn message(kind: u8, family: Family, flags: u16, w: Writer) -> NfMessage {
    NfMessage {
        subsys: NFNL_SUBSYS_NFTABLES,
        kind,
        family: family.number(),
        flags,
        attrs: w.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_udata_round_trip() {
        let r = Rule {
            family: Family::Ip,
            table: "t".into(),
            chain: "c".into(),
            handle: None,
            exprs: vec![],
            comment: Some("hello".into()),
        };
        let m = r.message();
        let reply = NfReply {
            subsys: m.subsys,
            kind: m.kind,
            family: m.family,
            attrs: m.attrs,
        };
        assert_eq!(Rule::parse(&reply), Some(r));
        assert_eq!(comment_of_udata(&[1, 1, 0]), None);
        assert_eq!(comment_of_udata(&[0, 9, 0]), None);
    }

    #[test]
    fn families() {
        for f in [
            Family::Inet,
            Family::Ip,
            Family::Arp,
            Family::Netdev,
            Family::Bridge,
            Family::Ip6,
        ] {
            assert_eq!(Family::from_number(f.number()), Some(f));
        }
        assert_eq!(Family::from_number(0), None);
        assert_eq!(Family::Ip6.to_string(), "ip6");
    }
}
