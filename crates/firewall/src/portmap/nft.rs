//! nftables backend: nf_tables over netlink ([`crate::nftables`]), one transaction per call,
//! no process. Per family a table (`ip rcni_hostport`, `ip6 rcni_hostport`; nat in `inet`
//! tables needs Linux 5.2) that grows with the number of mappings, never its base chains:
//!
//! ```text
//! table ip rcni_hostport {
//!     map hostip_hostports { type ipv4_addr . inet_proto . inet_service : verdict
//!         elements = { 192.168.1.5 . tcp . 8443 : jump a-<instance hash> } }
//!     map hostports { type inet_proto . inet_service : verdict
//!         elements = { tcp . 8080 : jump a-<instance hash>, udp . 5353 : jump a-<..> } }
//!     chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!         ip daddr . meta l4proto . th dport vmap @hostip_hostports
//!         fib daddr type local meta l4proto . th dport vmap @hostports }
//!     chain output { type nat hook output priority dstnat; policy accept;  (the same two rules) }
//!     chain setmark-bit13 { meta mark set meta mark or 0x00002000 }
//!     chain masquerade-bit13 { type nat hook postrouting priority srcnat; policy accept;
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
//! carries the usual comment (see [`crate::hash`]). `conditionsV4/V6` are read into
//! expressions ([`super::conditions`]) and lead each mapping's rules.
//!
//! **ADD** reads whether the attachment's chain exists (a GET per family; when it does, the
//! maps' elements, to find the keys it held) and commits one transaction: the chain (emptied
//! and refilled on a re-ADD), its map elements, and the release of keys a re-ADD no longer
//! maps. For a new attachment on a set-up node that transaction deletes nothing (a deletion
//! makes the socket's close wait for an RCU grace period). Refusals are read message by
//! message: ENOENT (the table, a map or `setmark-bit<N>` is missing: the first use, or a new
//! mark bit) adds the skeleton (idempotent `add`s; the fixed chains are flushed and
//! rewritten in the same transaction, so concurrent first ADDs leave them whole); EEXIST on
//! an element (EBUSY before Linux 5.x) means another attachment holds that host port (a
//! stale one whose DEL has not come: the runtime's own conflicts are excluded by the
//! scheduler), which the retry takes over: the newest ADD wins.
//!
//! **A key's owner.** An element's key alone cannot tell its owner, and a newer ADD may have
//! taken a host port over. Every transaction that removes an element of ours writes it as
//! "add `key : jump <my chain>`, delete `key`": if the element now points elsewhere the add
//! is refused, nothing is applied, and the retry leaves that key alone. So a DEL, a re-ADD or
//! GC never removes another attachment's mapping.
//!
//! **DEL** dumps the tables once, reads the attachment's chain and the maps' elements that
//! point to it, and deletes them and the chain in one transaction. It also deletes the Go
//! plugin's nft rules (tables `cni_hostport`, rules commented with the container ID) and,
//! when the caller asks ([`teardown_in`]), the iptables backend's rules in iptables-nft's
//! `nat` tables (the chain `CNI-DN-<hash>` and the `CNI-HOSTPORT-DNAT` rules jumping to it),
//! all without a process. **GC** reads both tables once and removes the network's stale
//! attachments, 200 per transaction.
//!
//! **Kernel.** `fib` needs Linux 4.10; the rest (verdict maps with concatenated keys,
//! 32-bit registers, `meta mark set`, `dnat`, `masquerade`) is older. Before 4.18 our nat
//! chains and an iptables nat table in use were not ordered by the nat core, so an unset
//! `backend` picks this backend only from 4.18 ([`super::kernel_supports_nftables`]). Dumps
//! filter by table and chain in the kernel when it can and here always
//! (`RCNI_TEST_KERNEL_FALLBACKS=1` forces the unfiltered path).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnetwork::IpNetwork;
use netlink::NfNetlink;

use super::{Listed, Maker, MarkMasq, PortMapper, PortMapping, Protocol, Request, conditions};
use crate::naming::{comment, hash_of_comment, instance_hash, network_hash, reference_dnat_chain};
use crate::nft::Session;
use crate::nftables::matches::{self, Dir, Field};
use crate::nftables::{
    BaseChain, Batch, Chain, ChainType, CmpOp, Data, DataType, Elem, Expr, Family, Reg, Rule, Set,
    SetRef, Table, Verdict, concat_key, hook, list, priority,
};
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
const MAPS: [&str; 2] = [HOSTPORTS, HOSTIP_HOSTPORTS];
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
/// Prefix of the per-attachment chains.
const CHAIN_PREFIX: &str = "a-";
/// iptables' nat table (iptables-nft keeps it as an nf_tables table of this name).
const NAT: &str = "nat";
/// How many times a transaction is rebuilt after a refusal that explains itself (a missing
/// skeleton, a host port held by someone else, a key taken over meanwhile).
const ATTEMPTS: usize = 8;
/// Attachments per GC transaction (keeps each batch below the socket's send buffer).
const GC_CHUNK: usize = 200;
const FAMILIES: [Family; 2] = [Family::Ip, Family::Ip6];

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

fn table(fam: Family) -> Table {
    Table::new(fam, TABLE)
}

fn is_v6(fam: Family) -> bool {
    fam == Family::Ip6
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The mark bit the request masquerades with, if any.
fn mark_bit(req: &Request) -> Option<u8> {
    match (req.opts.snat, &req.opts.mark) {
        (true, MarkMasq::Bit(b)) => Some(*b),
        _ => None,
    }
}

/// A map element's key: the map and the key's bytes (a concatenation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    map: &'static str,
    bytes: Vec<u8>,
}

impl Key {
    /// The key a mapping claims.
    fn of(m: &PortMapping) -> Key {
        let proto = [m.protocol.number()];
        let port = m.host_port.to_be_bytes();
        match m.host_addr() {
            Some(ip) => Key {
                map: HOSTIP_HOSTPORTS,
                bytes: concat_key(&[&octets(ip), &proto, &port]),
            },
            None => Key {
                map: HOSTPORTS,
                bytes: concat_key(&[&proto, &port]),
            },
        }
    }

    fn set(&self, fam: Family) -> SetRef {
        SetRef::new(&table(fam), self.map)
    }

    fn elem(&self, chain: &str) -> Elem {
        Elem {
            key: self.bytes.clone(),
            data: Some(Data::Verdict(Verdict::Jump(chain.to_string()))),
        }
    }

    /// As nft writes it: `tcp . 8080`, `192.168.1.5 . tcp . 8443`.
    fn describe(&self) -> String {
        let b = &self.bytes;
        let addr_len = b.len().saturating_sub(8);
        let addr = match addr_len {
            4 => <[u8; 4]>::try_from(&b[..4]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&b[..16]).ok().map(IpAddr::from),
            _ => None,
        };
        let proto = b.get(addr_len).copied().unwrap_or_default();
        let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| p.number() == proto)
            .map_or_else(|| proto.to_string(), |p| p.as_str().to_string());
        let port = b
            .get(addr_len + 4..addr_len + 6)
            .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
        match addr {
            Some(a) => format!("{a} . {proto} . {port}"),
            None => format!("{proto} . {port}"),
        }
    }
}

/// The chain a verdict-map element jumps (or goes) to.
fn target(e: &Elem) -> Option<&str> {
    match &e.data {
        Some(Data::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) => Some(c),
        _ => None,
    }
}

/// The lookup rules of the `prerouting` and `output` base chains.
fn lookup_rules(fam: Family) -> [Vec<Expr>; 2] {
    let v6 = is_v6(fam);
    let hostip = matches::concat_lookup(
        fam,
        &[
            Field::Addr { dir: Dir::Dst, v6 },
            Field::L4Proto,
            Field::Port(Dir::Dst),
        ],
        HOSTIP_HOSTPORTS,
        Some(Reg::VERDICT),
    );
    let mut any = matches::fib_daddr_local();
    any.extend(matches::concat_lookup(
        fam,
        &[Field::L4Proto, Field::Port(Dir::Dst)],
        HOSTPORTS,
        Some(Reg::VERDICT),
    ));
    [hostip, any]
}

fn setmark_rule(bit: u8) -> Vec<Expr> {
    matches::mark_set_or(1 << u32::from(bit))
}

fn masq_rule(bit: u8) -> Vec<Expr> {
    let mut e = matches::mark_all(1 << u32::from(bit));
    e.push(matches::masquerade());
    e
}

fn base_chain(fam: Family, name: &str, hook: u32, priority: i32) -> Chain {
    Chain::base(
        &table(fam),
        name,
        BaseChain {
            kind: ChainType::Nat,
            hook,
            priority,
            accept: Some(true),
        },
    )
}

/// The role of a message in a planned transaction, to interpret a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Pointing a key at our chain (EEXIST/EBUSY: another attachment holds it).
    Claim(Family, Key),
    /// Deleting a key before claiming it (ENOENT: it left meanwhile).
    TakeOver(Family, Key),
    /// The "add" half of a conditional delete (EEXIST/EBUSY: not ours any more).
    IfOurs(Family, Key),
    /// Anything else.
    Other,
}

/// A transaction and the role of each of its messages.
#[derive(Debug, Default)]
struct Plan {
    batch: Batch,
    roles: Vec<Role>,
}

impl Plan {
    /// Gives `role` to the messages added since the last call.
    fn note(&mut self, role: Role) {
        while self.roles.len() < self.batch.len() {
            self.roles.push(role.clone());
        }
    }
}

/// Decisions carried from one attempt to the next.
#[derive(Debug, Default, Clone)]
struct Retry {
    /// Make the skeleton too (something of it was missing).
    skeleton: bool,
    /// Keys to take over from another attachment.
    take_over: HashSet<(Family, Key)>,
    /// Keys that are no longer ours to delete.
    not_ours: HashSet<(Family, Key)>,
}

impl Retry {
    /// Learns from a refusal; false when no retry can fix it.
    fn learn(&mut self, plan: &Plan, err: &Error) -> bool {
        let refused = err.refused();
        if refused.is_empty() {
            return false;
        }
        let had_skeleton = self.skeleton;
        for r in refused {
            let role = r.index.and_then(|i| plan.roles.get(i));
            let clash = matches!(r.errno, libc::EEXIST | libc::EBUSY);
            let explained = match role {
                Some(Role::Claim(f, k)) if clash => self.take_over.insert((*f, k.clone())),
                Some(Role::TakeOver(f, k)) if r.errno == libc::ENOENT => {
                    self.take_over.remove(&(*f, k.clone()))
                }
                Some(Role::IfOurs(f, k)) if clash => self.not_ours.insert((*f, k.clone())),
                // A table, map or chain of the skeleton is missing.
                _ if r.errno == libc::ENOENT && !had_skeleton => {
                    self.skeleton = true;
                    true
                }
                _ => false,
            };
            if !explained {
                return false;
            }
        }
        true
    }
}

/// Commits plans built by `plan` until one is accepted or a refusal cannot be explained.
fn commit_with_retries(
    nl: &mut NfNetlink,
    mut plan: impl FnMut(&Retry) -> Result<Plan, Error>,
) -> Result<(), Error> {
    let mut retry = Retry::default();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let p = plan(&retry)?;
        match p.batch.commit(nl) {
            Ok(()) => return Ok(()),
            Err(e) if retry.learn(&p, &e) => {
                log::debug!("nftables transaction refused, retrying: {e}");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::netlink("nftables", netlink::Error::Protocol("no attempt".into()))
    }))
}

/// The fixed part of a family's table: maps, base chains and their lookups (rewritten:
/// their content never changes), and the mark bit's chains.
fn plan_skeleton(p: &mut Plan, fam: Family, bit: Option<u8>) {
    let t = table(fam);
    let v6 = is_v6(fam);
    let addr = if v6 {
        DataType::IPV6_ADDR
    } else {
        DataType::IPV4_ADDR
    };
    let service = [DataType::INET_PROTO, DataType::INET_SERVICE];
    p.batch.add_table(&t);
    for (name, key) in [
        (HOSTPORTS, DataType::concat(&service)),
        (
            HOSTIP_HOSTPORTS,
            DataType::concat(&[addr, service[0], service[1]]),
        ),
    ] {
        p.batch
            .add_set(&Set::new(&t, name, key, Some(DataType::VERDICT)));
    }
    for (name, h) in [(PREROUTING, hook::PREROUTING), (OUTPUT, hook::OUTPUT)] {
        let c = base_chain(fam, name, h, priority::DSTNAT);
        p.batch.add_chain(&c).flush_chain(&c);
        for exprs in lookup_rules(fam) {
            p.batch.add_rule(&Rule::new(&c, exprs, None));
        }
    }
    if let Some(bit) = bit {
        let setmark = Chain::regular(&t, &setmark_chain(bit));
        p.batch
            .add_chain(&setmark)
            .flush_chain(&setmark)
            .add_rule(&Rule::new(&setmark, setmark_rule(bit), None));
        let masq = base_chain(fam, &masq_chain(bit), hook::POSTROUTING, priority::SRCNAT);
        p.batch
            .add_chain(&masq)
            .flush_chain(&masq)
            .add_rule(&Rule::new(&masq, masq_rule(bit), None));
    }
    p.note(Role::Other);
}

/// The attachment chain's rules for the pod address `addr` (with its prefix): per mapping
/// of the family, the mark rules (hairpin, and node-local for IPv4) and the DNAT rule.
fn attachment_rules(fam: Family, req: &Request, addr: IpNetwork) -> Result<Vec<Rule>, Error> {
    let v6 = is_v6(fam);
    let chain = Chain::regular(&table(fam), &chain_name(req.att));
    let c = comment(req.att);
    let conditions = conditions::parse(req.conditions(v6), v6)?;
    let mut rules = Vec::new();
    let mut rule = |exprs: Vec<Expr>| rules.push(Rule::new(&chain, exprs, Some(c.clone())));
    for m in req.mappings_for(v6) {
        let mut base = conditions.clone();
        if let Some(ip) = m.host_addr() {
            let host = IpNetwork::from(ip);
            base.extend(matches::addr(fam, Dir::Dst, &host, CmpOp::Eq));
        }
        base.extend(matches::l4proto(m.protocol.number()));
        base.extend(matches::transport_port(Dir::Dst, m.host_port));
        let with = |extra: Vec<Expr>| [base.clone(), extra].concat();
        if let Some(bit) = mark_bit(req) {
            let setmark = matches::verdict(Verdict::Jump(setmark_chain(bit)));
            if req.opts.masq_all {
                rule(with(vec![setmark]));
            } else {
                let mut hairpin = matches::addr(fam, Dir::Src, &addr, CmpOp::Eq);
                hairpin.push(setmark.clone());
                rule(with(hairpin));
                if !v6 {
                    let localhost = IpNetwork::from(IpAddr::from([127, 0, 0, 1]));
                    let mut local = matches::addr(fam, Dir::Src, &localhost, CmpOp::Eq);
                    local.push(setmark);
                    rule(with(local));
                }
            }
        }
        rule(with(matches::dnat(addr.ip(), m.container_port)));
    }
    Ok(rules)
}

/// The keys the attachment claims in family `fam`, first mapping first (a repeated key is
/// claimed once).
fn wanted_keys(req: &Request, fam: Family) -> Vec<Key> {
    let mut seen = HashSet::new();
    req.mappings_for(is_v6(fam))
        .map(Key::of)
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

/// The families `req` installs something in, with the pod address: those with an address
/// and a mapping.
fn setup_families(req: &Request) -> BTreeMap<Family, IpNetwork> {
    FAMILIES
        .into_iter()
        .filter_map(|f| {
            let addr = req.addr(is_v6(f))?;
            req.mappings_for(is_v6(f)).next().map(|_| (f, addr))
        })
        .collect()
}

/// What one family's table holds of one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Own {
    /// Its chain exists.
    chain: bool,
    /// The keys whose elements point to it.
    keys: Vec<Key>,
}

/// Reads whether `chain` exists in the family's table (one GET) and, only then, the maps'
/// elements that point to it.
fn read_own(nl: &mut NfNetlink, fam: Family, chain: &str) -> Result<Own, Error> {
    if list::chain(nl, fam, TABLE, chain)?.is_none() {
        return Ok(Own::default());
    }
    let mut keys = Vec::new();
    for map in MAPS {
        for e in list::elements(nl, &SetRef::new(&table(fam), map))? {
            if target(&e) == Some(chain) {
                keys.push(Key { map, bytes: e.key });
            }
        }
    }
    Ok(Own { chain: true, keys })
}

/// Conditional removal of `key`'s element: only if it points to `chain`.
fn plan_release(p: &mut Plan, fam: Family, key: &Key, chain: &str) {
    let e = key.elem(chain);
    p.batch
        .add_elements(&key.set(fam), std::slice::from_ref(&e));
    p.note(Role::IfOurs(fam, key.clone()));
    p.batch.delete_elements(&key.set(fam), &[e]);
    p.note(Role::Other);
}

/// Everything of one attachment chain in one family: its elements (those still ours), its
/// rules, the chain.
fn plan_family_teardown(p: &mut Plan, fam: Family, own: &Own, chain: &str, retry: &Retry) {
    if !own.chain {
        return;
    }
    for k in &own.keys {
        if !retry.not_ours.contains(&(fam, k.clone())) {
            plan_release(p, fam, k, chain);
        }
    }
    let c = Chain::regular(&table(fam), chain);
    p.batch.flush_chain(&c).delete_chain(&c);
    p.note(Role::Other);
}

/// The ADD transaction, given what the attachment already has.
fn plan_setup(req: &Request, own: &BTreeMap<Family, Own>, retry: &Retry) -> Result<Plan, Error> {
    let name = chain_name(req.att);
    let families = setup_families(req);
    let mut p = Plan::default();
    for fam in FAMILIES {
        let o = own.get(&fam).cloned().unwrap_or_default();
        let Some(addr) = families.get(&fam) else {
            // An earlier ADD of this attachment may have mapped this family.
            plan_family_teardown(&mut p, fam, &o, &name, retry);
            continue;
        };
        if retry.skeleton {
            plan_skeleton(&mut p, fam, mark_bit(req));
        }
        let chain = Chain::regular(&table(fam), &name);
        p.batch.add_chain(&chain);
        if o.chain {
            p.batch.flush_chain(&chain);
        }
        for r in attachment_rules(fam, req, *addr)? {
            p.batch.add_rule(&r);
        }
        p.note(Role::Other);
        let want = wanted_keys(req, fam);
        for k in o.keys.iter().filter(|k| !want.contains(k)) {
            if !retry.not_ours.contains(&(fam, k.clone())) {
                plan_release(&mut p, fam, k, &name);
            }
        }
        for k in want {
            if retry.take_over.contains(&(fam, k.clone())) {
                p.batch.delete_elements(&k.set(fam), &[k.elem(&name)]);
                p.note(Role::TakeOver(fam, k.clone()));
            }
            p.batch.add_elements(&k.set(fam), &[k.elem(&name)]);
            p.note(Role::Claim(fam, k));
        }
    }
    Ok(p)
}

/// Which tables exist in the namespace (one table dump).
#[derive(Debug, Clone, Default)]
pub(crate) struct Present(HashSet<(Family, String)>);

impl Present {
    pub(crate) fn read(nl: &mut NfNetlink) -> Result<Present, Error> {
        Ok(Present(
            list::tables(nl)?
                .into_iter()
                .map(|t| (t.family, t.name))
                .collect(),
        ))
    }

    pub(crate) fn has(&self, fam: Family, name: &str) -> bool {
        self.0.contains(&(fam, name.to_string()))
    }

    /// The families whose iptables-nft `nat` table exists.
    pub(crate) fn nat_families(&self) -> Vec<Family> {
        FAMILIES.into_iter().filter(|f| self.has(*f, NAT)).collect()
    }
}

/// What the iptables backend left for one attachment in an iptables-nft `nat` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IptablesNft {
    family: Family,
    /// `CNI-DN-<hash>`.
    chain: String,
    /// Handles of the `CNI-HOSTPORT-DNAT` rules jumping to it.
    jumps: Vec<u64>,
}

/// Reads the attachment's `CNI-DN-` chain (a GET) and, only when it exists, the
/// `CNI-HOSTPORT-DNAT` rules that jump to it.
fn read_iptables_nft(
    nl: &mut NfNetlink,
    fam: Family,
    att: &Attachment,
) -> Result<Option<IptablesNft>, Error> {
    let chain = reference_dnat_chain(&att.network, &att.container_id);
    if list::chain(nl, fam, NAT, &chain)?.is_none() {
        return Ok(None);
    }
    let jumps = list::rules(nl, Some(fam), NAT, Some(super::DNAT_CHAIN))?
        .into_iter()
        .filter(|r| {
            r.exprs.iter().any(|e| {
                matches!(e, Expr::Immediate(i) if matches!(
                    &i.data,
                    Data::Verdict(Verdict::Jump(t) | Verdict::Goto(t)) if *t == chain
                ))
            })
        })
        .filter_map(|r| r.handle)
        .collect();
    Ok(Some(IptablesNft {
        family: fam,
        chain,
        jumps,
    }))
}

/// Teardown of `att`: our tables, the Go plugin's, and the iptables-nft `nat` tables of
/// `iptables_nft` (the iptables backend's rules, which iptables-nft keeps as nf_tables
/// chains and rules: deleted by handle in the same transaction, as `iptables-restore` would,
/// without a process). Reads only where something can be; nothing at all is sent when
/// nothing of the attachment exists.
pub(crate) fn teardown_in(
    nl: &mut NfNetlink,
    att: &Attachment,
    present: &Present,
    iptables_nft: &[Family],
) -> Result<(), Error> {
    let name = chain_name(att);
    let mut own = BTreeMap::new();
    for fam in FAMILIES.into_iter().filter(|f| present.has(*f, TABLE)) {
        own.insert(fam, read_own(nl, fam, &name)?);
    }
    let mut reference = Vec::new();
    for fam in FAMILIES
        .into_iter()
        .filter(|f| present.has(*f, REFERENCE_TABLE))
    {
        reference.extend(
            list::rules(nl, Some(fam), REFERENCE_TABLE, None)?
                .into_iter()
                .filter(|r| REFERENCE_CHAINS.contains(&r.chain.as_str()))
                .filter(|r| r.comment.as_deref() == Some(att.container_id.as_str())),
        );
    }
    let mut ipt = Vec::new();
    for fam in iptables_nft {
        ipt.extend(read_iptables_nft(nl, *fam, att)?);
    }
    commit_with_retries(nl, |retry| {
        Ok(plan_teardown(&name, &own, &reference, &ipt, retry))
    })
}

/// The DEL transaction: the attachment's chains and elements (`own`), the Go plugin's
/// rules (`reference`), the iptables backend's chains and jumps in iptables-nft (`ipt`).
fn plan_teardown(
    name: &str,
    own: &BTreeMap<Family, Own>,
    reference: &[Rule],
    ipt: &[IptablesNft],
    retry: &Retry,
) -> Plan {
    let mut p = Plan::default();
    for (fam, o) in own {
        plan_family_teardown(&mut p, *fam, o, name, retry);
    }
    for r in reference {
        if let Some(h) = r.handle {
            let t = Table::new(r.family, REFERENCE_TABLE);
            p.batch.delete_rule(&Chain::regular(&t, &r.chain), h);
        }
    }
    for found in ipt {
        let t = Table::new(found.family, NAT);
        for h in &found.jumps {
            p.batch
                .delete_rule(&Chain::regular(&t, super::DNAT_CHAIN), *h);
        }
        let c = Chain::regular(&t, &found.chain);
        p.batch.flush_chain(&c).delete_chain(&c);
    }
    p.note(Role::Other);
    p
}

/// `"<hash>, net: N, if: I, id: C"` → (N, I, C).
fn parse_comment(c: &str) -> Option<(String, String, String)> {
    let h = hash_of_comment(c)?;
    let rest = c.get(h.len()..)?.strip_prefix(", net: ")?;
    let (net, rest) = rest.split_once(", if: ")?;
    let (ifname, cid) = rest.split_once(", id: ")?;
    Some((net.into(), ifname.into(), cid.into()))
}

/// Whether `name` is an attachment chain (`a-<instance hash>`), of `network` if given.
fn is_attachment_chain(name: &str, network_prefix: Option<&str>) -> bool {
    name.strip_prefix(CHAIN_PREFIX).is_some_and(|h| {
        hash_of_comment(h) == Some(h) && network_prefix.is_none_or(|p| h.starts_with(p))
    })
}

/// The nftables backend.
#[derive(Debug, Default)]
pub struct Nftables {
    session: Mutex<Session>,
}

impl Nftables {
    /// The backend; its nfnetlink socket is opened on first use, in the network namespace
    /// of the thread using it, and closed when the backend is dropped.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_nl<T>(&self, f: impl FnOnce(&mut NfNetlink) -> Result<T, Error>) -> Result<T, Error> {
        Session::with_locked(&self.session, f)
    }

    /// Rules of `chain` in the family's table, without handles.
    fn rules_of(nl: &mut NfNetlink, fam: Family, chain: &str) -> Result<Vec<Rule>, Error> {
        Ok(list::rules(nl, Some(fam), TABLE, Some(chain))?
            .into_iter()
            .map(|r| Rule { handle: None, ..r })
            .collect())
    }

    fn check_family(
        nl: &mut NfNetlink,
        req: &Request,
        fam: Family,
        addr: IpNetwork,
    ) -> Result<(), Error> {
        let t = table(fam);
        let tname = format!("{fam} {TABLE}");
        let name = chain_name(req.att);
        let exprs = |rules: Vec<Rule>| rules.into_iter().map(|r| r.exprs).collect::<Vec<_>>();
        for base in [PREROUTING, OUTPUT] {
            if exprs(Self::rules_of(nl, fam, base)?) != lookup_rules(fam) {
                return Err(Error::Check(format!(
                    "chain {base} of table {tname} does not hold the host port lookups"
                )));
            }
        }
        if let Some(bit) = mark_bit(req) {
            for (c, want) in [
                (setmark_chain(bit), setmark_rule(bit)),
                (masq_chain(bit), masq_rule(bit)),
            ] {
                if exprs(Self::rules_of(nl, fam, &c)?) != [want] {
                    return Err(Error::Check(format!(
                        "chain {c} of table {tname} is missing or not ours"
                    )));
                }
            }
        }
        if list::chain(nl, fam, TABLE, &name)?.is_none() {
            return Err(Error::Check(format!(
                "chain {name} not found in table {tname}"
            )));
        }
        if Self::rules_of(nl, fam, &name)? != attachment_rules(fam, req, addr)? {
            return Err(Error::Check(format!(
                "missing or different hostport rules in chain {name} of table {tname}"
            )));
        }
        let mut elems = HashMap::new();
        for map in MAPS {
            for e in list::elements(nl, &SetRef::new(&t, map))? {
                let owner = target(&e).map(str::to_string);
                elems.insert(Key { map, bytes: e.key }, owner);
            }
        }
        for k in wanted_keys(req, fam) {
            match elems.get(&k) {
                Some(Some(owner)) if *owner == name => {}
                Some(owner) => {
                    return Err(Error::Check(format!(
                        "host port {} of table {tname} goes to {}, not {name}",
                        k.describe(),
                        owner.as_deref().unwrap_or("no chain")
                    )));
                }
                None => {
                    return Err(Error::Check(format!(
                        "host port {} missing in map {} of table {tname}",
                        k.describe(),
                        k.map
                    )));
                }
            }
        }
        Ok(())
    }
}

impl PortMapper for Nftables {
    fn setup(&self, req: &Request) -> Result<(), Error> {
        let name = chain_name(req.att);
        self.with_nl(|nl| {
            let mut own = BTreeMap::new();
            for fam in FAMILIES {
                own.insert(fam, read_own(nl, fam, &name)?);
            }
            commit_with_retries(nl, |retry| plan_setup(req, &own, retry))
        })
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        self.with_nl(|nl| {
            let present = Present::read(nl)?;
            for (fam, addr) in setup_families(req) {
                if !present.has(fam, TABLE) {
                    return Err(Error::Check(format!("table {fam} {TABLE} not found")));
                }
                Self::check_family(nl, req, fam, addr)?;
            }
            Ok(())
        })
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.with_nl(|nl| {
            let present = Present::read(nl)?;
            teardown_in(nl, att, &present, &[])
        })
    }

    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error> {
        let prefix = network_hash(network);
        let keep: HashSet<String> = valid
            .iter()
            .map(|a| {
                chain_name(&Attachment {
                    network: network.to_string(),
                    ..a.clone()
                })
            })
            .collect();
        self.with_nl(|nl| {
            let present = Present::read(nl)?;
            let mut doomed: Vec<(Family, String, Own)> = Vec::new();
            for fam in FAMILIES.into_iter().filter(|f| present.has(*f, TABLE)) {
                let chains: Vec<String> = list::chains(nl, Some(fam), TABLE)?
                    .into_iter()
                    .map(|c| c.name)
                    .filter(|c| is_attachment_chain(c, Some(&prefix)) && !keep.contains(c))
                    .collect();
                if chains.is_empty() {
                    continue;
                }
                let mut by_chain: HashMap<String, Vec<Key>> = HashMap::new();
                for map in MAPS {
                    for e in list::elements(nl, &SetRef::new(&table(fam), map))? {
                        if let Some(c) = target(&e) {
                            by_chain
                                .entry(c.to_string())
                                .or_default()
                                .push(Key { map, bytes: e.key });
                        }
                    }
                }
                for c in chains {
                    let keys = by_chain.remove(&c).unwrap_or_default();
                    doomed.push((fam, c, Own { chain: true, keys }));
                }
            }
            for chunk in doomed.chunks(GC_CHUNK) {
                commit_with_retries(nl, |retry| {
                    let mut p = Plan::default();
                    for (fam, chain, own) in chunk {
                        plan_family_teardown(&mut p, *fam, own, chain, retry);
                    }
                    Ok(p)
                })?;
            }
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<Listed>, Error> {
        self.with_nl(|nl| {
            let present = Present::read(nl)?;
            let mut out = Vec::new();
            for fam in FAMILIES {
                if present.has(fam, TABLE) {
                    let rules = list::rules(nl, Some(fam), TABLE, None)?;
                    for chain in list::chains(nl, Some(fam), TABLE)?
                        .into_iter()
                        .filter(|c| is_attachment_chain(&c.name, None))
                    {
                        let who = rules
                            .iter()
                            .filter(|r| r.chain == chain.name)
                            .find_map(|r| r.comment.as_deref().and_then(parse_comment));
                        let (network, ifname, cid) = match who {
                            Some((n, i, c)) => (Some(n), Some(i), Some(c)),
                            None => (None, None, None),
                        };
                        out.push(Listed {
                            backend: Backend::Nftables,
                            maker: Maker::Rcni,
                            v6: is_v6(fam),
                            chain: chain.name,
                            network,
                            container_id: cid,
                            ifname,
                        });
                    }
                }
                if present.has(fam, REFERENCE_TABLE) {
                    let mut seen = HashSet::new();
                    for r in list::rules(nl, Some(fam), REFERENCE_TABLE, None)? {
                        let Some(cid) = r.comment.clone() else {
                            continue;
                        };
                        if REFERENCE_CHAINS.contains(&r.chain.as_str()) && seen.insert(cid.clone())
                        {
                            out.push(Listed {
                                backend: Backend::Nftables,
                                maker: Maker::Reference,
                                v6: is_v6(fam),
                                chain: r.chain,
                                network: None,
                                container_id: Some(cid),
                                ifname: None,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests;
