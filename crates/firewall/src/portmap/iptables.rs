//! iptables backend: the reference's layout, rule for rule, so either implementation's DEL
//! removes the other's rules and either's CHECK accepts the other's (nat table, per family):
//!
//! ```text
//! -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//! -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net\" id: \"cid\"" -m multiport --dports 8080,8443 -j CNI-DN-<hash>
//! -A CNI-DN-<hash> -s 10.244.1.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK   (hairpin)
//! -A CNI-DN-<hash> -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK    (node-local, v4)
//! -A CNI-DN-<hash> -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80
//! ```
//!
//! `CNI-DN-<hash>` is `CNI-DN-` + 21 hex chars of `sha512(network + containerID)`, the
//! reference's name. Rules are written in the form `iptables -S` prints them.
//!
//! The reference runs one process per check and per rule (about 20 on an ADD, each loading
//! the whole nat table). Here an ADD is one `iptables-restore --noflush` per family when the
//! node is set up and the attachment new (see [`fast_restore`]); otherwise one
//! `iptables -t nat -S` and one restore: the listing tells which shared chains and jumps are
//! missing and which stale jumps to the attachment's chain a re-ADD must drop. That second
//! path runs under a lock file ([`LOCK_FILE`]): two ADDs that both found the shared chains
//! missing would both add the jumps to them (iptables-nft replays a restore whose ruleset
//! changed meanwhile, so `-N` of an existing chain does not reliably fail). Shared chains
//! are still made with `-N`, never by declaring them (which would flush them), and a restore
//! that failed on one (a concurrent Go plugin) is retried with a fresh listing. DEL lists
//! only `CNI-HOSTPORT-DNAT` and restores only when it found a jump to the chain.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

use super::{Listed, Maker, MarkMasq, PortMapper, Request};
use crate::iptables::{Family, RuleLine, V4, V6, parse_rules, tokenize};
use crate::naming::{parse_reference_comment, reference_dnat_chain};
use crate::runner::{Runner, SystemRunner, failed};
use crate::{Attachment, Backend, Error};

/// Top-level DNAT chain, jumped to from `PREROUTING` and `OUTPUT` for local destinations.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// Sets the masquerade mark bit.
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
/// Masquerades marked packets, jumped to (first) from `POSTROUTING`.
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
/// Prefix of the per-container chains (`CNI-DN-` + 21 hex).
const DN_PREFIX: &str = "CNI-DN-";
/// iptables' comment limit (the reference trims to it the same way).
const COMMENT_LIMIT: usize = 255;
/// `multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;
/// Attempts of an ADD whose restore lost a race with a concurrent ADD (`-N` of a shared chain).
const ATTEMPTS: usize = 3;
/// Serializes the ADDs that create shared chains (`flock`, as the reference's xtables lock;
/// not that file: the iptables children take it themselves). One for the whole machine, not
/// per network namespace, on purpose: only the slow path takes it, a node keeps its mappings in
/// one namespace, and iptables-legacy's xtables lock is machine-wide too (see the README).
pub const LOCK_FILE: &str = "/run/rcni-portmap.lock";

/// The nat table as `iptables -S` showed it.
#[derive(Debug, Default)]
struct Table {
    chains: HashSet<String>,
    rules: Vec<RuleLine>,
}

impl Table {
    fn parse(out: &str) -> Table {
        Table {
            chains: out
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .map(|c| c.trim().to_string())
                .collect(),
            rules: parse_rules(out),
        }
    }

    fn has_chain(&self, name: &str) -> bool {
        self.chains.contains(name)
    }

    fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a RuleLine> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    fn has_jump(&self, from: &str, to: &str) -> bool {
        self.rules_in(from).any(|r| r.target.as_deref() == Some(to))
    }

    /// Whether `line` (an `-A` line) is in the table, compared word by word in any order
    /// (legacy and nft variants print some matches in a different order).
    fn has_rule(&self, line: &str) -> bool {
        let want = normalized(line);
        self.rules.iter().any(|r| normalized(&r.raw) == want)
    }
}

fn normalized(line: &str) -> Vec<String> {
    let mut t = tokenize(line);
    t.sort();
    t
}

/// The iptables backend (`iptables`/`ip6tables` + `*-restore`, legacy or nft variant).
#[derive(Debug, Default)]
pub struct Iptables<R: Runner = SystemRunner> {
    runner: R,
    lock: Option<PathBuf>,
}

impl<R: Runner> Iptables<R> {
    /// Backend using `runner` to spawn the tools, without a lock file.
    pub fn new(runner: R) -> Self {
        Self { runner, lock: None }
    }

    /// Serialize the ADDs that list and create shared chains with `flock` on `path`
    /// ([`LOCK_FILE`] for the plugin).
    pub fn with_lock(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock = Some(path.into());
        self
    }

    /// Holds the lock file while alive; `None` without one, or when it cannot be opened
    /// (the slow path then runs unserialized, as it would without us).
    fn lock(&self) -> Option<std::fs::File> {
        let path = self.lock.as_ref()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .inspect_err(|e| log::debug!("no lock file {}: {e}", path.display()))
            .ok()?;
        match file.lock() {
            Ok(()) => Some(file),
            Err(e) => {
                log::debug!("cannot lock {}: {e}", path.display());
                None
            }
        }
    }

    /// `-S` of the whole nat table, or of one chain; `None` when that does not exist.
    fn list_nat(&self, fam: Family, chain: Option<&str>) -> Result<Option<Table>, Error> {
        let mut args = vec!["-w", "-t", "nat", "-S"];
        args.extend(chain);
        let out = self.runner.run(fam.list_tool, &args, None)?;
        if out.success {
            return Ok(Some(Table::parse(&out.stdout)));
        }
        // Legacy: "No chain/target/match by that name", "Table does not exist"; the nft
        // variant (1.8.9) says "chain `X' in table `nat' is incompatible" for a missing chain.
        let missing = ["No chain/target/match", "does not exist", "incompatible"];
        if missing.iter().any(|m| out.stderr.contains(m)) {
            return Ok(None);
        }
        Err(failed(fam.list_tool, &args, &out))
    }

    fn restore(&self, fam: Family, text: &str) -> Result<(), Error> {
        crate::iptables::restore(&self.runner, fam, text)
    }

    /// The families whose tools exist (ToolNotFound when none does).
    fn present(&self) -> Result<Vec<Family>, Error> {
        crate::iptables::present_families(&self.runner)
    }

    fn setup_family(&self, fam: Family, req: &Request, addr: IpNetwork) -> Result<(), Error> {
        // The common case first: shared chains in place, the attachment new. No listing
        // (which loads the whole nat table: ~100 ms with kube-proxy's rules in it).
        match self.restore(fam, &fast_restore(req, addr)) {
            Ok(()) => return Ok(()),
            Err(e) => log::debug!(
                "{}: not a fresh attachment on a set-up node ({e}), listing",
                fam.restore_tool
            ),
        }
        let _locked = self.lock();
        let mut attempt = 1;
        loop {
            let table = self.list_nat(fam, None)?.unwrap_or_default();
            match self.restore(fam, &setup_restore(&table, req, addr)) {
                Err(Error::Failed { ref stderr, .. })
                    if attempt < ATTEMPTS && stderr.contains("already exists") =>
                {
                    log::debug!(
                        "{}: lost a race creating shared chains, retrying",
                        fam.restore_tool
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// [`PortMapper::teardown`] for the families (`v6`?) that `may_have_nat` accepts.
    pub(crate) fn teardown_where(
        &self,
        att: &Attachment,
        may_have_nat: impl Fn(bool) -> bool,
    ) -> Result<(), Error> {
        let chain = reference_dnat_chain(&att.network, &att.container_id);
        let doomed = BTreeSet::from([chain]);
        let errors =
            self.present()?
                .into_iter()
                .filter(|f| may_have_nat(f.v6))
                .filter_map(|fam| match self.list_nat(fam, Some(DNAT_CHAIN)) {
                    Ok(Some(table)) => delete_restore(&table, &doomed)
                        .and_then(|text| self.restore(fam, &text).err()),
                    Ok(None) => None,
                    Err(e) => Some(e),
                })
                .collect();
        Error::collect(errors)
    }
}

impl<R: Runner> PortMapper for Iptables<R> {
    fn setup(&self, req: &Request) -> Result<(), Error> {
        let mut done = false;
        for fam in [V4, V6] {
            let Some(addr) = req.addr(fam.v6) else {
                continue;
            };
            if let Err(e) = self.setup_family(fam, req, addr) {
                if done {
                    // The other family is in place: take it out again.
                    if let Err(undo) = self.teardown(req.att) {
                        log::warn!("failed to undo port mappings: {undo}");
                    }
                }
                return Err(e);
            }
            done = true;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        for fam in [V4, V6] {
            let Some(addr) = req.addr(fam.v6) else {
                continue;
            };
            let table = self.list_nat(fam, None)?.unwrap_or_default();
            check_family(&table, req, addr).map_err(|e| {
                Error::Check(format!(
                    "could not check {} dnat: {e}",
                    if fam.v6 { "ipv6" } else { "ipv4" }
                ))
            })?;
        }
        Ok(())
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.teardown_where(att, |_| true)
    }

    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error> {
        let keep: HashSet<String> = valid
            .iter()
            .map(|a| reference_dnat_chain(network, &a.container_id))
            .collect();
        let errors = self
            .present()?
            .into_iter()
            .filter_map(|fam| {
                let table = match self.list_nat(fam, Some(DNAT_CHAIN)) {
                    Ok(Some(t)) => t,
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                };
                let doomed: BTreeSet<String> = table
                    .rules_in(DNAT_CHAIN)
                    .filter_map(owner)
                    .filter(|(chain, net, _)| net == network && !keep.contains(chain))
                    .map(|(chain, _, _)| chain)
                    .collect();
                match delete_restore(&table, &doomed) {
                    Some(text) => self.restore(fam, &text).err(),
                    None => None,
                }
            })
            .collect();
        Error::collect(errors)
    }

    fn list(&self) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        for fam in self.present()? {
            let Some(table) = self.list_nat(fam, Some(DNAT_CHAIN))? else {
                continue;
            };
            let mut seen = HashSet::new();
            for (chain, net, cid) in table.rules_in(DNAT_CHAIN).filter_map(owner) {
                if seen.insert(chain.clone()) {
                    out.push(Listed {
                        backend: Backend::Iptables,
                        // Ours and the reference's are the same rules.
                        maker: Maker::Either,
                        v6: fam.v6,
                        chain,
                        network: Some(net),
                        container_id: Some(cid),
                        ifname: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// (chain, network, container ID) of a `CNI-HOSTPORT-DNAT` jump whose comment is
/// `dnat name: "<net>" id: "<cid>"` and whose target is that pair's chain.
fn owner(r: &RuleLine) -> Option<(String, String, String)> {
    let target = r.target.as_deref()?;
    let (net, cid) = r
        .comment
        .as_deref()?
        .strip_prefix("dnat ")
        .and_then(parse_reference_comment)?;
    (target.starts_with(DN_PREFIX) && reference_dnat_chain(net, cid) == target)
        .then(|| (target.to_string(), net.to_string(), cid.to_string()))
}

/// Quote a word for an `iptables-restore` line.
fn quote(word: &str) -> String {
    if !word.is_empty() && !word.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        return word.to_string();
    }
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

fn mark_def(bits: u32) -> String {
    format!("{bits:#x}/{bits:#x}")
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv6() { 128 } else { 32 }
}

/// The reference's `dnat name: "<net>" id: "<cid>"`, trimmed to iptables' limit.
fn dnat_comment(att: &Attachment) -> String {
    let c = format!(
        "dnat name: \"{}\" id: \"{}\"",
        att.network, att.container_id
    );
    if c.len() <= COMMENT_LIMIT {
        return c;
    }
    let mut end = COMMENT_LIMIT - 2;
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &c[..end])
}

/// The jump target for "needs masquerade".
fn setmark_target<'a>(req: &Request<'a>) -> &'a str {
    match &req.opts.mark {
        MarkMasq::Bit(_) => SETMARK_CHAIN,
        MarkMasq::External(c) => c,
    }
}

/// The `-A CNI-HOSTPORT-DNAT ...` lines: per protocol (sorted), the host ports of every
/// mapping (whatever its family, as the reference), at most 15 per rule.
fn entry_rules(req: &Request, v6: bool, chain: &str) -> Vec<String> {
    let comment = quote(&dnat_comment(req.att));
    // Sorted by name, as the reference does.
    let mut protos: Vec<_> = req.mappings.iter().map(|m| m.protocol).collect();
    protos.sort_by_key(|p| p.as_str());
    protos.dedup();
    let conditions: Vec<String> = req.conditions(v6).iter().map(|c| quote(c)).collect();
    let mut out = Vec::new();
    for proto in protos {
        let ports: Vec<String> = req
            .mappings
            .iter()
            .filter(|m| m.protocol == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for group in ports.chunks(MULTIPORT_MAX) {
            let mut line = format!(
                "-A {DNAT_CHAIN} -p {} -m comment --comment {comment} -m multiport --dports {}",
                proto.as_str(),
                group.join(",")
            );
            for c in &conditions {
                line.push(' ');
                line.push_str(c);
            }
            let _ = write!(line, " -j {chain}");
            out.push(line);
        }
    }
    out
}

/// The `-A CNI-DN-<hash> ...` lines for the pod address `addr`: per mapping of this family,
/// the mark rules (hairpin, then node-local for IPv4) and the DNAT rule.
fn dn_rules(req: &Request, addr: IpNetwork, chain: &str) -> Vec<String> {
    let v6 = addr.is_ipv6();
    let setmark = setmark_target(req);
    let mut out = Vec::new();
    for m in req.mappings_for(v6) {
        let dst = m
            .host_addr()
            .map(|ip| format!(" -d {ip}/{}", host_prefix(ip)))
            .unwrap_or_default();
        let proto = m.protocol.as_str();
        let port = format!("-p {proto} -m {proto} --dport {}", m.host_port);
        if req.opts.snat {
            let hairpin = if req.opts.masq_all {
                String::new()
            } else {
                format!(" -s {}/{}", addr.network(), addr.prefix())
            };
            out.push(format!("-A {chain}{hairpin}{dst} {port} -j {setmark}"));
            if !v6 && !req.opts.masq_all {
                out.push(format!(
                    "-A {chain} -s 127.0.0.1/32{dst} {port} -j {setmark}"
                ));
            }
        }
        let to = match addr.ip() {
            IpAddr::V4(ip) => format!("{ip}:{}", m.container_port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", m.container_port),
        };
        out.push(format!(
            "-A {chain}{dst} {port} -j DNAT --to-destination {to}"
        ));
    }
    out
}

/// The shared chains' mark and masquerade rules for `bits`.
fn setmark_rule(bits: u32) -> String {
    format!(
        "-A {SETMARK_CHAIN} -m comment --comment {} -j MARK --set-xmark {}",
        quote(SETMARK_COMMENT),
        mark_def(bits)
    )
}

fn masq_rule(bits: u32) -> String {
    format!(
        "-A {MASQ_CHAIN} -m mark --mark {} -j MASQUERADE",
        mark_def(bits)
    )
}

fn masq_jump() -> String {
    format!(
        "-I POSTROUTING 1 -m comment --comment {} -j {MASQ_CHAIN}",
        quote(MASQ_COMMENT)
    )
}

fn dnat_jump(from: &str) -> String {
    format!("-A {from} -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}")
}

/// The ADD transaction for one family, given the current nat `table`.
fn setup_restore(table: &Table, req: &Request, addr: IpNetwork) -> String {
    let chain = reference_dnat_chain(&req.att.network, &req.att.container_id);
    let mut s = String::from("*nat\n");
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    if req.opts.snat
        && let Some(bits) = req.opts.mark.bits()
    {
        if !table.has_chain(SETMARK_CHAIN) {
            line(format!("-N {SETMARK_CHAIN}"));
        }
        if !table.has_rule(&setmark_rule(bits)) {
            line(setmark_rule(bits));
        }
        if !table.has_chain(MASQ_CHAIN) {
            line(format!("-N {MASQ_CHAIN}"));
        }
        if !table.has_rule(&masq_rule(bits)) {
            line(masq_rule(bits));
        }
        if !table.has_jump("POSTROUTING", MASQ_CHAIN) {
            line(masq_jump());
        }
    }
    if !table.has_chain(DNAT_CHAIN) {
        line(format!("-N {DNAT_CHAIN}"));
    }
    for from in ["PREROUTING", "OUTPUT"] {
        if !table.has_jump(from, DNAT_CHAIN) {
            line(dnat_jump(from));
        }
    }
    // Creates the chain, or empties it when a previous ADD (ours or the reference's) left it.
    line(format!(":{chain} - [0:0]"));
    for stale in table
        .rules_in(DNAT_CHAIN)
        .filter(|r| r.target.as_deref() == Some(chain.as_str()))
    {
        line(stale.delete_line());
    }
    for l in dn_rules(req, addr, &chain) {
        line(l);
    }
    for l in entry_rules(req, addr.is_ipv6(), &chain) {
        line(l);
    }
    s.push_str("COMMIT\n");
    s
}

/// The ADD transaction when the shared chains exist and the attachment is new: `-N` of
/// its chain fails if it exists (a re-ADD, or a leftover), and the jumps to
/// `CNI-HOSTPORT-DNAT` and `CNI-HOSTPORT-SETMARK` (or the external mark chain) fail if
/// those do not exist; then [`setup_restore`] is used, with a listing. What this does not
/// look at (the jumps from `PREROUTING`/`OUTPUT`/`POSTROUTING`, the mark and masquerade
/// rules) is made together with those chains and removed by nobody but an administrator;
/// CHECK verifies it.
fn fast_restore(req: &Request, addr: IpNetwork) -> String {
    let chain = reference_dnat_chain(&req.att.network, &req.att.container_id);
    let mut s = format!("*nat\n-N {chain}\n");
    for l in dn_rules(req, addr, &chain)
        .into_iter()
        .chain(entry_rules(req, addr.is_ipv6(), &chain))
    {
        s.push_str(&l);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// CHECK of one family: the reference's checks (the chain, its rules, its entry rules), plus
/// the shared jumps and mark rules without which nothing would be forwarded.
fn check_family(table: &Table, req: &Request, addr: IpNetwork) -> Result<(), String> {
    let chain = reference_dnat_chain(&req.att.network, &req.att.container_id);
    if !table.has_chain(&chain) {
        return Err(format!("chain {chain} not found in iptables table nat"));
    }
    let mut want = dn_rules(req, addr, &chain);
    want.extend(entry_rules(req, addr.is_ipv6(), &chain));
    for from in ["PREROUTING", "OUTPUT"] {
        if !table.has_jump(from, DNAT_CHAIN) {
            want.push(dnat_jump(from));
        }
    }
    if req.opts.snat
        && let Some(bits) = req.opts.mark.bits()
    {
        want.push(setmark_rule(bits));
        want.push(masq_rule(bits));
        if !table.has_jump("POSTROUTING", MASQ_CHAIN) {
            return Err(format!("no jump to {MASQ_CHAIN} in POSTROUTING"));
        }
    }
    match want.iter().find(|l| !table.has_rule(l)) {
        Some(missing) => Err(format!("rule \"{missing}\" not found in table nat")),
        None => Ok(()),
    }
}

/// Restore text deleting the `doomed` chains and every `CNI-HOSTPORT-DNAT` jump to them;
/// `None` when `table` (the DNAT chain's listing) has no such jump.
fn delete_restore(table: &Table, doomed: &BTreeSet<String>) -> Option<String> {
    let jumps: Vec<&RuleLine> = table
        .rules_in(DNAT_CHAIN)
        .filter(|r| r.target.as_ref().is_some_and(|t| doomed.contains(t)))
        .collect();
    if jumps.is_empty() {
        return None;
    }
    let chains: BTreeSet<&str> = jumps.iter().filter_map(|r| r.target.as_deref()).collect();
    let mut s = String::from("*nat\n");
    for c in &chains {
        // Declaring flushes the chain, so `-X` works whatever it holds.
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    for r in &jumps {
        let _ = writeln!(s, "{}", r.delete_line());
    }
    for c in &chains {
        let _ = writeln!(s, "-X {c}");
    }
    s.push_str("COMMIT\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::fixtures::{att, pm};
    use crate::portmap::{Options, PortMapping, Protocol};
    use crate::runner::fake::FakeRunner;

    /// The mappings of the run against the Debian v1.1.1 reference (see the module docs).
    fn mappings() -> Vec<PortMapping> {
        vec![
            pm(8080, 80, Protocol::Tcp, None),
            pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")),
            pm(5353, 53, Protocol::Udp, None),
            pm(9999, 99, Protocol::Sctp, Some("::1")),
        ]
    }

    /// What `iptables-save -t nat` showed after the reference's ADD (v1.1.1, iptables-nft),
    /// chain declarations in `-S` form.
    const REFERENCE_V4: &str = r#"-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N CNI-DN-a631aa8e1549a3b129110
-N CNI-HOSTPORT-DNAT
-N CNI-HOSTPORT-MASQ
-N CNI-HOSTPORT-SETMARK
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-DN-a631aa8e1549a3b129110 -s 10.244.1.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80
-A CNI-DN-a631aa8e1549a3b129110 -s 10.244.1.0/24 -d 192.168.1.5/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -s 127.0.0.1/32 -d 192.168.1.5/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -d 192.168.1.5/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.244.1.5:443
-A CNI-DN-a631aa8e1549a3b129110 -s 10.244.1.0/24 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-a631aa8e1549a3b129110 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.244.1.5:53
-A CNI-HOSTPORT-DNAT -p sctp -m comment --comment "dnat name: \"mynet\" id: \"cid1\"" -m multiport --dports 9999 -j CNI-DN-a631aa8e1549a3b129110
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"cid1\"" -m multiport --dports 8080,8443 -j CNI-DN-a631aa8e1549a3b129110
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \"mynet\" id: \"cid1\"" -m multiport --dports 5353 -j CNI-DN-a631aa8e1549a3b129110
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
"#;

    fn addrs() -> Vec<IpNetwork> {
        vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ]
    }

    #[test]
    fn fresh_setup_writes_the_reference_rules() {
        let a = att("cid1");
        let (ms, opts, addrs) = (mappings(), Options::default(), addrs());
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let text = setup_restore(&Table::default(), &req, addrs[0]);
        // Every rule of the reference's ruleset, in the reference's order within each chain.
        let reference = Table::parse(REFERENCE_V4);
        let inserted = text.replace("-I POSTROUTING 1 ", "-A POSTROUTING ");
        let ours: Vec<&str> = inserted.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(ours.len(), reference.rules.len(), "{text}");
        for l in &ours {
            assert!(reference.has_rule(l), "not in the reference's ruleset: {l}");
        }
        for chain in ["CNI-DN-a631aa8e1549a3b129110", DNAT_CHAIN] {
            let mine: Vec<Vec<String>> = ours
                .iter()
                .filter(|l| l.split_whitespace().nth(1) == Some(chain))
                .map(|l| normalized(l))
                .collect();
            let theirs: Vec<Vec<String>> = reference
                .rules_in(chain)
                .map(|r| normalized(&r.raw))
                .collect();
            assert_eq!(mine, theirs, "order in {chain}");
        }
        assert!(text.starts_with(
            "*nat\n-N CNI-HOSTPORT-SETMARK\n-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\n-N CNI-HOSTPORT-MASQ\n"
        ));
        assert!(text.contains("\n-I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n"));
        assert!(text.contains("\n:CNI-DN-a631aa8e1549a3b129110 - [0:0]\n"));
        assert!(text.ends_with("COMMIT\n"));
        // And CHECK accepts the reference's rules.
        check_family(&reference, &req, addrs[0]).unwrap();
    }

    #[test]
    fn setup_over_existing_rules_adds_only_what_is_missing() {
        let a = att("cid1");
        let (ms, opts, addrs) = (mappings(), Options::default(), addrs());
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let text = setup_restore(&Table::parse(REFERENCE_V4), &req, addrs[0]);
        let chain = "CNI-DN-a631aa8e1549a3b129110";
        // No shared chain or jump again; the old entry rules are replaced.
        assert!(!text.contains("-N "), "{text}");
        assert!(!text.contains("SETMARK -m comment"), "{text}");
        assert!(!text.contains("-I POSTROUTING"), "{text}");
        assert!(!text.contains("-A PREROUTING"), "{text}");
        assert_eq!(
            text.matches(&format!("-D {DNAT_CHAIN} ")).count(),
            3,
            "{text}"
        );
        assert_eq!(
            text.matches(&format!("-A {DNAT_CHAIN} ")).count(),
            3,
            "{text}"
        );
        assert!(text.contains(&format!(":{chain} - [0:0]\n")));
    }

    #[test]
    fn ipv6_rules() {
        let a = att("cid1");
        let (ms, opts, addrs) = (mappings(), Options::default(), addrs());
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let chain = "CNI-DN-a631aa8e1549a3b129110";
        assert_eq!(
            dn_rules(&req, addrs[1], chain),
            vec![
                format!(
                    "-A {chain} -s fd00::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"
                ),
                format!(
                    "-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::5]:80"
                ),
                format!(
                    "-A {chain} -s fd00::/64 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK"
                ),
                format!(
                    "-A {chain} -p udp -m udp --dport 5353 -j DNAT --to-destination [fd00::5]:53"
                ),
                format!(
                    "-A {chain} -s fd00::/64 -d ::1/128 -p sctp -m sctp --dport 9999 -j CNI-HOSTPORT-SETMARK"
                ),
                format!(
                    "-A {chain} -d ::1/128 -p sctp -m sctp --dport 9999 -j DNAT --to-destination [fd00::5]:99"
                ),
            ]
        );
    }

    #[test]
    fn options_change_the_rules() {
        let a = att("c");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let chain = reference_dnat_chain("mynet", "c");
        let opts = Options {
            masq_all: true,
            mark: MarkMasq::External("KUBE-MARK-MASQ".into()),
            conditions_v4: vec!["!".into(), "-d".into(), "192.0.2.0/24".into()],
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let text = setup_restore(&Table::default(), &req, addrs[0]);
        assert_eq!(
            text,
            format!(
                "*nat\n-N {DNAT_CHAIN}\n\
                 -A PREROUTING -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}\n\
                 -A OUTPUT -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}\n\
                 :{chain} - [0:0]\n\
                 -A {chain} -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ\n\
                 -A {chain} -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080\n\
                 -A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \\\"c\\\"\" -m multiport --dports 80 ! -d 192.0.2.0/24 -j {chain}\n\
                 COMMIT\n"
            )
        );
        let off = Options {
            snat: false,
            ..Options::default()
        };
        let req = Request { opts: &off, ..req };
        let text = setup_restore(&Table::default(), &req, addrs[0]);
        assert!(
            !text.contains("SETMARK") && !text.contains("MASQ"),
            "{text}"
        );
    }

    #[test]
    fn multiport_takes_fifteen_ports_per_rule() {
        let a = att("c");
        let ms: Vec<PortMapping> = (1..=16)
            .map(|p| pm(p, p, Protocol::Tcp, None))
            .chain([pm(7, 7, Protocol::Udp, None)])
            .collect();
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &[],
            mappings: &ms,
            opts: &opts,
        };
        let rules = entry_rules(&req, false, "X");
        assert_eq!(rules.len(), 3);
        assert!(rules[0].contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -j X"));
        assert!(rules[1].contains("-p tcp ") && rules[1].contains("--dports 16 -j X"));
        assert!(rules[2].contains("-p udp ") && rules[2].contains("--dports 7 -j X"));
    }

    #[test]
    fn check_reports_what_is_missing() {
        let a = att("cid1");
        let (ms, opts, addrs) = (mappings(), Options::default(), addrs());
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let broken = REFERENCE_V4.replace(
            "-A CNI-DN-a631aa8e1549a3b129110 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.244.1.5:53\n",
            "",
        );
        let e = check_family(&Table::parse(&broken), &req, addrs[0]).unwrap_err();
        assert!(e.contains("--dport 5353 -j DNAT"), "{e}");
        let e = check_family(&Table::default(), &req, addrs[0]).unwrap_err();
        assert_eq!(
            e,
            "chain CNI-DN-a631aa8e1549a3b129110 not found in iptables table nat"
        );
        // Another pod address: the DNAT target differs.
        let other: IpNetwork = "10.244.1.6/24".parse().unwrap();
        assert!(check_family(&Table::parse(REFERENCE_V4), &req, other).is_err());
    }

    #[test]
    fn teardown_deletes_jumps_and_chain() {
        let fake = FakeRunner::new().without(&["ip6tables"]);
        let dnat_listing: String = REFERENCE_V4
            .lines()
            .filter(|l| l.starts_with(&format!("-A {DNAT_CHAIN}")))
            .map(|l| format!("{l}\n"))
            .collect();
        fake.answer(
            "iptables",
            &format!("-N {DNAT_CHAIN}\n{dnat_listing}-A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \\\"other\\\"\" -m multiport --dports 1 -j {}\n", reference_dnat_chain("mynet", "other")),
        );
        Iptables::new(&fake).teardown(&att("cid1")).unwrap();
        let chain = "CNI-DN-a631aa8e1549a3b129110";
        let deletes: String = dnat_listing
            .lines()
            .map(|l| format!("-D{}\n", &l[2..]))
            .collect();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ iptables -w -t nat -S {DNAT_CHAIN}\n\
                 $ iptables-restore -w --noflush\n\
                 *nat\n:{chain} - [0:0]\n{deletes}-X {chain}\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn teardown_without_the_chain_restores_nothing() {
        let fake = FakeRunner::new();
        fake.fail(
            "iptables",
            "iptables v1.8.9 (nf_tables): chain `CNI-HOSTPORT-DNAT' in table `nat' is incompatible, use 'nft' tool.",
        );
        fake.fail(
            "ip6tables",
            "ip6tables: No chain/target/match by that name.",
        );
        Iptables::new(&fake).teardown(&att("x")).unwrap();
        assert_eq!(fake.calls.borrow().len(), 2);
        let fake = FakeRunner::new();
        fake.fail("iptables", "Permission denied (you must be root)");
        assert!(Iptables::new(&fake).teardown(&att("x")).is_err());
    }

    #[test]
    fn setup_retries_when_a_concurrent_add_created_the_shared_chains() {
        let a = att("c");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let fake = FakeRunner::new();
        fake.fail(
            "iptables-restore",
            "iptables-restore: line 5 failed: No chain/target/match by that name.",
        );
        fake.fail(
            "iptables-restore",
            "iptables-restore: line 2 failed: Chain already exists.",
        );
        Iptables::new(&fake).setup(&req).unwrap();
        let t = fake.transcript();
        assert_eq!(t.matches("$ iptables -w -t nat -S\n").count(), 2, "{t}");
        assert_eq!(t.matches("$ iptables-restore").count(), 3, "{t}");
        // Another failure is reported at once, after undoing nothing (no family was done).
        let fake = FakeRunner::new();
        fake.fail("iptables-restore", "iptables-restore: line 9 failed");
        fake.fail("iptables-restore", "iptables-restore: line 9 failed");
        let e = Iptables::new(&fake).setup(&req).unwrap_err();
        assert!(e.to_string().contains("line 9 failed"), "{e}");
        assert_eq!(fake.calls.borrow().len(), 3);
    }

    #[test]
    fn a_fresh_attachment_on_a_set_up_node_is_one_restore() {
        let a = att("c");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let fake = FakeRunner::new();
        Iptables::new(&fake).setup(&req).unwrap();
        let chain = reference_dnat_chain("mynet", "c");
        assert_eq!(
            fake.transcript(),
            format!(
                "$ iptables-restore -w --noflush\n\
                 *nat\n-N {chain}\n\
                 -A {chain} -s 10.0.0.0/24 -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK\n\
                 -A {chain} -s 127.0.0.1/32 -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK\n\
                 -A {chain} -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080\n\
                 -A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \\\"c\\\"\" -m multiport --dports 80 -j {chain}\n\
                 COMMIT\n"
            )
        );
    }

    #[test]
    fn failed_ipv6_setup_undoes_ipv4() {
        let a = att("c");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec![
            "10.0.0.2/24".parse().unwrap(),
            "fd00::2/64".parse().unwrap(),
        ];
        let opts = Options::default();
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let fake = FakeRunner::new();
        // Both the fast and the listed attempt fail for IPv6.
        fake.fail("ip6tables-restore", "boom");
        fake.fail("ip6tables-restore", "boom");
        // The undo's listing of CNI-HOSTPORT-DNAT (after the v4 setup) finds the new jump.
        let chain = reference_dnat_chain("mynet", "c");
        fake.answer(
            "iptables",
            &format!("-N {DNAT_CHAIN}\n-A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"mynet\\\" id: \\\"c\\\"\" -m multiport --dports 80 -j {chain}\n"),
        );
        assert!(Iptables::new(&fake).setup(&req).is_err());
        let t = fake.transcript();
        assert!(t.contains(&format!("-X {chain}\nCOMMIT\n")), "{t}");
    }

    #[test]
    fn gc_removes_stale_chains_of_this_network() {
        let keep = reference_dnat_chain("mynet", "keep");
        let gone = reference_dnat_chain("mynet", "gone");
        let other = reference_dnat_chain("othernet", "gone");
        let jump = |net: &str, cid: &str, chain: &str| {
            format!(
                "-A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"{net}\\\" id: \\\"{cid}\\\"\" -m multiport --dports 80 -j {chain}\n"
            )
        };
        let fake = FakeRunner::new().without(&["ip6tables"]);
        fake.answer(
            "iptables",
            &format!(
                "-N {DNAT_CHAIN}\n{}{}{}",
                jump("mynet", "keep", &keep),
                jump("mynet", "gone", &gone),
                jump("othernet", "gone", &other)
            ),
        );
        let valid = [att("keep")];
        Iptables::new(&fake).gc("mynet", &valid).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1].stdin.as_deref(),
            Some(
                format!(
                    "*nat\n:{gone} - [0:0]\n-D{}-X {gone}\nCOMMIT\n",
                    &jump("mynet", "gone", &gone)[2..]
                )
                .as_str()
            )
        );
        drop(calls);
        let listed = Iptables::new(&fake).list();
        // The fake answers the next listing with nothing.
        assert!(listed.unwrap().is_empty());
    }

    #[test]
    fn lists_attachments() {
        let chain = reference_dnat_chain("n", "c");
        let fake = FakeRunner::new().without(&["ip6tables"]);
        fake.answer(
            "iptables",
            &format!("-N {DNAT_CHAIN}\n-A {DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"n\\\" id: \\\"c\\\"\" -m multiport --dports 1 -j {chain}\n-A {DNAT_CHAIN} -p udp -m comment --comment \"dnat name: \\\"n\\\" id: \\\"c\\\"\" -m multiport --dports 1 -j {chain}\n-A {DNAT_CHAIN} -j CNI-DN-forged\n"),
        );
        let l = Iptables::new(&fake).list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].chain, chain);
        assert_eq!(l[0].container_id.as_deref(), Some("c"));
        assert!(!l[0].v6);
    }

    #[test]
    fn comment_is_trimmed_like_the_reference() {
        let a = Attachment {
            network: "n".repeat(300),
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        let c = dnat_comment(&a);
        assert_eq!(c.len(), 256);
        assert!(c.ends_with("..."));
        assert_eq!(quote("a b\"c"), "\"a b\\\"c\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("-d"), "-d");
    }
}
