//! The nftables operations the port-mapping backend needs, as data, and the one place that
//! turns them into `nft -f -` text ([`render`]).
//!
//! The backend ([`super::nft`]) only builds [`Op`] lists; nothing else knows nft syntax. When
//! the nf_tables netlink encoder lands, it encodes the same [`Op`]s (every variant maps to one
//! NFT_MSG_* message, every [`Expr`] to a short list of kernel expressions), except
//! [`Expr::Raw`] (user-written `conditionsV4/V6`), which stays on the `nft` path.
//!
//! Listings come back through [`parse_listing`] (`nft -j list table ..`), reduced to what the
//! backend looks at: chain names, rules (handle, comment) and map elements.

use std::fmt::Write;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::Protocol;
use crate::Error;

/// Address family of a table (the backend uses `ip` and `ip6` tables: nat in `inet` tables
/// needs Linux 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ip` (IPv4).
    Ip,
    /// `ip6` (IPv6).
    Ip6,
}

impl Family {
    /// The nft keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv6() {
            Family::Ip6
        } else {
            Family::Ip
        }
    }

    /// True for [`Family::Ip6`].
    pub fn is_v6(self) -> bool {
        self == Family::Ip6
    }

    /// The address key type of this family.
    pub fn addr_type(self) -> KeyType {
        match self {
            Family::Ip => KeyType::Ipv4Addr,
            Family::Ip6 => KeyType::Ipv6Addr,
        }
    }
}

/// A table: family and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: &'static str,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family.as_str(), self.name)
    }
}

/// Netfilter hooks of nat base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// NF_INET_PRE_ROUTING.
    Prerouting,
    /// NF_INET_LOCAL_OUT.
    Output,
    /// NF_INET_POST_ROUTING.
    Postrouting,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// What makes a chain a base chain. Always `type nat`, `policy accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// The hook.
    pub hook: Hook,
    /// Numeric priority (-100 = dstnat, 100 = srcnat; numbers for older `nft`).
    pub priority: i32,
}

/// Types of map key parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`.
    Ipv4Addr,
    /// `ipv6_addr`.
    Ipv6Addr,
    /// `inet_proto` (L4 protocol number).
    InetProto,
    /// `inet_service` (port).
    InetService,
}

impl KeyType {
    fn as_str(self) -> &'static str {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::InetProto => "inet_proto",
            KeyType::InetService => "inet_service",
        }
    }
}

/// One part of a map key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    /// An address.
    Addr(IpAddr),
    /// An L4 protocol.
    Proto(Protocol),
    /// A port.
    Port(u16),
    /// A part as `nft` listed it, that we do not interpret (deleting listed elements).
    Listed(String),
}

/// A verdict (map values, rule ends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `jump <chain>`: run the chain, then come back.
    Jump(String),
}

/// Packet fields that make up a map lookup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// `ip daddr` / `ip6 daddr`.
    Daddr,
    /// `meta l4proto`.
    L4Proto,
    /// `th dport`.
    DstPort,
}

/// A rule statement or match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta l4proto <p>`.
    L4Proto(Protocol),
    /// `th dport <port>` (after an [`Expr::L4Proto`]).
    DstPort(u16),
    /// `ip saddr <net>` (a host prefix is printed as an address).
    Saddr(IpNetwork),
    /// `ip daddr <addr>`.
    Daddr(IpAddr),
    /// `fib daddr type local`: the destination is an address of this node.
    FibDaddrLocal,
    /// `<fields joined by .> vmap @<map>`.
    Vmap {
        /// Key fields, in the map's key order.
        key: Vec<KeyField>,
        /// Map name (same table).
        map: String,
    },
    /// `meta mark set meta mark or <bits>`.
    MarkSetOr(u32),
    /// `jump <chain>` (a regular chain of the same table).
    Jump(String),
    /// `meta mark and <bits> == <bits>`.
    MarkAll(u32),
    /// `dnat to <addr>:<port>`.
    Dnat(IpAddr, u16),
    /// `masquerade`.
    Masquerade,
    /// A match written by the user in nft syntax (`conditionsV4/V6`), used as is.
    Raw(String),
}

/// One nft command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add table` (idempotent).
    AddTable(Table),
    /// `add chain` (idempotent; a base chain when `base` is set).
    AddChain {
        /// Table.
        table: Table,
        /// Chain name.
        name: String,
        /// Base chain spec.
        base: Option<BaseChain>,
    },
    /// `flush chain`.
    FlushChain {
        /// Table.
        table: Table,
        /// Chain name.
        name: String,
    },
    /// `delete chain` (must be empty and unreferenced).
    DeleteChain {
        /// Table.
        table: Table,
        /// Chain name.
        name: String,
    },
    /// `add map <name> { type <key> : verdict ; }` (idempotent).
    AddMap {
        /// Table.
        table: Table,
        /// Map name.
        name: String,
        /// Key parts (concatenated).
        key: Vec<KeyType>,
    },
    /// `add element` (an existing key with the same value is fine; another value: EEXIST).
    AddElements {
        /// Table.
        table: Table,
        /// Map name.
        map: String,
        /// Keys and their verdicts.
        elems: Vec<(Vec<KeyValue>, Verdict)>,
    },
    /// `delete element` by key (ENOENT when a key is absent).
    DeleteElements {
        /// Table.
        table: Table,
        /// Map name.
        map: String,
        /// Keys.
        keys: Vec<Vec<KeyValue>>,
    },
    /// `add rule` (appends).
    AddRule {
        /// Table.
        table: Table,
        /// Chain name.
        chain: String,
        /// Matches and statements, in order.
        exprs: Vec<Expr>,
        /// Rule comment.
        comment: Option<String>,
    },
    /// `delete rule .. handle N`.
    DeleteRule {
        /// Table.
        table: Table,
        /// Chain name.
        chain: String,
        /// Rule handle (from a listing).
        handle: u64,
    },
}

/// The `nft -f -` script for `ops`, one command per line.
pub fn render(ops: &[Op]) -> String {
    let mut s = String::new();
    for op in ops {
        render_op(&mut s, op);
        s.push('\n');
    }
    s
}

fn render_op(s: &mut String, op: &Op) {
    // Writing to a String cannot fail.
    let _ = match op {
        Op::AddTable(t) => write!(s, "add table {t}"),
        Op::AddChain { table, name, base } => {
            let _ = write!(s, "add chain {table} {name}");
            match base {
                Some(b) => write!(
                    s,
                    " {{ type nat hook {} priority {} ; policy accept ; }}",
                    b.hook.as_str(),
                    b.priority
                ),
                None => Ok(()),
            }
        }
        Op::FlushChain { table, name } => write!(s, "flush chain {table} {name}"),
        Op::DeleteChain { table, name } => write!(s, "delete chain {table} {name}"),
        Op::AddMap { table, name, key } => {
            let key: Vec<&str> = key.iter().map(|k| k.as_str()).collect();
            write!(
                s,
                "add map {table} {name} {{ type {} : verdict ; }}",
                key.join(" . ")
            )
        }
        Op::AddElements { table, map, elems } => {
            let items: Vec<String> = elems
                .iter()
                .map(|(k, v)| format!("{} : {}", key_text(k), verdict_text(v)))
                .collect();
            write!(s, "add element {table} {map} {{ {} }}", items.join(", "))
        }
        Op::DeleteElements { table, map, keys } => {
            let items: Vec<String> = keys.iter().map(|k| key_text(k)).collect();
            write!(s, "delete element {table} {map} {{ {} }}", items.join(", "))
        }
        Op::AddRule {
            table,
            chain,
            exprs,
            comment,
        } => {
            let _ = write!(s, "add rule {table} {chain}");
            for e in exprs {
                s.push(' ');
                expr_text(s, table.family, e);
            }
            match comment {
                Some(c) => write!(s, " comment \"{}\"", c.replace(['"', '\\', '\n'], "")),
                None => Ok(()),
            }
        }
        Op::DeleteRule {
            table,
            chain,
            handle,
        } => write!(s, "delete rule {table} {chain} handle {handle}"),
    };
}

/// A key as nft writes it (`192.168.1.5 . tcp . 8443`); listed keys print the same way.
pub fn key_text(k: &[KeyValue]) -> String {
    let parts: Vec<String> = k
        .iter()
        .map(|p| match p {
            KeyValue::Addr(a) => a.to_string(),
            KeyValue::Proto(p) => p.as_str().to_string(),
            KeyValue::Port(n) => n.to_string(),
            KeyValue::Listed(t) => t.clone(),
        })
        .collect();
    parts.join(" . ")
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Jump(c) => format!("jump {c}"),
    }
}

fn expr_text(s: &mut String, family: Family, e: &Expr) {
    let fam = family.as_str();
    let _ = match e {
        Expr::L4Proto(p) => write!(s, "meta l4proto {}", p.as_str()),
        Expr::DstPort(p) => write!(s, "th dport {p}"),
        Expr::Saddr(net) if net.prefix() == max_prefix(net.ip()) => {
            write!(s, "{fam} saddr {}", net.ip())
        }
        Expr::Saddr(net) => write!(s, "{fam} saddr {}/{}", net.network(), net.prefix()),
        Expr::Daddr(ip) => write!(s, "{fam} daddr {ip}"),
        Expr::FibDaddrLocal => write!(s, "fib daddr type local"),
        Expr::Vmap { key, map } => {
            let fields: Vec<String> = key
                .iter()
                .map(|f| match f {
                    KeyField::Daddr => format!("{fam} daddr"),
                    KeyField::L4Proto => "meta l4proto".to_string(),
                    KeyField::DstPort => "th dport".to_string(),
                })
                .collect();
            write!(s, "{} vmap @{map}", fields.join(" . "))
        }
        Expr::MarkSetOr(m) => write!(s, "meta mark set meta mark or {m:#010x}"),
        Expr::Jump(c) => write!(s, "jump {c}"),
        Expr::MarkAll(m) => write!(s, "meta mark and {m:#010x} == {m:#010x}"),
        Expr::Dnat(IpAddr::V4(ip), port) => write!(s, "dnat to {ip}:{port}"),
        Expr::Dnat(IpAddr::V6(ip), port) => write!(s, "dnat to [{ip}]:{port}"),
        Expr::Masquerade => write!(s, "masquerade"),
        Expr::Raw(text) => write!(s, "{text}"),
    };
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv6() { 128 } else { 32 }
}

/// A rule found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// Its chain.
    pub chain: String,
    /// Its handle.
    pub handle: u64,
    /// Its comment.
    pub comment: Option<String>,
}

/// A map element found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    /// The map.
    pub map: String,
    /// The key, part by part, as listed.
    pub key: Vec<KeyValue>,
    /// The chain a `jump`/`goto` value names.
    pub target: Option<String>,
}

/// What `nft -j list table ..` showed, reduced to what the backend uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Chain names.
    pub chains: Vec<String>,
    /// Rules.
    pub rules: Vec<ListedRule>,
    /// Map elements.
    pub elements: Vec<ListedElement>,
}

impl Listing {
    /// Whether chain `name` exists.
    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// Rules of chain `name`.
    pub fn rules_in<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ListedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == name)
    }
}

fn parse_error(reason: impl Into<String>) -> Error {
    Error::Parse {
        tool: "nft".into(),
        reason: reason.into(),
    }
}

fn items(json: &str) -> Result<Vec<serde_json::Value>, Error> {
    let mut v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| parse_error(format!("invalid JSON: {e}")))?;
    match v.get_mut("nftables").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => Ok(items),
        _ => Err(parse_error("no \"nftables\" array")),
    }
}

/// Parse `nft -j list tables` into (family, name) pairs.
pub fn parse_tables(json: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(items(json)?
        .iter()
        .filter_map(|i| i.get("table"))
        .map(|t| {
            let field = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            (field("family").to_string(), field("name").to_string())
        })
        .collect())
}

/// Parse `nft -j list table ..`.
pub fn parse_listing(json: &str) -> Result<Listing, Error> {
    let mut l = Listing::default();
    for item in items(json)? {
        if let Some(name) = item.pointer("/chain/name").and_then(|n| n.as_str()) {
            l.chains.push(name.to_string());
        } else if let Some(rule) = item.get("rule") {
            let (Some(chain), Some(handle)) = (
                rule.get("chain").and_then(|c| c.as_str()),
                rule.get("handle").and_then(|h| h.as_u64()),
            ) else {
                return Err(parse_error(format!("rule without chain or handle: {rule}")));
            };
            l.rules.push(ListedRule {
                chain: chain.to_string(),
                handle,
                comment: rule
                    .get("comment")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            });
        } else if let Some(map) = item.get("map") {
            let name = map.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let elems = map.get("elem").and_then(|e| e.as_array());
            for e in elems.into_iter().flatten() {
                l.elements.push(parse_element(name, e)?);
            }
        }
    }
    Ok(l)
}

/// One `elem` entry of a verdict map: `[key, {"jump": {"target": ..}}]`; the key is a
/// scalar or `{"concat": [..]}`; an element with options is wrapped in `{"elem": {"val": ..}}`.
fn parse_element(map: &str, e: &serde_json::Value) -> Result<ListedElement, Error> {
    let pair = e
        .as_array()
        .filter(|p| p.len() == 2)
        .ok_or_else(|| parse_error(format!("map element is not a [key, value] pair: {e}")))?;
    let mut key = &pair[0];
    if let Some(val) = key.pointer("/elem/val") {
        key = val;
    }
    let parts: Vec<&serde_json::Value> = match key.get("concat").and_then(|c| c.as_array()) {
        Some(list) => list.iter().collect(),
        None => vec![key],
    };
    let key = parts
        .into_iter()
        .map(|p| match p {
            serde_json::Value::String(s) => Ok(KeyValue::Listed(s.clone())),
            serde_json::Value::Number(n) => Ok(KeyValue::Listed(n.to_string())),
            other => Err(parse_error(format!("unexpected key part {other}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = ["jump", "goto"]
        .iter()
        .find_map(|v| pair[1].pointer(&format!("/{v}/target")))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    Ok(ListedElement {
        map: map.to_string(),
        key,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Table = Table {
        family: Family::Ip,
        name: "t",
    };
    const T6: Table = Table {
        family: Family::Ip6,
        name: "t",
    };

    #[test]
    fn renders_every_op() {
        let ops = vec![
            Op::AddTable(T),
            Op::AddMap {
                table: T,
                name: "m".into(),
                key: vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            },
            Op::AddChain {
                table: T,
                name: "pre".into(),
                base: Some(BaseChain {
                    hook: Hook::Prerouting,
                    priority: -100,
                }),
            },
            Op::AddChain {
                table: T,
                name: "a-1".into(),
                base: None,
            },
            Op::FlushChain {
                table: T,
                name: "a-1".into(),
            },
            Op::AddRule {
                table: T,
                chain: "pre".into(),
                exprs: vec![
                    Expr::FibDaddrLocal,
                    Expr::Vmap {
                        key: vec![KeyField::Daddr, KeyField::L4Proto, KeyField::DstPort],
                        map: "m".into(),
                    },
                ],
                comment: None,
            },
            Op::AddRule {
                table: T,
                chain: "a-1".into(),
                exprs: vec![
                    Expr::Raw("ip daddr != 192.0.2.0/24".into()),
                    Expr::L4Proto(Protocol::Tcp),
                    Expr::DstPort(8080),
                    Expr::Saddr("127.0.0.1/32".parse().unwrap()),
                    Expr::Saddr("10.0.0.5/24".parse().unwrap()),
                    Expr::MarkSetOr(0x2000),
                    Expr::Jump("b".into()),
                ],
                comment: Some("c \"x\"".into()),
            },
            Op::AddRule {
                table: T,
                chain: "a-1".into(),
                exprs: vec![
                    Expr::Daddr("192.168.1.5".parse().unwrap()),
                    Expr::Dnat("10.0.0.5".parse().unwrap(), 80),
                ],
                comment: None,
            },
            Op::AddRule {
                table: T,
                chain: "m".into(),
                exprs: vec![Expr::MarkAll(0x2000), Expr::Masquerade],
                comment: None,
            },
            Op::AddElements {
                table: T,
                map: "m".into(),
                elems: vec![(
                    vec![
                        KeyValue::Addr("192.168.1.5".parse().unwrap()),
                        KeyValue::Proto(Protocol::Udp),
                        KeyValue::Port(53),
                    ],
                    Verdict::Jump("a-1".into()),
                )],
            },
            Op::DeleteElements {
                table: T,
                map: "m".into(),
                keys: vec![
                    vec![KeyValue::Listed("tcp".into()), KeyValue::Listed("1".into())],
                    vec![KeyValue::Proto(Protocol::Sctp), KeyValue::Port(2)],
                ],
            },
            Op::DeleteRule {
                table: T,
                chain: "x".into(),
                handle: 7,
            },
            Op::DeleteChain {
                table: T,
                name: "a-1".into(),
            },
        ];
        assert_eq!(
            render(&ops),
            "add table ip t\n\
             add map ip t m { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
             add chain ip t pre { type nat hook prerouting priority -100 ; policy accept ; }\n\
             add chain ip t a-1\n\
             flush chain ip t a-1\n\
             add rule ip t pre fib daddr type local ip daddr . meta l4proto . th dport vmap @m\n\
             add rule ip t a-1 ip daddr != 192.0.2.0/24 meta l4proto tcp th dport 8080 ip saddr 127.0.0.1 ip saddr 10.0.0.0/24 meta mark set meta mark or 0x00002000 jump b comment \"c x\"\n\
             add rule ip t a-1 ip daddr 192.168.1.5 dnat to 10.0.0.5:80\n\
             add rule ip t m meta mark and 0x00002000 == 0x00002000 masquerade\n\
             add element ip t m { 192.168.1.5 . udp . 53 : jump a-1 }\n\
             delete element ip t m { tcp . 1, sctp . 2 }\n\
             delete rule ip t x handle 7\n\
             delete chain ip t a-1\n"
        );
    }

    #[test]
    fn renders_ipv6() {
        let ops = vec![Op::AddRule {
            table: T6,
            chain: "a".into(),
            exprs: vec![
                Expr::Saddr("fd00::5/64".parse().unwrap()),
                Expr::Daddr("::1".parse().unwrap()),
                Expr::Dnat("fd00::5".parse().unwrap(), 80),
            ],
            comment: None,
        }];
        assert_eq!(
            render(&ops),
            "add rule ip6 t a ip6 saddr fd00::/64 ip6 daddr ::1 dnat to [fd00::5]:80\n"
        );
    }

    #[test]
    fn parses_a_table_listing() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "ip", "name": "t", "handle": 1}},
          {"map": {"family": "ip", "name": "hostports", "table": "t", "type": ["inet_proto", "inet_service"], "handle": 2, "map": "verdict",
             "elem": [[{"concat": ["tcp", 8080]}, {"jump": {"target": "a-1"}}],
                      [{"elem": {"val": {"concat": ["udp", 53]}, "comment": "x"}}, {"goto": {"target": "a-2"}}]]}},
          {"map": {"family": "ip", "name": "empty", "table": "t", "type": "ipv4_addr", "handle": 3, "map": "verdict"}},
          {"chain": {"family": "ip", "table": "t", "name": "a-1", "handle": 4}},
          {"rule": {"family": "ip", "table": "t", "chain": "a-1", "handle": 5, "comment": "hello", "expr": []}},
          {"rule": {"family": "ip", "table": "t", "chain": "a-1", "handle": 6, "expr": []}}]}"#;
        let l = parse_listing(json).unwrap();
        assert_eq!(l.chains, vec!["a-1"]);
        assert!(l.has_chain("a-1") && !l.has_chain("a-2"));
        assert_eq!(l.rules_in("a-1").count(), 2);
        assert_eq!(l.rules[0].comment.as_deref(), Some("hello"));
        assert_eq!(
            l.elements,
            vec![
                ListedElement {
                    map: "hostports".into(),
                    key: vec![
                        KeyValue::Listed("tcp".into()),
                        KeyValue::Listed("8080".into())
                    ],
                    target: Some("a-1".into()),
                },
                ListedElement {
                    map: "hostports".into(),
                    key: vec![
                        KeyValue::Listed("udp".into()),
                        KeyValue::Listed("53".into())
                    ],
                    target: Some("a-2".into()),
                },
            ]
        );
        assert!(parse_listing("{}").is_err());
        assert!(parse_listing("nope").is_err());
        assert_eq!(
            parse_tables(r#"{"nftables": [{"table": {"family": "ip6", "name": "x"}}]}"#).unwrap(),
            vec![("ip6".to_string(), "x".to_string())]
        );
    }
}
