//! nftables backend: nf_tables over netlink ([`crate::nftables`]), one transaction per
//! change, a fixed number of base chains whatever the pod count.
//!
//! Layout, per address family (tables `ip rcni_masquerade` and `ip6 rcni_masquerade`):
//!
//! ```text
//! table ip rcni_masquerade {
//!     map attachments {                        # source address -> that attachment's chain
//!         type ipv4_addr : verdict
//!         elements = { 10.244.1.5 : jump m-0123456789abcdef-fedcba9876543210 }
//!     }
//!     chain postrouting {                      # the only base chain
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr vmap @attachments
//!     }
//!     chain m-0123456789abcdef-fedcba9876543210 {   # one regular chain per attachment
//!         ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 ip daddr != 224.0.0.0/4 masquerade comment "<hash>, net: .., if: .., id: .."
//!     }
//! }
//! ```
//!
//! A connection's first packet costs one hash lookup whatever the pod count (nat chains
//! only see first packets). The per-attachment chain is named after the attachment's
//! instance hash, so an attachment's state is found by name: teardown needs no IPs.
//!
//! **Ownership of a map key.** A key (an address) can have one value only, while a stale
//! attachment and the address's new owner may both claim it (a DEL that never came, then
//! IPAM gave the address away). Every batch keeps this invariant: an element points to an
//! attachment's chain only if that chain holds a rule for the address. Removing an element
//! is written "add `ip : jump <my chain>`, then delete `ip`" in one transaction: when the
//! element points to another attachment's chain, the add fails with EEXIST (EBUSY before
//! Linux 5.x) and the whole transaction is refused, so an old owner's teardown can never
//! remove the new owner's element; we then retry without that address. Setup takes an
//! address over from a stale owner explicitly (delete + add), since IPAM gave it to us.
//!
//! **Kernel.** Only `ip`/`ip6` tables, verdict maps, regular chains and rule comments:
//! nothing newer than Linux 4.18, which registers nat chains with the nat core so they
//! coexist with iptables' nat table (`inet` nat chains would need 5.2). Dumps ask the
//! kernel to filter by table and chain and filter again here (older kernels ignore the
//! filters; the shared test switch `RCNI_TEST_KERNEL_FALLBACKS=1` forces that path).
//!
//! **Cleaned here too:** the previous rcni layout (table `inet rcni_masquerade`, one nat
//! *base* chain `a-<hash>` per attachment, which stopped at 1024 pods with E2BIG) and the
//! Go plugin's table `inet cni_plugins_masquerade` (rules in `masq_checks` carrying the
//! same comment hash).
//!
//! **Cost.** Setup: a few GETs (does the base layout exist, does this attachment have
//! rules) and one add-only transaction. Teardown: the same reads and one transaction that
//! deletes. Deleting anything makes the release of an nfnetlink socket in the namespace
//! wait for one RCU grace period under nf_tables' commit mutex (see [`Session`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnetwork::IpNetwork;
use netlink::NfNetlink;

use crate::naming::{comment, hash_of_comment, instance_hash, network_hash};
use crate::nftables::matches::{self, Dir};
use crate::nftables::{
    BaseChain, Batch, Chain, ChainType, CmpOp, Data, DataType, Elem, Expr, Family, Reg, Rule, Set,
    SetRef, Table, Verdict, hook, list, priority,
};
use crate::{Attachment, Error, Masquerade};

/// Our tables' name (families `ip` and `ip6`; `inet` is the previous layout).
pub const TABLE: &str = "rcni_masquerade";
/// The map from source address to attachment chain, in each of our tables.
pub const MAP: &str = "attachments";
/// The base chain of each of our tables.
pub const BASE_CHAIN: &str = "postrouting";
/// Prefix of our per-attachment regular chains (`m-` + instance hash).
pub const CHAIN_PREFIX: &str = "m-";
/// Prefix of the previous layout's per-attachment base chains in `inet rcni_masquerade`.
pub const OLD_CHAIN_PREFIX: &str = "a-";
/// The Go plugin's table (family `inet`), cleaned on teardown/GC.
pub const REFERENCE_TABLE: &str = "cni_plugins_masquerade";
/// The Go plugin's regular chain holding one rule per attachment IP.
pub const REFERENCE_CHAIN: &str = "masq_checks";
/// How many times a transaction is rebuilt after a refusal that a re-read explains (a
/// concurrent bootstrap, an address owned by someone else).
const ATTEMPTS: usize = 8;
/// Attachments per GC transaction (keeps each batch below the socket's send buffer).
const GC_CHUNK: usize = 200;

/// Our per-attachment chain for `att`: `m-<instance hash>`.
pub fn chain_name(att: &Attachment) -> String {
    format!("{CHAIN_PREFIX}{}", instance_hash(att))
}

/// The instance hash a chain named `<prefix><hash>` is named after.
fn hash_of_chain<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let h = name.strip_prefix(prefix)?;
    (hash_of_comment(h) == Some(h)).then_some(h)
}

const FAMILIES: [Family; 2] = [Family::Ip, Family::Ip6];

fn table(fam: Family) -> Table {
    Table::new(fam, TABLE)
}

fn map_ref(fam: Family) -> SetRef {
    SetRef::new(&table(fam), MAP)
}

fn is_v6(fam: Family) -> bool {
    fam == Family::Ip6
}

fn family_of(ip: &IpNetwork) -> Family {
    if ip.is_ipv6() {
        Family::Ip6
    } else {
        Family::Ip
    }
}

fn key_of(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_of_key(k: &[u8]) -> Option<IpAddr> {
    match k.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(k).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(k).ok()?)),
        _ => None,
    }
}

fn jump(chain: &str) -> Option<Data> {
    Some(Data::Verdict(Verdict::Jump(chain.to_string())))
}

/// The masquerade rule of `ip` (address with its subnet's prefix).
pub(crate) fn masq_exprs(ip: &IpNetwork) -> Vec<Expr> {
    let fam = family_of(ip);
    let host = IpNetwork::new(ip.ip(), if ip.is_ipv4() { 32 } else { 128 }).unwrap_or(*ip);
    let subnet = IpNetwork::new(ip.network(), ip.prefix()).unwrap_or(*ip);
    // 224.0.0.0/4 and ff00::/8: valid prefixes, the fallback is never taken.
    let multicast = if ip.is_ipv4() {
        IpNetwork::new(std::net::Ipv4Addr::new(224, 0, 0, 0).into(), 4)
    } else {
        IpNetwork::new(
            std::net::Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(),
            8,
        )
    }
    .unwrap_or(host);
    let mut e = matches::addr(fam, Dir::Src, &host, CmpOp::Eq);
    e.extend(matches::addr(fam, Dir::Dst, &subnet, CmpOp::Neq));
    e.extend(matches::addr(fam, Dir::Dst, &multicast, CmpOp::Neq));
    e.push(matches::masquerade());
    e
}

/// The source address a rule of ours matches (its first `saddr ==` comparison).
fn saddr_of(rule: &Rule) -> Option<IpAddr> {
    let (offset, len) = if rule.family == Family::Ip6 {
        (8, 16)
    } else {
        (12, 4)
    };
    rule.exprs.windows(2).find_map(|w| match (&w[0], &w[1]) {
        (Expr::Payload(p), Expr::Cmp(c))
            if p.offset == offset && p.len == len && c.op == CmpOp::Eq =>
        {
            ip_of_key(&c.data)
        }
        _ => None,
    })
}

/// An open nfnetlink socket for one plugin run.
///
/// Closing it is not free after a transaction that deleted something: the kernel's
/// release notifier takes the namespace's nf_tables commit mutex and waits for the
/// deferred destruction of deleted objects (one RCU grace period, ~10-30 ms), during which
/// no other transaction in the namespace can commit. Concurrent DELs each waiting a grace
/// period under that mutex is what serialized DEL bursts. Keep the session until the
/// plugin's other slow work (veth deletion, IPAM) is done: by then the grace period has
/// passed and closing is immediate.
#[derive(Debug, Default)]
pub struct Session {
    nl: Option<NfNetlink>,
}

impl Session {
    /// A session; the socket is opened on first use, in the netns of the thread using it.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the socket was opened.
    pub fn is_open(&self) -> bool {
        self.nl.is_some()
    }

    /// Runs `f` on the socket of a session shared behind a mutex (a backend's).
    pub(crate) fn with_locked<T>(
        session: &Mutex<Session>,
        f: impl FnOnce(&mut NfNetlink) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut s = session
            .lock()
            .map_err(|_| Error::netlink("nftables", netlink::Error::Protocol("poisoned".into())))?;
        f(s.nl()?)
    }

    pub(crate) fn nl(&mut self) -> Result<&mut NfNetlink, Error> {
        if self.nl.is_none() {
            self.nl =
                Some(NfNetlink::new().map_err(|e| Error::netlink("open nfnetlink socket", e))?);
        }
        self.nl.as_mut().ok_or_else(|| {
            Error::netlink(
                "open nfnetlink socket",
                netlink::Error::Protocol("no socket".into()),
            )
        })
    }
}

/// Which tables exist in the namespace (one table dump), so that cleanup runs only where
/// something can be left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tables {
    /// Our `ip` / `ip6` tables.
    pub ours: BTreeSet<Family>,
    /// The previous layout's `inet rcni_masquerade`.
    pub old: bool,
    /// The Go plugin's `inet cni_plugins_masquerade`.
    pub reference: bool,
    /// iptables-nft's `ip nat` / `ip6 nat`.
    pub ip_nat: bool,
    pub ip6_nat: bool,
}

impl Tables {
    pub(crate) fn read(nl: &mut NfNetlink) -> Result<Tables, Error> {
        let mut t = Tables::default();
        for table in list::tables(nl)? {
            match (table.family, table.name.as_str()) {
                (Family::Ip | Family::Ip6, TABLE) => {
                    t.ours.insert(table.family);
                }
                (Family::Inet, TABLE) => t.old = true,
                (Family::Inet, REFERENCE_TABLE) => t.reference = true,
                (Family::Ip, "nat") => t.ip_nat = true,
                (Family::Ip6, "nat") => t.ip6_nat = true,
                _ => {}
            }
        }
        Ok(t)
    }
}

/// What one family's table holds for one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FamilyState {
    /// The table's base chain exists (the table, map and lookup rule with it).
    pub base: bool,
    /// The attachment's chain exists.
    pub chain: bool,
    /// The attachment chain's rules.
    pub rules: Vec<Rule>,
}

/// What exists for one attachment, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AttState {
    pub families: HashMap<Family, FamilyState>,
}

impl AttState {
    fn get(&self, fam: Family) -> FamilyState {
        self.families.get(&fam).cloned().unwrap_or_default()
    }

    /// Reads the base layout and the attachment's chain in both families (GETs, and a
    /// rule dump of the attachment's chain only when it exists).
    pub(crate) fn read(nl: &mut NfNetlink, att: &Attachment) -> Result<AttState, Error> {
        let name = chain_name(att);
        let mut st = AttState::default();
        for fam in FAMILIES {
            let base = list::chain(nl, fam, TABLE, BASE_CHAIN)?.is_some();
            let chain = base && list::chain(nl, fam, TABLE, &name)?.is_some();
            let rules = if chain {
                list::rules(nl, Some(fam), TABLE, Some(&name))?
            } else {
                Vec::new()
            };
            st.families.insert(fam, FamilyState { base, chain, rules });
        }
        Ok(st)
    }
}

/// The role of a message in a planned transaction, to interpret a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Creating the table's base layout (EEXIST: someone else just did).
    Bootstrap(Family),
    /// Pointing `ip` at our chain (EEXIST/EBUSY: another attachment owns it).
    Claim(Family, IpAddr),
    /// Deleting `ip` before claiming it from a stale owner (ENOENT: it left meanwhile).
    TakeOver(Family, IpAddr),
    /// The "add" half of a conditional delete (EEXIST/EBUSY: not ours any more).
    IfOurs(Family, IpAddr),
    /// Anything else.
    Other,
}

/// A transaction and the role of each of its messages.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub batch: Batch,
    pub roles: Vec<Role>,
}

impl Plan {
    fn note(&mut self, role: Role) {
        while self.roles.len() < self.batch.len() {
            self.roles.push(role.clone());
        }
    }
}

/// Decisions carried from one attempt to the next.
#[derive(Debug, Default, Clone)]
pub(crate) struct Retry {
    /// Addresses to take over from another attachment.
    pub take_over: HashSet<(Family, IpAddr)>,
    /// Addresses that are no longer ours to delete.
    pub not_ours: HashSet<(Family, IpAddr)>,
}

impl Retry {
    /// Learns from a refusal; false when the refusal is not one a retry can fix.
    fn learn(&mut self, plan: &Plan, st: &mut AttState, err: &Error) -> bool {
        let refused = err.refused();
        if refused.is_empty() {
            return false;
        }
        refused.iter().all(|r| {
            let role = r.index.and_then(|i| plan.roles.get(i));
            let clash = matches!(r.errno, libc::EEXIST | libc::EBUSY);
            match role {
                Some(Role::Bootstrap(f)) if r.errno == libc::EEXIST => {
                    st.families.entry(*f).or_default().base = true;
                    true
                }
                Some(Role::Claim(f, ip)) if clash => self.take_over.insert((*f, *ip)),
                Some(Role::TakeOver(f, ip)) if r.errno == libc::ENOENT => {
                    self.take_over.remove(&(*f, *ip))
                }
                Some(Role::IfOurs(f, ip)) if clash => self.not_ours.insert((*f, *ip)),
                _ => false,
            }
        })
    }
}

/// The table's base layout: table, map, base chain and its lookup rule (the chain with
/// EXCL, so a concurrent bootstrap cannot add the lookup rule twice).
fn plan_bootstrap(p: &mut Plan, fam: Family) {
    let t = table(fam);
    let key = if is_v6(fam) {
        DataType::IPV6_ADDR
    } else {
        DataType::IPV4_ADDR
    };
    let base = Chain::base(
        &t,
        BASE_CHAIN,
        BaseChain {
            kind: ChainType::Nat,
            hook: hook::POSTROUTING,
            priority: priority::SRCNAT,
            accept: Some(true),
        },
    );
    p.batch
        .add_table(&t)
        .add_set(&Set::new(&t, MAP, key, Some(DataType::VERDICT)))
        .create_chain(&base)
        .add_rule(&Rule::new(
            &base,
            matches::addr_lookup(fam, Dir::Src, is_v6(fam), MAP, Some(Reg::VERDICT)),
            None,
        ));
    p.note(Role::Bootstrap(fam));
}

/// Conditional removal of `ip`'s element: only if it points to `chain`.
fn plan_release(p: &mut Plan, fam: Family, ip: IpAddr, chain: &str) {
    let e = Elem {
        key: key_of(ip),
        data: jump(chain),
    };
    p.batch
        .add_elements(&map_ref(fam), std::slice::from_ref(&e));
    p.note(Role::IfOurs(fam, ip));
    p.batch.delete_elements(&map_ref(fam), &[e]);
    p.note(Role::Other);
}

/// Everything of the attachment in one family: its elements (if still ours), its rules,
/// its chain.
fn plan_family_teardown(p: &mut Plan, fam: Family, st: &FamilyState, chain: &str, retry: &Retry) {
    if !st.chain {
        return;
    }
    let ips: BTreeSet<IpAddr> = st.rules.iter().filter_map(saddr_of).collect();
    for ip in ips {
        if !retry.not_ours.contains(&(fam, ip)) {
            plan_release(p, fam, ip, chain);
        }
    }
    let c = Chain::regular(&table(fam), chain);
    p.batch.flush_chain(&c).delete_chain(&c);
    p.note(Role::Other);
}

/// The setup transaction for `ips` given what exists.
pub(crate) fn plan_setup(
    att: &Attachment,
    ips: &[IpNetwork],
    st: &AttState,
    retry: &Retry,
) -> Plan {
    let name = chain_name(att);
    let c = comment(att);
    let mut p = Plan::default();
    let mut seen = HashSet::new();
    let ips: Vec<IpNetwork> = ips.iter().copied().filter(|ip| seen.insert(*ip)).collect();
    for fam in FAMILIES {
        let fs = st.get(fam);
        let mine: Vec<&IpNetwork> = ips.iter().filter(|ip| family_of(ip) == fam).collect();
        if mine.is_empty() {
            // An earlier setup of this attachment may have had this family.
            plan_family_teardown(&mut p, fam, &fs, &name, retry);
            continue;
        }
        if !fs.base {
            plan_bootstrap(&mut p, fam);
        }
        let chain = Chain::regular(&table(fam), &name);
        let want: Vec<Rule> = mine
            .iter()
            .map(|ip| Rule::new(&chain, masq_exprs(ip), Some(c.clone())))
            .collect();
        let have: Vec<Rule> = fs
            .rules
            .iter()
            .map(|r| Rule {
                handle: None,
                ..r.clone()
            })
            .collect();
        if !(fs.chain && have == want) {
            p.batch.add_chain(&chain);
            if fs.chain && !fs.rules.is_empty() {
                p.batch.flush_chain(&chain);
            }
            p.note(Role::Other);
            // Addresses this attachment had and no longer has.
            let now: HashSet<IpAddr> = mine.iter().map(|ip| ip.ip()).collect();
            let before: BTreeSet<IpAddr> = fs.rules.iter().filter_map(saddr_of).collect();
            for ip in before.into_iter().filter(|ip| !now.contains(ip)) {
                if !retry.not_ours.contains(&(fam, ip)) {
                    plan_release(&mut p, fam, ip, &name);
                }
            }
            for r in &want {
                p.batch.add_rule(r);
            }
            p.note(Role::Other);
        }
        for ip in &mine {
            let ip = ip.ip();
            let e = Elem {
                key: key_of(ip),
                data: jump(&name),
            };
            if retry.take_over.contains(&(fam, ip)) {
                p.batch
                    .delete_elements(&map_ref(fam), std::slice::from_ref(&e));
                p.note(Role::TakeOver(fam, ip));
            }
            p.batch.add_elements(&map_ref(fam), &[e]);
            p.note(Role::Claim(fam, ip));
        }
    }
    p
}

/// Chains of the previous layout (`inet rcni_masquerade`) and what to do with them.
#[derive(Debug, Clone, Default)]
pub(crate) struct OldLayout {
    pub chains: Vec<String>,
    pub rules: Vec<Rule>,
}

impl OldLayout {
    /// The previous layout's table, read whole (empty when it does not exist).
    fn read(nl: &mut NfNetlink, tables: &Tables) -> Result<OldLayout, Error> {
        if !tables.old {
            return Ok(OldLayout::default());
        }
        Ok(OldLayout {
            chains: list::chains(nl, Some(Family::Inet), TABLE)?
                .into_iter()
                .map(|c| c.name)
                .collect(),
            rules: list::rules(nl, Some(Family::Inet), TABLE, None)?,
        })
    }
}

/// The Go plugin's per-pod rules (chain `masq_checks` of `inet cni_plugins_masquerade`).
fn read_reference(nl: &mut NfNetlink, tables: &Tables) -> Result<Vec<Rule>, Error> {
    if !tables.reference {
        return Ok(Vec::new());
    }
    list::rules(
        nl,
        Some(Family::Inet),
        REFERENCE_TABLE,
        Some(REFERENCE_CHAIN),
    )
}

/// Deletes `doomed` old-layout chains and rules; the whole table when nothing of anyone
/// else would be left in it.
fn plan_old_cleanup(p: &mut Plan, old: &OldLayout, doomed: &impl Fn(&str) -> bool) {
    let t = Table::new(Family::Inet, TABLE);
    let gone: HashSet<&str> = old
        .chains
        .iter()
        .filter(|c| hash_of_chain(c, OLD_CHAIN_PREFIX).is_some_and(doomed))
        .map(String::as_str)
        .collect();
    let rule_doomed = |r: &Rule| {
        !gone.contains(r.chain.as_str())
            && r.comment
                .as_deref()
                .and_then(hash_of_comment)
                .is_some_and(doomed)
    };
    // A chain is emptied when it goes, or when it is not an attachment chain and all its
    // rules go (the pre-release layout's `masq_checks`).
    let emptied = |c: &str| {
        gone.contains(c)
            || (!c.starts_with(OLD_CHAIN_PREFIX)
                && old.rules.iter().filter(|r| r.chain == c).all(rule_doomed))
    };
    if old.chains.iter().all(|c| emptied(c)) {
        p.batch.delete_table(&t);
        p.note(Role::Other);
        return;
    }
    for c in &gone {
        let c = Chain::regular(&t, c);
        p.batch.flush_chain(&c).delete_chain(&c);
    }
    for r in old.rules.iter().filter(|r| rule_doomed(r)) {
        if let Some(h) = r.handle {
            p.batch.delete_rule(&Chain::regular(&t, &r.chain), h);
        }
    }
    p.note(Role::Other);
}

/// Deletes the Go table's rules whose comment hash is doomed.
fn plan_reference_cleanup(p: &mut Plan, rules: &[Rule], doomed: &impl Fn(&str) -> bool) {
    let t = Table::new(Family::Inet, REFERENCE_TABLE);
    for r in rules {
        if let (Some(h), true) = (
            r.handle,
            r.comment
                .as_deref()
                .and_then(hash_of_comment)
                .is_some_and(doomed),
        ) {
            p.batch.delete_rule(&Chain::regular(&t, &r.chain), h);
        }
    }
    p.note(Role::Other);
}

/// Commits plans built by `plan` until one is accepted or a refusal cannot be explained.
fn commit_with_retries(
    nl: &mut NfNetlink,
    st: &mut AttState,
    mut plan: impl FnMut(&AttState, &Retry) -> Plan,
) -> Result<(), Error> {
    let mut retry = Retry::default();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let p = plan(st, &retry);
        match p.batch.commit(nl) {
            Ok(()) => return Ok(()),
            Err(e) if retry.learn(&p, st, &e) => {
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

/// The nftables backend.
#[derive(Debug, Default)]
pub struct Nftables {
    session: Mutex<Session>,
    /// State read by [`Masquerade::prefetch`] for the attachment it names.
    prefetched: Mutex<Option<(Attachment, AttState)>>,
}

impl Nftables {
    /// The backend; its socket is opened on first use, in the netns of that thread.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_nl<T>(&self, f: impl FnOnce(&mut NfNetlink) -> Result<T, Error>) -> Result<T, Error> {
        Session::with_locked(&self.session, f)
    }
}

/// Teardown of `att` in our tables, the previous layout and the Go table, knowing which
/// tables exist: reads only where something can be, one transaction, nothing at all when
/// nothing exists.
///
/// `iptables_nft` lists the families whose iptables-nft nat table (`ip nat`, `ip6 nat`) is
/// cleaned here too: this attachment's `RCNI-` chain and the reference's `CNI-` chain,
/// with the `POSTROUTING` rules jumping to them, deleted by handle in the same
/// transaction. iptables-nft keeps no state of its own, so this is what
/// `iptables-restore` would do, without a process (and without its socket's close, which
/// in a DEL burst waits for a grace period under the commit mutex like ours).
pub(crate) fn teardown_in(
    nl: &mut NfNetlink,
    att: &Attachment,
    tables: &Tables,
    iptables_nft: &[Family],
) -> Result<(), Error> {
    let mut ipt = Vec::new();
    for fam in iptables_nft.iter().copied() {
        if let Some(found) = read_iptables_nft(nl, fam, att)? {
            ipt.push(found);
        }
    }
    let name = chain_name(att);
    let hash = instance_hash(att);
    let mut st = AttState::default();
    for fam in tables.ours.iter().copied() {
        let chain = list::chain(nl, fam, TABLE, &name)?.is_some();
        let rules = if chain {
            list::rules(nl, Some(fam), TABLE, Some(&name))?
        } else {
            Vec::new()
        };
        st.families.insert(
            fam,
            FamilyState {
                base: true,
                chain,
                rules,
            },
        );
    }
    // The previous layout matters only when it holds this attachment's chain.
    let old = Some(OldLayout::read(nl, tables)?)
        .filter(|o| o.chains.contains(&format!("{OLD_CHAIN_PREFIX}{hash}")));
    let reference = read_reference(nl, tables)?;
    let doomed = |h: &str| h == hash;
    commit_with_retries(nl, &mut st, |st, retry| {
        let mut p = Plan::default();
        for fam in FAMILIES {
            plan_family_teardown(&mut p, fam, &st.get(fam), &name, retry);
        }
        if let Some(old) = &old {
            plan_old_cleanup(&mut p, old, &doomed);
        }
        plan_reference_cleanup(&mut p, &reference, &doomed);
        for found in &ipt {
            plan_iptables_nft(&mut p, found);
        }
        p
    })
}

/// What iptables-nft holds for one attachment in one family's `nat` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IptablesNft {
    family: Family,
    /// This attachment's chains that exist (`RCNI-...`, the reference's `CNI-...`).
    chains: Vec<String>,
    /// Handles of the `POSTROUTING` rules that jump to them.
    jumps: Vec<u64>,
}

/// Reads the attachment's iptables-nft chains (two GETs) and, only when one exists, the
/// `POSTROUTING` rules jumping to them.
fn read_iptables_nft(
    nl: &mut NfNetlink,
    fam: Family,
    att: &Attachment,
) -> Result<Option<IptablesNft>, Error> {
    let mut chains = Vec::new();
    for c in [
        crate::naming::iptables_chain(att),
        crate::naming::reference_chain(&att.network, &att.container_id),
    ] {
        if list::chain(nl, fam, "nat", &c)?.is_some() {
            chains.push(c);
        }
    }
    if chains.is_empty() {
        return Ok(None);
    }
    let jumps = list::rules(nl, Some(fam), "nat", Some("POSTROUTING"))?
        .into_iter()
        .filter(|r| {
            r.exprs.iter().any(|e| match e {
                Expr::Immediate(i) => matches!(
                    &i.data,
                    Data::Verdict(Verdict::Jump(t) | Verdict::Goto(t)) if chains.contains(t)
                ),
                _ => false,
            })
        })
        .filter_map(|r| r.handle)
        .collect();
    Ok(Some(IptablesNft {
        family: fam,
        chains,
        jumps,
    }))
}

/// Deletes the jumps, then the chains (whatever rules they hold).
fn plan_iptables_nft(p: &mut Plan, found: &IptablesNft) {
    let t = Table::new(found.family, "nat");
    for h in &found.jumps {
        p.batch.delete_rule(&Chain::regular(&t, "POSTROUTING"), *h);
    }
    for c in &found.chains {
        let c = Chain::regular(&t, c);
        p.batch.flush_chain(&c).delete_chain(&c);
    }
    p.note(Role::Other);
}

/// One attachment found in the rules (see [`Masquerade::attachments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What identifies it: the instance hash ([`crate::naming::instance_hash`]), or for the
    /// Go plugin's iptables chains the chain name ([`crate::naming::reference_chain`]).
    pub key: String,
    /// The comment of one of its rules (names network, ifname and container ID).
    pub comment: Option<String>,
    /// The addresses its rules masquerade.
    pub ips: Vec<IpAddr>,
    /// Where it was found: `nftables`, `nftables (previous layout)`,
    /// `nftables (reference plugin)`, `iptables`, `iptables (reference plugin)`.
    pub layout: &'static str,
}

/// One of our tables, read whole.
struct FamilySnapshot {
    family: Family,
    chains: Vec<String>,
    rules: Vec<Rule>,
    elems: Vec<Elem>,
}

/// Everything of ours in the namespace, read once for GC and listings.
struct Snapshot {
    tables: Tables,
    ours: Vec<FamilySnapshot>,
    old: OldLayout,
    reference: Vec<Rule>,
}

impl Snapshot {
    fn read(nl: &mut NfNetlink) -> Result<Snapshot, Error> {
        let tables = Tables::read(nl)?;
        let mut ours = Vec::new();
        for fam in tables.ours.iter().copied() {
            let chains = list::chains(nl, Some(fam), TABLE)?
                .into_iter()
                .map(|c| c.name)
                .collect();
            let rules = list::rules(nl, Some(fam), TABLE, None)?;
            let elems = list::elements(nl, &map_ref(fam))?;
            ours.push(FamilySnapshot {
                family: fam,
                chains,
                rules,
                elems,
            });
        }
        let old = OldLayout::read(nl, &tables)?;
        let reference = read_reference(nl, &tables)?;
        Ok(Snapshot {
            tables,
            ours,
            old,
            reference,
        })
    }

    fn listed(&self) -> Vec<Listed> {
        let mut by_hash: HashMap<(String, &'static str), Listed> = HashMap::new();
        let mut add = |hash: &str, layout: &'static str, r: Option<&Rule>| {
            let l = by_hash
                .entry((hash.to_string(), layout))
                .or_insert_with(|| Listed {
                    key: hash.to_string(),
                    comment: None,
                    ips: Vec::new(),
                    layout,
                });
            if let Some(r) = r {
                if l.comment.is_none() {
                    l.comment = r.comment.clone();
                }
                if let Some(ip) = saddr_of(r) {
                    l.ips.push(ip);
                }
            }
        };
        for FamilySnapshot { chains, rules, .. } in &self.ours {
            for c in chains {
                if let Some(h) = hash_of_chain(c, CHAIN_PREFIX) {
                    add(h, "nftables", None);
                }
            }
            for r in rules {
                if let Some(h) = hash_of_chain(&r.chain, CHAIN_PREFIX) {
                    add(h, "nftables", Some(r));
                }
            }
        }
        for c in &self.old.chains {
            if let Some(h) = hash_of_chain(c, OLD_CHAIN_PREFIX) {
                add(h, "nftables (previous layout)", None);
            }
        }
        for r in &self.old.rules {
            let h = hash_of_chain(&r.chain, OLD_CHAIN_PREFIX)
                .or_else(|| r.comment.as_deref().and_then(hash_of_comment));
            if let Some(h) = h {
                add(h, "nftables (previous layout)", Some(r));
            }
        }
        for r in &self.reference {
            if let Some(h) = r.comment.as_deref().and_then(hash_of_comment) {
                add(h, "nftables (reference plugin)", Some(r));
            }
        }
        let mut out: Vec<Listed> = by_hash.into_values().collect();
        out.sort_by(|a, b| (&a.key, a.layout).cmp(&(&b.key, b.layout)));
        out
    }
}

/// The GC transactions: each chunk of doomed attachments in its own transaction.
fn plan_gc(snap: &Snapshot, doomed: &impl Fn(&str) -> bool, retry: &Retry) -> Vec<Plan> {
    let mut plans = Vec::new();
    for FamilySnapshot {
        family: fam,
        chains,
        elems,
        ..
    } in &snap.ours
    {
        let gone: Vec<&String> = chains
            .iter()
            .filter(|c| hash_of_chain(c, CHAIN_PREFIX).is_some_and(doomed))
            .collect();
        for chunk in gone.chunks(GC_CHUNK) {
            let mut p = Plan::default();
            let set: HashSet<&str> = chunk.iter().map(|c| c.as_str()).collect();
            for e in elems {
                let (Some(Data::Verdict(Verdict::Jump(target))), Some(ip)) =
                    (&e.data, ip_of_key(&e.key))
                else {
                    continue;
                };
                if set.contains(target.as_str()) && !retry.not_ours.contains(&(*fam, ip)) {
                    plan_release(&mut p, *fam, ip, target);
                }
            }
            for c in chunk {
                let c = Chain::regular(&table(*fam), c);
                p.batch.flush_chain(&c).delete_chain(&c);
            }
            p.note(Role::Other);
            plans.push(p);
        }
    }
    let mut p = Plan::default();
    if snap.tables.old {
        plan_old_cleanup(&mut p, &snap.old, doomed);
    }
    plan_reference_cleanup(&mut p, &snap.reference, doomed);
    if !p.batch.is_empty() {
        plans.push(p);
    }
    plans
}

impl Masquerade for Nftables {
    /// Reads what exists for the attachment (a few GETs) so that setup only commits.
    fn prefetch(&self, att: &Attachment) -> Result<(), Error> {
        let st = self.with_nl(|nl| AttState::read(nl, att))?;
        if let Ok(mut p) = self.prefetched.lock() {
            *p = Some((att.clone(), st));
        }
        Ok(())
    }

    /// One add-only transaction for a new attachment (plus the table's base layout the
    /// first time); a re-setup replaces the attachment's rules and releases addresses it
    /// no longer has.
    fn setup(&self, att: &Attachment, ips: &[IpNetwork]) -> Result<(), Error> {
        let pre = self
            .prefetched
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .filter(|(a, _)| a == att)
            .map(|(_, st)| st);
        self.with_nl(|nl| {
            let mut st = match pre {
                Some(st) => st,
                None => AttState::read(nl, att)?,
            };
            commit_with_retries(nl, &mut st, |st, retry| plan_setup(att, ips, st, retry))
        })
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.with_nl(|nl| {
            let tables = Tables::read(nl)?;
            teardown_in(nl, att, &tables, &[])
        })
    }

    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error> {
        let prefix = format!("{}-", network_hash(network));
        let keep: HashSet<String> = valid
            .iter()
            .map(|a| {
                instance_hash(&Attachment {
                    network: network.to_string(),
                    ..a.clone()
                })
            })
            .collect();
        let doomed = |h: &str| h.starts_with(&prefix) && !keep.contains(h);
        self.with_nl(|nl| {
            let snap = Snapshot::read(nl)?;
            let mut errors = Vec::new();
            let mut retry = Retry::default();
            let mut plans = plan_gc(&snap, &doomed, &retry);
            let mut attempts = 0;
            while let Some(p) = plans.pop() {
                match p.batch.commit(nl) {
                    Ok(()) => {}
                    Err(e) => {
                        let mut st = AttState::default();
                        attempts += 1;
                        if attempts < ATTEMPTS && retry.learn(&p, &mut st, &e) {
                            // Rebuild everything from a fresh read: cheap, and GC is rare.
                            let snap = Snapshot::read(nl)?;
                            plans = plan_gc(&snap, &doomed, &retry);
                        } else {
                            errors.push(e);
                        }
                    }
                }
            }
            Error::collect(errors)
        })
    }

    fn attachments(&self, network: &str) -> Result<Vec<Listed>, Error> {
        let prefix = format!("{}-", network_hash(network));
        self.with_nl(|nl| {
            let snap = Snapshot::read(nl)?;
            Ok(snap
                .listed()
                .into_iter()
                .filter(|l| l.key.starts_with(&prefix))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(c: &str) -> Attachment {
        Attachment {
            network: "mynet".into(),
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    fn ips(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn state(fam: Family, base: bool, rules_for: Option<(&Attachment, &[&str])>) -> AttState {
        let mut st = AttState::default();
        let rules = rules_for
            .map(|(a, list)| {
                let chain = Chain::regular(&table(fam), &chain_name(a));
                ips(list)
                    .iter()
                    .map(|ip| Rule {
                        handle: Some(7),
                        ..Rule::new(&chain, masq_exprs(ip), Some(comment(a)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        st.families.insert(
            fam,
            FamilyState {
                base,
                chain: rules_for.is_some(),
                rules,
            },
        );
        st
    }

    /// Descriptions with the attachment's chain name shortened to `m-A`.
    fn said(p: &Plan, a: &Attachment) -> Vec<String> {
        let name = chain_name(a);
        let c = comment(a);
        p.batch
            .descriptions()
            .iter()
            .map(|d| d.replace(&name, "m-A").replace(&c, "C"))
            .collect()
    }

    #[test]
    fn first_setup_bootstraps_the_table_then_adds_only() {
        let a = att("c1");
        let p = plan_setup(
            &a,
            &ips(&["10.244.1.5/24"]),
            &AttState::default(),
            &Retry::default(),
        );
        assert_eq!(
            said(&p, &a),
            [
                "add table ip rcni_masquerade",
                "add map ip rcni_masquerade attachments",
                "create chain ip rcni_masquerade postrouting { type Nat hook 4 priority 100; }",
                "add rule ip rcni_masquerade postrouting",
                "add chain ip rcni_masquerade m-A",
                "add rule ip rcni_masquerade m-A comment \"C\"",
                "add element ip rcni_masquerade attachments { 10.244.1.5 : jump m-A }",
            ]
        );
        assert_eq!(p.roles.len(), p.batch.len());
        assert_eq!(p.roles[0], Role::Bootstrap(Family::Ip));
        assert_eq!(
            p.roles[6],
            Role::Claim(Family::Ip, "10.244.1.5".parse().unwrap())
        );
        // The table exists: nothing but adds, in one family.
        let p = plan_setup(
            &a,
            &ips(&["10.244.1.5/24"]),
            &state(Family::Ip, true, None),
            &Retry::default(),
        );
        assert_eq!(p.batch.len(), 3, "{:?}", p.batch);
        assert!(said(&p, &a).iter().all(|d| d.starts_with("add ")));
    }

    #[test]
    fn repeated_setup_with_the_same_address_only_claims_it() {
        let a = att("c1");
        let st = state(Family::Ip, true, Some((&a, &["10.244.1.5/24"])));
        let p = plan_setup(&a, &ips(&["10.244.1.5/24"]), &st, &Retry::default());
        assert_eq!(
            said(&p, &a),
            ["add element ip rcni_masquerade attachments { 10.244.1.5 : jump m-A }"]
        );
    }

    #[test]
    fn setup_with_another_address_releases_the_old_one_if_still_ours() {
        let a = att("c1");
        let st = state(Family::Ip, true, Some((&a, &["10.244.1.4/24"])));
        let p = plan_setup(&a, &ips(&["10.244.1.5/24"]), &st, &Retry::default());
        assert_eq!(
            said(&p, &a),
            [
                "add chain ip rcni_masquerade m-A",
                "flush chain ip rcni_masquerade m-A",
                "add element ip rcni_masquerade attachments { 10.244.1.4 : jump m-A }",
                "delete element ip rcni_masquerade attachments { 10.244.1.4 : jump m-A }",
                "add rule ip rcni_masquerade m-A comment \"C\"",
                "add element ip rcni_masquerade attachments { 10.244.1.5 : jump m-A }",
            ]
        );
        let old: IpAddr = "10.244.1.4".parse().unwrap();
        assert_eq!(p.roles[2], Role::IfOurs(Family::Ip, old));
        // Refused because another attachment owns .4 now: the retry leaves it alone.
        let mut retry = Retry::default();
        let mut st2 = st.clone();
        let refusal = Error::Refused(vec![crate::Refused {
            index: Some(2),
            what: String::new(),
            errno: libc::EEXIST,
            detail: None,
        }]);
        assert!(retry.learn(&p, &mut st2, &refusal));
        let p = plan_setup(&a, &ips(&["10.244.1.5/24"]), &st, &retry);
        assert!(!said(&p, &a).iter().any(|d| d.contains("10.244.1.4")));
    }

    #[test]
    fn a_claimed_address_owned_by_a_stale_attachment_is_taken_over() {
        let a = att("c1");
        let st = state(Family::Ip, true, None);
        let p = plan_setup(&a, &ips(&["10.244.1.5/24"]), &st, &Retry::default());
        let claim = p.batch.len() - 1;
        let mut retry = Retry::default();
        let mut st2 = st.clone();
        let clash = |i, errno| {
            Error::Refused(vec![crate::Refused {
                index: Some(i),
                what: String::new(),
                errno,
                detail: None,
            }])
        };
        assert!(retry.learn(&p, &mut st2, &clash(claim, libc::EBUSY)));
        let p = plan_setup(&a, &ips(&["10.244.1.5/24"]), &st, &retry);
        let d = said(&p, &a);
        assert_eq!(
            &d[d.len() - 2..],
            [
                "delete element ip rcni_masquerade attachments { 10.244.1.5 : jump m-A }",
                "add element ip rcni_masquerade attachments { 10.244.1.5 : jump m-A }",
            ]
        );
        // The stale owner left meanwhile (ENOENT on the delete): back to a plain claim.
        assert!(retry.learn(&p, &mut st2, &clash(d.len() - 2, libc::ENOENT)));
        assert!(retry.take_over.is_empty());
        // Errors a retry cannot fix are not retried.
        assert!(!retry.learn(&p, &mut st2, &clash(0, libc::EPERM)));
        assert!(!Retry::default().learn(&p, &mut st2, &Error::Multiple(vec![])));
    }

    #[test]
    fn concurrent_bootstrap_is_retried_without_it() {
        let a = att("c1");
        let p = plan_setup(
            &a,
            &ips(&["fd00::5/64"]),
            &AttState::default(),
            &Retry::default(),
        );
        let mut st = AttState::default();
        let e = Error::Refused(vec![crate::Refused {
            index: Some(2),
            what: String::new(),
            errno: libc::EEXIST,
            detail: None,
        }]);
        assert!(Retry::default().learn(&p, &mut st, &e));
        assert!(st.get(Family::Ip6).base);
        let p = plan_setup(&a, &ips(&["fd00::5/64"]), &st, &Retry::default());
        assert!(said(&p, &a)[0].starts_with("add chain ip6 rcni_masquerade m-A"));
    }

    #[test]
    fn teardown_releases_its_addresses_then_deletes_its_chain() {
        let a = att("c1");
        let st = state(Family::Ip6, true, Some((&a, &["fd00::5/64", "fd00::6/64"])));
        let mut p = Plan::default();
        plan_family_teardown(
            &mut p,
            Family::Ip6,
            &st.get(Family::Ip6),
            &chain_name(&a),
            &Retry::default(),
        );
        assert_eq!(
            said(&p, &a),
            [
                "add element ip6 rcni_masquerade attachments { fd00::5 : jump m-A }",
                "delete element ip6 rcni_masquerade attachments { fd00::5 : jump m-A }",
                "add element ip6 rcni_masquerade attachments { fd00::6 : jump m-A }",
                "delete element ip6 rcni_masquerade attachments { fd00::6 : jump m-A }",
                "flush chain ip6 rcni_masquerade m-A",
                "delete chain ip6 rcni_masquerade m-A",
            ]
        );
        // No chain, nothing to do.
        let mut p = Plan::default();
        plan_family_teardown(
            &mut p,
            Family::Ip,
            &FamilyState::default(),
            "m-x",
            &Retry::default(),
        );
        assert!(p.batch.is_empty());
    }

    #[test]
    fn old_layout_table_goes_with_its_last_chain() {
        let a = att("c1");
        let h = instance_hash(&a);
        let mine = format!("{OLD_CHAIN_PREFIX}{h}");
        let other = format!("{OLD_CHAIN_PREFIX}{}", instance_hash(&att("c2")));
        let doomed = |x: &str| x == h;
        let mut p = Plan::default();
        plan_old_cleanup(
            &mut p,
            &OldLayout {
                chains: vec![mine.clone(), other.clone()],
                rules: vec![],
            },
            &doomed,
        );
        assert_eq!(
            p.batch.descriptions(),
            [
                format!("flush chain inet rcni_masquerade {mine}"),
                format!("delete chain inet rcni_masquerade {mine}"),
            ]
        );
        let mut p = Plan::default();
        plan_old_cleanup(
            &mut p,
            &OldLayout {
                chains: vec![mine],
                rules: vec![],
            },
            &doomed,
        );
        assert_eq!(
            p.batch.descriptions(),
            ["delete table inet rcni_masquerade"]
        );
    }

    #[test]
    fn gc_releases_the_elements_of_doomed_chains_only() {
        let keep = att("keep");
        let gone = att("gone");
        let (kc, gc) = (chain_name(&keep), chain_name(&gone));
        let elem = |ip: [u8; 4], c: &str| Elem {
            key: ip.to_vec(),
            data: jump(c),
        };
        let snap = Snapshot {
            tables: Tables::default(),
            ours: vec![FamilySnapshot {
                family: Family::Ip,
                chains: vec![BASE_CHAIN.into(), kc.clone(), gc.clone()],
                rules: vec![],
                elems: vec![elem([10, 0, 0, 1], &kc), elem([10, 0, 0, 2], &gc)],
            }],
            old: OldLayout::default(),
            reference: vec![],
        };
        let hk = instance_hash(&keep);
        let doomed = |h: &str| h != hk;
        let plans = plan_gc(&snap, &doomed, &Retry::default());
        assert_eq!(plans.len(), 1);
        assert_eq!(
            plans[0].batch.descriptions(),
            [
                format!("add element ip rcni_masquerade attachments {{ 10.0.0.2 : jump {gc} }}"),
                format!("delete element ip rcni_masquerade attachments {{ 10.0.0.2 : jump {gc} }}"),
                format!("flush chain ip rcni_masquerade {gc}"),
                format!("delete chain ip rcni_masquerade {gc}"),
            ]
        );
    }

    #[test]
    fn the_masqueraded_address_is_read_back_from_a_rule() {
        for ip in ["10.244.1.5/24", "fd00:1::5/64"] {
            let ip: IpNetwork = ip.parse().unwrap();
            let chain = Chain::regular(&table(family_of(&ip)), "m-x");
            let r = Rule::new(&chain, masq_exprs(&ip), None);
            assert_eq!(saddr_of(&r), Some(ip.ip()));
        }
        assert_eq!(
            hash_of_chain(&chain_name(&att("c")), CHAIN_PREFIX).map(str::len),
            Some(33)
        );
        assert_eq!(hash_of_chain("m-postrouting", CHAIN_PREFIX), None);
    }
}
