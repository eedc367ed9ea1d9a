//! nftables backend: per family a table (`ip rcni_hostport`, `ip6 rcni_hostport`; nat in
//! `inet` tables needs Linux 5.2) whose size grows with the number of mappings, never its
//! base chains:
//!
//! ```text
//! table ip rcni_hostport {
//!     map hostip_hostports { type ipv4_addr . inet_proto . inet_service : verdict
//!         elements = { 192.168.1.5 . tcp . 8443 : jump a-<instance hash> } }
//!     map hostports { type inet_proto . inet_service : verdict
//!         elements = { tcp . 8080 : jump a-<instance hash>, udp . 5353 : jump a-<..> } }
//!     chain prerouting { type nat hook prerouting priority -100; policy accept;
//!         ip daddr . meta l4proto . th dport vmap @hostip_hostports
//!         fib daddr type local meta l4proto . th dport vmap @hostports }
//!     chain output { type nat hook output priority -100; policy accept;  (the same two rules) }
//!     chain setmark-bit13 { meta mark set meta mark or 0x00002000 }
//!     chain masquerade-bit13 { type nat hook postrouting priority 100; policy accept;
//!         meta mark and 0x00002000 == 0x00002000 masquerade }
//!     chain a-<instance hash> {              (one regular chain per attachment)
//!         meta l4proto tcp th dport 8080 ip saddr 10.244.1.0/24 jump setmark-bit13
//!         meta l4proto tcp th dport 8080 ip saddr 127.0.0.1 jump setmark-bit13
//!         meta l4proto tcp th dport 8080 dnat to 10.244.1.5:80
//!         ... }
//! }
//! ```
//!
//! A new connection to a host port costs two hash lookups whatever the number of pods, and
//! the kernel's limit of 1024 nat base chains per hook is never approached (one base chain
//! per hook, plus one postrouting chain per mark bit in use). The per-attachment chain is
//! named after the attachment's instance hash (network, ifname, container ID), and every rule
//! carries the usual comment (see [`crate::hash`]).
//!
//! * ADD is one `nft -f -` with no listing and, for a new attachment, nothing deleted: its
//!   chain and map elements only. That fails with ENOENT when a part of the skeleton it
//!   relies on is missing (the table, a map, the `setmark-bit<N>` chain, which is made
//!   together with `masquerade-bit<N>`); then one transaction makes the skeleton (idempotent
//!   `add`s; the fixed chains are flushed and rewritten) and the attachment. Deleting
//!   anything costs an RCU grace period when `nft` exits (~12 ms here), which the common case
//!   so avoids. A host port held by another attachment (a stale one whose DEL has not come
//!   yet: the runtime's own conflicts are excluded by the scheduler) makes the element add
//!   fail with EEXIST; then the maps are listed and the conflicting and stale elements are
//!   deleted in a transaction that also redoes the ADD: the newest ADD wins.
//! * DEL lists the table (elements say which keys point at the attachment's chain: an
//!   element's key alone cannot tell its owner) and deletes those elements and the chain in
//!   one transaction. It also deletes the Go plugin's nft rules (tables `cni_hostport`,
//!   rules commented with the container ID).
//! * GC lists both tables once and removes the network's stale attachments in one transaction.

use std::collections::HashSet;

use ipnetwork::IpNetwork;

use super::nft_ops::{
    BaseChain, Expr, Family, Hook, KeyField, KeyType, KeyValue, Listing, Op, Table, Verdict,
    key_text, parse_listing, render,
};
use super::{Listed, Maker, PortMapper, Probe, Request};
use crate::hash::{comment, hash_of_comment, instance_hash, network_hash};
use crate::runner::{Runner, SystemRunner, failed};
use crate::{Attachment, Backend, Error};

/// Our table's name (families `ip` and `ip6`).
pub const TABLE: &str = "rcni_hostport";
/// The Go plugin's table (families `ip` and `ip6`), cleaned on DEL.
pub const REFERENCE_TABLE: &str = "cni_hostport";
/// The Go plugin's chains holding rules commented with the container ID.
const REFERENCE_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];
/// Map of mappings without a host IP: (protocol, port).
const HOSTPORTS: &str = "hostports";
/// Map of mappings with a host IP: (address, protocol, port).
const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
/// Prefix of the per-attachment chains.
const CHAIN_PREFIX: &str = "a-";
/// `dstnat` and `srcnat`, as numbers for older `nft`.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

const NFT: &str = "nft";
/// What nft prints when a table or chain named in a command does not exist.
const ENOENT: &str = "No such file or directory";
const EEXIST: &str = "File exists";

/// The per-attachment chain: `a-<instance hash>`.
pub fn chain_name(att: &Attachment) -> String {
    format!("{CHAIN_PREFIX}{}", instance_hash(att))
}

/// The postrouting chain masquerading packets with `bit` set.
fn masq_chain(bit: u8) -> String {
    format!("masquerade-bit{bit}")
}

/// The regular chain setting `bit` (what attachments jump to, as iptables' SETMARK chain).
fn setmark_chain(bit: u8) -> String {
    format!("setmark-bit{bit}")
}

fn table(family: Family) -> Table {
    Table {
        family,
        name: TABLE,
    }
}

fn reference_table(family: Family) -> Table {
    Table {
        family,
        name: REFERENCE_TABLE,
    }
}

fn families() -> [Family; 2] {
    [Family::Ip, Family::Ip6]
}

/// The nftables backend.
#[derive(Debug, Clone, Default)]
pub struct Nftables<R: Runner = SystemRunner> {
    runner: R,
}

impl<R: Runner> Nftables<R> {
    /// Backend using `runner` to spawn `nft`.
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    /// `nft -j list table ..`; `None` when the table does not exist.
    fn list_table(&self, t: Table) -> Result<Option<Listing>, Error> {
        let args = ["-j", "list", "table", t.family.as_str(), t.name];
        let out = self.runner.run(NFT, &args, None)?;
        if out.success {
            return parse_listing(&out.stdout).map(Some);
        }
        if out.stderr.contains(ENOENT) {
            return Ok(None);
        }
        Err(failed(NFT, &args, &out))
    }

    /// Run `ops` as one transaction; the raw output, so callers can look at failures.
    fn apply(&self, ops: &[Op]) -> Result<crate::Output, Error> {
        let script = render(ops);
        let out = self.runner.run(NFT, &["-f", "-"], Some(&script))?;
        if !out.success {
            log::debug!("{NFT} input was:\n{script}");
        }
        Ok(out)
    }

    fn apply_ok(&self, ops: &[Op]) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let out = self.apply(ops)?;
        if out.success {
            Ok(())
        } else {
            Err(failed(NFT, &["-f", "-"], &out))
        }
    }

    /// Teardown knowing which tables exist.
    pub(crate) fn teardown_in(&self, att: &Attachment, probe: &Probe) -> Result<(), Error> {
        let chain = chain_name(att);
        let mut ops = Vec::new();
        for family in families() {
            let ours = table(family);
            if probe.may_have(family.as_str(), ours.name)
                && let Some(listing) = self.list_table(ours)?
            {
                ops.extend(detach_ops(ours, &listing, &HashSet::from([chain.clone()])));
            }
            let theirs = reference_table(family);
            if probe.may_have(family.as_str(), theirs.name)
                && let Some(listing) = self.list_table(theirs)?
            {
                ops.extend(
                    listing
                        .rules
                        .iter()
                        .filter(|r| REFERENCE_CHAINS.contains(&r.chain.as_str()))
                        .filter(|r| r.comment.as_deref() == Some(att.container_id.as_str()))
                        .map(|r| Op::DeleteRule {
                            table: theirs,
                            chain: r.chain.clone(),
                            handle: r.handle,
                        }),
                );
            }
        }
        self.apply_ok(&ops)
    }
}

/// The fixed part of a family's table: maps and base chains (rewritten, their content never
/// changes) and the masquerade chain of the mark bit.
fn skeleton(family: Family, req: &Request) -> Vec<Op> {
    let t = table(family);
    let mut ops = vec![
        Op::AddTable(t),
        Op::AddMap {
            table: t,
            name: HOSTPORTS.into(),
            key: vec![KeyType::InetProto, KeyType::InetService],
        },
        Op::AddMap {
            table: t,
            name: HOSTIP_HOSTPORTS.into(),
            key: vec![family.addr_type(), KeyType::InetProto, KeyType::InetService],
        },
    ];
    for (name, hook) in [(PREROUTING, Hook::Prerouting), (OUTPUT, Hook::Output)] {
        ops.push(Op::AddChain {
            table: t,
            name: name.into(),
            base: Some(BaseChain {
                hook,
                priority: DSTNAT,
            }),
        });
        ops.push(Op::FlushChain {
            table: t,
            name: name.into(),
        });
        ops.push(Op::AddRule {
            table: t,
            chain: name.into(),
            exprs: vec![Expr::Vmap {
                key: vec![KeyField::Daddr, KeyField::L4Proto, KeyField::DstPort],
                map: HOSTIP_HOSTPORTS.into(),
            }],
            comment: None,
        });
        ops.push(Op::AddRule {
            table: t,
            chain: name.into(),
            exprs: vec![
                Expr::FibDaddrLocal,
                Expr::Vmap {
                    key: vec![KeyField::L4Proto, KeyField::DstPort],
                    map: HOSTPORTS.into(),
                },
            ],
            comment: None,
        });
    }
    if let (true, super::MarkMasq::Bit(bit)) = (req.opts.snat, &req.opts.mark) {
        let name = masq_chain(*bit);
        let bits = 1u32 << u32::from(*bit);
        let setmark = setmark_chain(*bit);
        ops.push(Op::AddChain {
            table: t,
            name: setmark.clone(),
            base: None,
        });
        ops.push(Op::FlushChain {
            table: t,
            name: setmark.clone(),
        });
        ops.push(Op::AddRule {
            table: t,
            chain: setmark,
            exprs: vec![Expr::MarkSetOr(bits)],
            comment: None,
        });
        ops.push(Op::AddChain {
            table: t,
            name: name.clone(),
            base: Some(BaseChain {
                hook: Hook::Postrouting,
                priority: SRCNAT,
            }),
        });
        ops.push(Op::FlushChain {
            table: t,
            name: name.clone(),
        });
        ops.push(Op::AddRule {
            table: t,
            chain: name,
            exprs: vec![Expr::MarkAll(bits), Expr::Masquerade],
            comment: None,
        });
    }
    ops
}

/// The attachment's chain (created or emptied, then filled) for the pod address `addr`.
fn chain_ops(family: Family, req: &Request, addr: IpNetwork) -> Vec<Op> {
    let t = table(family);
    let chain = chain_name(req.att);
    let c = comment(req.att);
    let v6 = family.is_v6();
    let conditions = req.conditions(v6);
    let mut ops = vec![
        Op::AddChain {
            table: t,
            name: chain.clone(),
            base: None,
        },
        Op::FlushChain {
            table: t,
            name: chain.clone(),
        },
    ];
    let mut rule = |exprs: Vec<Expr>| {
        ops.push(Op::AddRule {
            table: t,
            chain: chain.clone(),
            exprs,
            comment: Some(c.clone()),
        });
    };
    for m in req.mappings_for(v6) {
        let mut base = Vec::new();
        if !conditions.is_empty() {
            base.push(Expr::Raw(conditions.join(" ")));
        }
        if let Some(ip) = m.host_addr() {
            base.push(Expr::Daddr(ip));
        }
        base.push(Expr::L4Proto(m.protocol));
        base.push(Expr::DstPort(m.host_port));
        let with = |extra: Vec<Expr>| [base.clone(), extra].concat();
        if let (true, super::MarkMasq::Bit(bit)) = (req.opts.snat, &req.opts.mark) {
            let setmark = Expr::Jump(setmark_chain(*bit));
            if req.opts.masq_all {
                rule(with(vec![setmark]));
            } else {
                rule(with(vec![Expr::Saddr(addr), setmark.clone()]));
                if !v6 {
                    let localhost = IpNetwork::new([127, 0, 0, 1].into(), 32)
                        .unwrap_or_else(|_| unreachable!("a /32 is a valid prefix"));
                    rule(with(vec![Expr::Saddr(localhost), setmark]));
                }
            }
        }
        rule(with(vec![Expr::Dnat(addr.ip(), m.container_port)]));
    }
    ops
}

/// The attachment's map elements: (map, key) for each mapping of family `v6`, first wins.
fn element_keys(req: &Request, family: Family) -> Vec<(&'static str, Vec<KeyValue>)> {
    let mut seen = HashSet::new();
    req.mappings_for(family.is_v6())
        .map(|m| {
            let proto = KeyValue::Proto(m.protocol);
            let port = KeyValue::Port(m.host_port);
            match m.host_addr() {
                Some(ip) => (HOSTIP_HOSTPORTS, vec![KeyValue::Addr(ip), proto, port]),
                None => (HOSTPORTS, vec![proto, port]),
            }
        })
        .filter(|(map, key)| seen.insert((*map, key_text(key))))
        .collect()
}

fn element_ops(family: Family, req: &Request) -> Vec<Op> {
    let chain = chain_name(req.att);
    let keys = element_keys(req, family);
    [HOSTPORTS, HOSTIP_HOSTPORTS]
        .into_iter()
        .filter_map(|map| {
            let elems: Vec<(Vec<KeyValue>, Verdict)> = keys
                .iter()
                .filter(|(m, _)| *m == map)
                .map(|(_, k)| (k.clone(), Verdict::Jump(chain.clone())))
                .collect();
            (!elems.is_empty()).then(|| Op::AddElements {
                table: table(family),
                map: map.into(),
                elems,
            })
        })
        .collect()
}

/// The families `req` installs something in: those with a pod address and a mapping.
fn setup_families<'a>(req: &'a Request) -> impl Iterator<Item = (Family, IpNetwork)> + 'a {
    families().into_iter().filter_map(|f| {
        let addr = req.addr(f.is_v6())?;
        req.mappings_for(f.is_v6()).next().map(|_| (f, addr))
    })
}

/// Deletes every element of `listing` that points at one of `chains`, then the chains.
fn detach_ops(t: Table, listing: &Listing, chains: &HashSet<String>) -> Vec<Op> {
    let mut ops = delete_elements(t, listing, |e| {
        e.target.as_ref().is_some_and(|c| chains.contains(c))
    });
    for c in chains.iter().filter(|c| listing.has_chain(c)) {
        ops.push(Op::FlushChain {
            table: t,
            name: c.clone(),
        });
        ops.push(Op::DeleteChain {
            table: t,
            name: c.clone(),
        });
    }
    ops
}

fn delete_elements(
    t: Table,
    listing: &Listing,
    doomed: impl Fn(&super::nft_ops::ListedElement) -> bool,
) -> Vec<Op> {
    [HOSTPORTS, HOSTIP_HOSTPORTS]
        .into_iter()
        .filter_map(|map| {
            let keys: Vec<Vec<KeyValue>> = listing
                .elements
                .iter()
                .filter(|e| e.map == map && doomed(e))
                .map(|e| e.key.clone())
                .collect();
            (!keys.is_empty()).then(|| Op::DeleteElements {
                table: t,
                map: map.into(),
                keys,
            })
        })
        .collect()
}

/// What an ADD must delete first when its fast transaction failed: elements holding one of
/// its keys (another attachment's: the newest ADD wins) and its own stale elements.
fn conflict_ops(family: Family, req: &Request, listing: &Listing) -> Vec<Op> {
    let chain = chain_name(req.att);
    let wanted: HashSet<(&str, String)> = element_keys(req, family)
        .into_iter()
        .map(|(m, k)| (m, key_text(&k)))
        .collect();
    delete_elements(table(family), listing, |e| {
        let key = (e.map.as_str(), key_text(&e.key));
        wanted.contains(&key) || e.target.as_deref() == Some(chain.as_str())
    })
}

/// `"<hash>, net: N, if: I, id: C"` → (N, I, C).
fn parse_comment(c: &str) -> Option<(String, String, String)> {
    let h = hash_of_comment(c)?;
    let rest = c.get(h.len()..)?.strip_prefix(", net: ")?;
    let (net, rest) = rest.split_once(", if: ")?;
    let (ifname, cid) = rest.split_once(", id: ")?;
    Some((net.into(), ifname.into(), cid.into()))
}

impl<R: Runner> PortMapper for Nftables<R> {
    fn setup(&self, req: &Request) -> Result<(), Error> {
        let fams: Vec<(Family, IpNetwork)> = setup_families(req).collect();
        if fams.is_empty() {
            return Ok(());
        }
        let mut attachment = Vec::new();
        let mut full = Vec::new();
        for (f, addr) in &fams {
            let own = [chain_ops(*f, req, *addr), element_ops(*f, req)].concat();
            full.extend(skeleton(*f, req));
            full.extend(own.iter().cloned());
            attachment.extend(own);
        }
        // The common case: the skeleton is there, nothing to delete.
        let mut out = self.apply(&attachment)?;
        if !out.success && out.stderr.contains(ENOENT) {
            log::debug!("port mapping tables not set up yet: {}", out.stderr.trim());
            out = self.apply(&full)?;
        }
        if out.success {
            return Ok(());
        }
        if !out.stderr.contains(EEXIST) {
            return Err(failed(NFT, &["-f", "-"], &out));
        }
        log::info!("host port held by another attachment; replacing it");
        let mut first = Vec::new();
        for (f, _) in &fams {
            if let Some(listing) = self.list_table(table(*f))? {
                first.extend(conflict_ops(*f, req, &listing));
            }
        }
        first.extend(full);
        self.apply_ok(&first)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        let chain = chain_name(req.att);
        for (f, addr) in setup_families(req) {
            let t = table(f);
            let listing = self
                .list_table(t)?
                .ok_or_else(|| Error::Check(format!("table {t} not found")))?;
            for base in [PREROUTING, OUTPUT] {
                if listing.rules_in(base).count() != 2 {
                    return Err(Error::Check(format!(
                        "chain {base} of table {t} is not ours"
                    )));
                }
            }
            if let (true, super::MarkMasq::Bit(bit)) = (req.opts.snat, &req.opts.mark) {
                for c in [masq_chain(*bit), setmark_chain(*bit)] {
                    if listing.rules_in(&c).count() != 1 {
                        return Err(Error::Check(format!("chain {c} of table {t} is not ours")));
                    }
                }
            }
            if !listing.has_chain(&chain) {
                return Err(Error::Check(format!(
                    "chain {chain} not found in table {t}"
                )));
            }
            let want = chain_ops(f, req, addr)
                .iter()
                .filter(|o| matches!(o, Op::AddRule { .. }))
                .count();
            if listing.rules_in(&chain).count() != want {
                return Err(Error::Check(format!(
                    "missing hostport rules in chain {chain} of table {t}"
                )));
            }
            for (map, key) in element_keys(req, f) {
                let k = key_text(&key);
                let found = listing
                    .elements
                    .iter()
                    .find(|e| e.map == map && key_text(&e.key) == k);
                match found.and_then(|e| e.target.as_deref()) {
                    Some(target) if target == chain => {}
                    Some(other) => {
                        return Err(Error::Check(format!(
                            "host port {k} of table {t} goes to {other}, not {chain}"
                        )));
                    }
                    None => {
                        return Err(Error::Check(format!(
                            "host port {k} missing in map {map} of table {t}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.teardown_in(att, &Probe::default())
    }

    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error> {
        let prefix = format!("{}-", network_hash(network));
        let keep: HashSet<String> = valid
            .iter()
            .map(|a| {
                chain_name(&Attachment {
                    network: network.to_string(),
                    ..a.clone()
                })
            })
            .collect();
        let mut ops = Vec::new();
        for f in families() {
            let t = table(f);
            let Some(listing) = self.list_table(t)? else {
                continue;
            };
            let doomed: HashSet<String> = listing
                .chains
                .iter()
                .filter(|c| {
                    c.strip_prefix(CHAIN_PREFIX)
                        .is_some_and(|h| hash_of_comment(h) == Some(h) && h.starts_with(&prefix))
                })
                .filter(|c| !keep.contains(*c))
                .cloned()
                .collect();
            if !doomed.is_empty() {
                ops.extend(detach_ops(t, &listing, &doomed));
            }
        }
        self.apply_ok(&ops)
    }

    fn list(&self) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        for f in families() {
            if let Some(listing) = self.list_table(table(f))? {
                for chain in listing
                    .chains
                    .iter()
                    .filter(|c| c.starts_with(CHAIN_PREFIX))
                {
                    let who = listing
                        .rules_in(chain)
                        .find_map(|r| r.comment.as_deref().and_then(parse_comment));
                    let (network, ifname, cid) = match who {
                        Some((n, i, c)) => (Some(n), Some(i), Some(c)),
                        None => (None, None, None),
                    };
                    out.push(Listed {
                        backend: Backend::Nftables,
                        maker: Maker::Rcni,
                        v6: f.is_v6(),
                        chain: chain.clone(),
                        network,
                        container_id: cid,
                        ifname,
                    });
                }
            }
            if let Some(listing) = self.list_table(reference_table(f))? {
                let mut seen = HashSet::new();
                for r in &listing.rules {
                    let Some(cid) = r.comment.as_deref() else {
                        continue;
                    };
                    if REFERENCE_CHAINS.contains(&r.chain.as_str()) && seen.insert(cid) {
                        out.push(Listed {
                            backend: Backend::Nftables,
                            maker: Maker::Reference,
                            v6: f.is_v6(),
                            chain: r.chain.clone(),
                            network: None,
                            container_id: Some(cid.to_string()),
                            ifname: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::fixtures::{att, pm};
    use crate::portmap::{MarkMasq, Options, Protocol};
    use crate::runner::fake::FakeRunner;

    #[test]
    fn setup_is_one_transaction() {
        let a = att("cid1");
        let ms = vec![
            pm(8080, 80, Protocol::Tcp, None),
            pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")),
            pm(5353, 53, Protocol::Udp, Some("::")),
        ];
        let addrs: Vec<IpNetwork> = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ];
        let opts = Options {
            conditions_v6: vec!["ip6".into(), "daddr".into(), "!=".into(), "fc00::/7".into()],
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let ch = chain_name(&a);
        let c = comment(&a);
        let skel = |f: &str, addr: &str| {
            format!(
                "add table {f} rcni_hostport\n\
                 add map {f} rcni_hostport hostports {{ type inet_proto . inet_service : verdict ; }}\n\
                 add map {f} rcni_hostport hostip_hostports {{ type {addr} . inet_proto . inet_service : verdict ; }}\n\
                 add chain {f} rcni_hostport prerouting {{ type nat hook prerouting priority -100 ; policy accept ; }}\n\
                 flush chain {f} rcni_hostport prerouting\n\
                 add rule {f} rcni_hostport prerouting {f} daddr . meta l4proto . th dport vmap @hostip_hostports\n\
                 add rule {f} rcni_hostport prerouting fib daddr type local meta l4proto . th dport vmap @hostports\n\
                 add chain {f} rcni_hostport output {{ type nat hook output priority -100 ; policy accept ; }}\n\
                 flush chain {f} rcni_hostport output\n\
                 add rule {f} rcni_hostport output {f} daddr . meta l4proto . th dport vmap @hostip_hostports\n\
                 add rule {f} rcni_hostport output fib daddr type local meta l4proto . th dport vmap @hostports\n\
                 add chain {f} rcni_hostport setmark-bit13\n\
                 flush chain {f} rcni_hostport setmark-bit13\n\
                 add rule {f} rcni_hostport setmark-bit13 meta mark set meta mark or 0x00002000\n\
                 add chain {f} rcni_hostport masquerade-bit13 {{ type nat hook postrouting priority 100 ; policy accept ; }}\n\
                 flush chain {f} rcni_hostport masquerade-bit13\n\
                 add rule {f} rcni_hostport masquerade-bit13 meta mark and 0x00002000 == 0x00002000 masquerade\n"
            )
        };
        let own = |f: &str| {
            format!("add chain {f} rcni_hostport {ch}\nflush chain {f} rcni_hostport {ch}\n")
        };
        let mark = "jump setmark-bit13";
        let v4 = format!(
            "{}\
             add rule ip rcni_hostport {ch} meta l4proto tcp th dport 8080 ip saddr 10.244.1.0/24 {mark} comment \"{c}\"\n\
             add rule ip rcni_hostport {ch} meta l4proto tcp th dport 8080 ip saddr 127.0.0.1 {mark} comment \"{c}\"\n\
             add rule ip rcni_hostport {ch} meta l4proto tcp th dport 8080 dnat to 10.244.1.5:80 comment \"{c}\"\n\
             add rule ip rcni_hostport {ch} ip daddr 192.168.1.5 meta l4proto tcp th dport 8443 ip saddr 10.244.1.0/24 {mark} comment \"{c}\"\n\
             add rule ip rcni_hostport {ch} ip daddr 192.168.1.5 meta l4proto tcp th dport 8443 ip saddr 127.0.0.1 {mark} comment \"{c}\"\n\
             add rule ip rcni_hostport {ch} ip daddr 192.168.1.5 meta l4proto tcp th dport 8443 dnat to 10.244.1.5:443 comment \"{c}\"\n\
             add element ip rcni_hostport hostports {{ tcp . 8080 : jump {ch} }}\n\
             add element ip rcni_hostport hostip_hostports {{ 192.168.1.5 . tcp . 8443 : jump {ch} }}\n",
            own("ip")
        );
        let v6 = format!(
            "{}\
             add rule ip6 rcni_hostport {ch} ip6 daddr != fc00::/7 meta l4proto tcp th dport 8080 ip6 saddr fd00::/64 {mark} comment \"{c}\"\n\
             add rule ip6 rcni_hostport {ch} ip6 daddr != fc00::/7 meta l4proto tcp th dport 8080 dnat to [fd00::5]:80 comment \"{c}\"\n\
             add rule ip6 rcni_hostport {ch} ip6 daddr != fc00::/7 meta l4proto udp th dport 5353 ip6 saddr fd00::/64 {mark} comment \"{c}\"\n\
             add rule ip6 rcni_hostport {ch} ip6 daddr != fc00::/7 meta l4proto udp th dport 5353 dnat to [fd00::5]:53 comment \"{c}\"\n\
             add element ip6 rcni_hostport hostports {{ tcp . 8080 : jump {ch}, udp . 5353 : jump {ch} }}\n",
            own("ip6")
        );
        // The skeleton in place: only the attachment's chain and elements, nothing deleted.
        let fake = FakeRunner::new();
        Nftables::new(&fake).setup(&req).unwrap();
        assert_eq!(fake.transcript(), format!("$ nft -f -\n{v4}{v6}"));
        // Not there (ENOENT): a second transaction with the skeleton.
        let fake = FakeRunner::new();
        fake.fail(
            "nft",
            "Error: Could not process rule: No such file or directory",
        );
        Nftables::new(&fake).setup(&req).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -f -\n{v4}{v6}$ nft -f -\n{}{v4}{}{v6}",
                skel("ip", "ipv4_addr"),
                skel("ip6", "ipv6_addr")
            )
        );
    }

    #[test]
    fn masq_all_and_snat_off() {
        let a = att("c");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let all = Options {
            masq_all: true,
            mark: MarkMasq::Bit(0),
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &all,
        };
        let text = render(&chain_ops(Family::Ip, &req, addrs[0]));
        assert!(
            text.contains(" meta l4proto tcp th dport 80 jump setmark-bit0 comment"),
            "{text}"
        );
        assert_eq!(text.matches("jump setmark").count(), 1, "{text}");
        let skel = render(&skeleton(Family::Ip, &req));
        assert!(skel.contains("masquerade-bit0"), "{skel}");
        assert!(
            skel.contains("setmark-bit0 meta mark set meta mark or 0x00000001"),
            "{skel}"
        );
        let off = Options {
            snat: false,
            ..Options::default()
        };
        let req = Request { opts: &off, ..req };
        assert!(!render(&chain_ops(Family::Ip, &req, addrs[0])).contains("setmark"));
        assert!(!render(&skeleton(Family::Ip, &req)).contains("masquerade"));
    }

    fn listing_json(elems: &str, chains: &[&str], rules: &[(&str, u64, &str)]) -> String {
        let mut items = vec![format!(
            r#"{{"map": {{"family": "ip", "name": "hostports", "table": "rcni_hostport", "type": ["inet_proto", "inet_service"], "handle": 1, "map": "verdict", "elem": [{elems}]}}}}"#
        )];
        for c in chains {
            items.push(format!(
                r#"{{"chain": {{"family": "ip", "table": "rcni_hostport", "name": "{c}", "handle": 2}}}}"#
            ));
        }
        for (c, h, comment) in rules {
            items.push(format!(
                r#"{{"rule": {{"family": "ip", "table": "x", "chain": "{c}", "handle": {h}, "comment": "{comment}", "expr": []}}}}"#
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    #[test]
    fn conflict_deletes_the_other_owner_and_redoes_the_add() {
        let a = att("new");
        let ms = vec![pm(8080, 80, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let old = chain_name(&att("old"));
        let mine = chain_name(&a);
        let fake = FakeRunner::new();
        fake.fail("nft", "Error: Could not process rule: File exists");
        fake.answer(
            "nft",
            &listing_json(
                &format!(
                    r#"[{{"concat": ["tcp", 8080]}}, {{"jump": {{"target": "{old}"}}}}], [{{"concat": ["tcp", 9]}}, {{"jump": {{"target": "{mine}"}}}}], [{{"concat": ["udp", 1]}}, {{"jump": {{"target": "{old}"}}}}]"#
                ),
                &[&old],
                &[],
            ),
        );
        Nftables::new(&fake).setup(&req).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            calls[1].args,
            ["-j", "list", "table", "ip", "rcni_hostport"]
        );
        let second = calls[2].stdin.as_deref().unwrap();
        assert!(
            second.starts_with("delete element ip rcni_hostport hostports { tcp . 8080, tcp . 9 }\nadd table ip rcni_hostport\n"),
            "{second}"
        );
        assert!(second.ends_with(&format!(
            "add element ip rcni_hostport hostports {{ tcp . 8080 : jump {mine} }}\n"
        )));
        assert_eq!(second.matches("add table").count(), 1);
    }

    #[test]
    fn other_failures_are_reported() {
        let a = att("new");
        let ms = vec![pm(8080, 80, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let fake = FakeRunner::new();
        fake.fail("nft", "Error: syntax error");
        let e = Nftables::new(&fake).setup(&req).unwrap_err();
        assert!(e.to_string().contains("syntax error"));
        assert_eq!(fake.calls.borrow().len(), 1);
        // Nothing to map in any family: nothing runs.
        let fake = FakeRunner::new();
        let v6_only = vec![pm(1, 1, Protocol::Tcp, Some("fd00::1"))];
        let req = Request {
            mappings: &v6_only,
            ..req
        };
        Nftables::new(&fake).setup(&req).unwrap();
        assert!(fake.calls.borrow().is_empty());
    }

    #[test]
    fn teardown_deletes_elements_chain_and_reference_rules() {
        let a = att("cid1");
        let mine = chain_name(&a);
        let other = chain_name(&att("cid2"));
        let fake = FakeRunner::new();
        let tables = r#"{"nftables": [{"table": {"family": "ip", "name": "rcni_hostport"}}, {"table": {"family": "ip6", "name": "cni_hostport"}}]}"#;
        let probe = Probe {
            tables: Some(crate::portmap::nft_ops::parse_tables(tables).unwrap()),
        };
        fake.answer(
            "nft",
            &listing_json(
                &format!(
                    r#"[{{"concat": ["tcp", 8080]}}, {{"jump": {{"target": "{mine}"}}}}], [{{"concat": ["tcp", 9]}}, {{"jump": {{"target": "{other}"}}}}]"#
                ),
                &[&mine, &other],
                &[],
            ),
        );
        fake.answer(
            "nft",
            &listing_json(
                "",
                &["hostports"],
                &[
                    ("hostports", 4, "cid1"),
                    ("hostports", 5, "cid2"),
                    ("masquerading", 6, "cid1"),
                ],
            ),
        );
        Nftables::new(&fake).teardown_in(&a, &probe).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -j list table ip rcni_hostport\n\
                 $ nft -j list table ip6 cni_hostport\n\
                 $ nft -f -\n\
                 delete element ip rcni_hostport hostports {{ tcp . 8080 }}\n\
                 flush chain ip rcni_hostport {mine}\n\
                 delete chain ip rcni_hostport {mine}\n\
                 delete rule ip6 cni_hostport hostports handle 4\n\
                 delete rule ip6 cni_hostport masquerading handle 6\n"
            )
        );
        // Nothing there: no transaction.
        let fake = FakeRunner::new();
        fake.fail("nft", "Error: No such file or directory");
        fake.fail("nft", "Error: No such file or directory");
        fake.fail("nft", "Error: No such file or directory");
        fake.fail("nft", "Error: No such file or directory");
        Nftables::new(&fake).teardown(&a).unwrap();
        assert_eq!(fake.calls.borrow().len(), 4);
    }

    #[test]
    fn gc_removes_stale_attachments_of_the_network() {
        let keep = chain_name(&att("keep"));
        let gone = chain_name(&att("gone"));
        let foreign = chain_name(&Attachment {
            network: "othernet".into(),
            ..att("gone")
        });
        let fake = FakeRunner::new();
        fake.answer(
            "nft",
            &listing_json(
                &format!(
                    r#"[{{"concat": ["tcp", 1]}}, {{"jump": {{"target": "{keep}"}}}}], [{{"concat": ["tcp", 2]}}, {{"jump": {{"target": "{gone}"}}}}], [{{"concat": ["tcp", 3]}}, {{"jump": {{"target": "{foreign}"}}}}]"#
                ),
                &["prerouting", &keep, &gone, &foreign],
                &[],
            ),
        );
        fake.fail("nft", "Error: No such file or directory");
        Nftables::new(&fake).gc("mynet", &[att("keep")]).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            calls[2].stdin.as_deref().unwrap(),
            format!(
                "delete element ip rcni_hostport hostports {{ tcp . 2 }}\n\
                 flush chain ip rcni_hostport {gone}\n\
                 delete chain ip rcni_hostport {gone}\n"
            )
        );
    }

    #[test]
    fn check_compares_chain_and_elements() {
        let a = att("c");
        let ms = vec![pm(8080, 80, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let mine = chain_name(&a);
        let c = comment(&a);
        let elem = |target: &str| {
            format!(r#"[{{"concat": ["tcp", 8080]}}, {{"jump": {{"target": "{target}"}}}}]"#)
        };
        let base = [
            ("prerouting", 1, ""),
            ("prerouting", 2, ""),
            ("output", 3, ""),
            ("output", 4, ""),
            ("masquerade-bit13", 5, ""),
            ("setmark-bit13", 9, ""),
        ];
        let full: Vec<(&str, u64, &str)> = base
            .iter()
            .copied()
            .chain([
                (mine.as_str(), 6, c.as_str()),
                (mine.as_str(), 7, c.as_str()),
                (mine.as_str(), 8, c.as_str()),
            ])
            .collect();
        let good = listing_json(&elem(&mine), &["prerouting", "output", &mine], &full);
        let fake = FakeRunner::new();
        fake.answer("nft", &good);
        Nftables::new(&fake).check(&req).unwrap();

        let stolen = listing_json(&elem("a-x"), &["prerouting", "output", &mine], &full);
        fake.answer("nft", &stolen);
        let e = Nftables::new(&fake).check(&req).unwrap_err();
        assert!(e.to_string().contains("goes to a-x"), "{e}");

        let short = listing_json(&elem(&mine), &["prerouting", "output", &mine], &full[..7]);
        fake.answer("nft", &short);
        let e = Nftables::new(&fake).check(&req).unwrap_err();
        assert!(e.to_string().contains("missing hostport rules"), "{e}");

        fake.fail("nft", "Error: No such file or directory");
        let e = Nftables::new(&fake).check(&req).unwrap_err();
        assert!(
            e.to_string().contains("table ip rcni_hostport not found"),
            "{e}"
        );
    }

    #[test]
    fn lists_ours_and_the_references() {
        let a = att("c1");
        let mine = chain_name(&a);
        let c = comment(&a);
        let fake = FakeRunner::new();
        fake.answer(
            "nft",
            &listing_json("", &[&mine, "prerouting"], &[(&mine, 1, &c)]),
        );
        fake.fail("nft", "Error: No such file or directory");
        fake.fail("nft", "Error: No such file or directory");
        fake.answer(
            "nft",
            &listing_json(
                "",
                &["hostports"],
                &[("hostports", 1, "abc"), ("hostports", 2, "abc")],
            ),
        );
        let l = Nftables::new(&fake).list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].chain, mine);
        assert_eq!(l[0].network.as_deref(), Some("mynet"));
        assert_eq!(l[0].ifname.as_deref(), Some("eth0"));
        assert_eq!(l[0].container_id.as_deref(), Some("c1"));
        assert_eq!(l[1].maker, Maker::Reference);
        assert!(l[1].v6);
        assert_eq!(l[1].container_id.as_deref(), Some("abc"));
    }
}
