//! iptables backend: one `iptables-restore --noflush -w` transaction per family and change.
//!
//! Per attachment and family (nat table):
//!
//! ```text
//! -N RCNI-<23 hex>
//! -A RCNI-.. -s 10.244.1.5/32 -d 10.244.1.0/24 -m comment --comment "<c>" -j ACCEPT
//! -A RCNI-.. -s 10.244.1.5/32 ! -d 224.0.0.0/4 -m comment --comment "<c>" -j MASQUERADE
//! -A POSTROUTING -s 10.244.1.5/32 -m comment --comment "<c>" -j RCNI-..
//! ```
//!
//! `<c>` is the nftables backend's comment (instance hash first) with up to 255 bytes, so
//! a 64-hex container ID stays whole (`iptables-save | grep <id>` finds it). The chain
//! rules also match `-s` so several IPs of one family in one chain cannot shadow each other.
//!
//! **Setup lists nothing.** The transaction starts with `-N <chain>`, which fails when the
//! chain exists, and a failed restore changes nothing: a new attachment (the normal case)
//! costs one `iptables-restore` and no listing of `POSTROUTING`, whose size grows with the
//! pod count. Only when the chain exists (a repeated ADD) is `POSTROUTING` listed, and the
//! chain re-declared (`:CHAIN - [0:0]` flushes it) with its old jumps replaced, in one
//! restore: never a second jump.
//!
//! **Teardown** deletes this attachment's chain and the Go reference's `CNI-<24 hex>`
//! chain of the same container, with their `POSTROUTING` jumps, including a chain that has
//! no jump (the Go plugin creates the chain before the jump; a crash in between leaves
//! one). On DEL, iptables-nft state is removed over netlink without any process (see
//! `crate::teardown_all_with`); this backend lists and restores only legacy tables.

use crate::naming::{
    CHAIN_PREFIX, hash_of_comment, instance_hash, iptables_chain, iptables_comment,
    is_reference_chain, network_hash, parse_reference_comment, reference_chain,
};
use crate::nft::Listed;
use crate::runner::{Runner, SystemRunner, failed, run_ok};
use crate::{Attachment, Error, Masquerade};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;
use std::net::IpAddr;

const POSTROUTING: &str = "POSTROUTING";

/// Tools and constants of one address family (masquerade and portmap alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub(crate) list_tool: &'static str,
    pub(crate) restore_tool: &'static str,
    pub(crate) multicast: &'static str,
    pub(crate) v6: bool,
}

pub(crate) const V4: Family = Family {
    list_tool: "iptables",
    restore_tool: "iptables-restore",
    multicast: "224.0.0.0/4",
    v6: false,
};
pub(crate) const V6: Family = Family {
    list_tool: "ip6tables",
    restore_tool: "ip6tables-restore",
    multicast: "ff00::/8",
    v6: true,
};

/// One `iptables-restore --noflush` of `text` (waiting for the xtables lock).
pub(crate) fn restore<R: Runner + ?Sized>(
    runner: &R,
    fam: Family,
    text: &str,
) -> Result<(), Error> {
    run_ok(runner, fam.restore_tool, &["-w", "--noflush"], Some(text)).map(drop)
}

/// Families whose tools exist; `ToolNotFound` when none does (cleanup paths only: rules
/// cannot exist for a family whose tool was never installed).
pub(crate) fn present_families<R: Runner + ?Sized>(runner: &R) -> Result<Vec<Family>, Error> {
    let fams: Vec<Family> = [V4, V6]
        .into_iter()
        .filter(|f| runner.has(f.list_tool))
        .collect();
    if fams.is_empty() {
        return Err(Error::ToolNotFound {
            tool: V4.list_tool.to_string(),
        });
    }
    Ok(fams)
}

/// One `-A CHAIN ...` line of `iptables -S` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleLine {
    pub(crate) chain: String,
    /// The line as printed (what `-D` needs, with `-A` replaced).
    pub(crate) raw: String,
    pub(crate) target: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) source: Option<String>,
}

impl RuleLine {
    pub(crate) fn delete_line(&self) -> String {
        format!("-D{}", &self.raw[2..])
    }
}

/// The iptables backend (`iptables`/`ip6tables` + `*-restore`, whichever variant the
/// alternatives system selects).
#[derive(Debug, Default)]
pub struct Iptables<R: Runner = SystemRunner> {
    runner: R,
}

impl<R: Runner> Iptables<R> {
    /// Backend using `runner` to spawn the tools.
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    /// `iptables -w -t nat -S [chain]`. When `tolerant`, a missing table/chain lists as empty.
    fn list(&self, fam: Family, chain: Option<&str>, tolerant: bool) -> Result<String, Error> {
        let mut args = vec!["-w", "-t", "nat", "-S"];
        args.extend(chain);
        let out = self.runner.run(fam.list_tool, &args, None)?;
        if out.success {
            Ok(out.stdout)
        } else if tolerant && out.stderr.contains("does not exist") {
            Ok(String::new())
        } else {
            Err(failed(fam.list_tool, &args, &out))
        }
    }

    fn restore(&self, fam: Family, text: &str) -> Result<(), Error> {
        restore(&self.runner, fam, text)
    }

    fn present_families(&self) -> Result<Vec<Family>, Error> {
        present_families(&self.runner)
    }

    /// Run `f` for every present family, collecting errors.
    fn each_family(&self, f: impl Fn(Family) -> Result<(), Error>) -> Result<(), Error> {
        let errors = self
            .present_families()?
            .into_iter()
            .filter_map(|fam| f(fam).err())
            .collect();
        Error::collect(errors)
    }

    /// [`Masquerade::teardown`] for the families (`v6`?) whose nat table `may_exist`
    /// (listing a family that has none costs a process for nothing). The nat table is
    /// listed whole: `-N` lines tell which of the two chains exist, jump or not.
    pub(crate) fn teardown_where(
        &self,
        att: &Attachment,
        may_exist: impl Fn(bool) -> bool,
    ) -> Result<(), Error> {
        let ours = iptables_chain(att);
        let reference = reference_chain(&att.network, &att.container_id);
        self.each_family(|fam| {
            if !may_exist(fam.v6) {
                return Ok(());
            }
            let text = self.list(fam, None, true)?;
            let chains = parse_chains(&text);
            let present: BTreeSet<String> = [&ours, &reference]
                .into_iter()
                .filter(|c| chains.contains(*c))
                .cloned()
                .collect();
            match delete_restore(&parse_rules(&text), &present) {
                Some(text) => self.restore(fam, &text),
                None => Ok(()),
            }
        })
    }
}

impl<R: Runner> Masquerade for Iptables<R> {
    /// Per family with addresses: one restore creating the chain (`-N` fails when it
    /// exists); only then, a listing of `POSTROUTING` and a restore replacing the chain.
    fn setup(&self, att: &Attachment, ips: &[IpNetwork]) -> Result<(), Error> {
        let chain = iptables_chain(att);
        let c = iptables_comment(att);
        for fam in [V4, V6] {
            let fam_ips: Vec<IpNetwork> = ips
                .iter()
                .filter(|i| i.is_ipv6() == fam.v6)
                .copied()
                .collect();
            if fam_ips.is_empty() {
                continue;
            }
            let fresh = self.runner.run(
                fam.restore_tool,
                &["-w", "--noflush"],
                Some(&setup_restore(fam, &chain, &c, &fam_ips, None)),
            )?;
            if fresh.success {
                continue;
            }
            // Most likely the chain exists (a repeated ADD); if not, the replacing restore
            // fails as well and reports why.
            log::debug!(
                "{} refused a new chain ({}); replacing {chain}",
                fam.restore_tool,
                fresh.stderr.trim()
            );
            let listed = parse_rules(&self.list(fam, Some(POSTROUTING), false)?);
            let stale: Vec<&RuleLine> = listed
                .iter()
                .filter(|r| r.chain == POSTROUTING && r.target.as_deref() == Some(chain.as_str()))
                .collect();
            self.restore(fam, &setup_restore(fam, &chain, &c, &fam_ips, Some(&stale)))?;
        }
        Ok(())
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.teardown_where(att, |_| true)
    }

    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error> {
        let prefix = format!("{}-", network_hash(network));
        let mut keep_hash = HashSet::new();
        let mut keep_ref = HashSet::new();
        for a in valid {
            let a = Attachment {
                network: network.to_string(),
                ..a.clone()
            };
            keep_hash.insert(instance_hash(&a));
            keep_ref.insert(reference_chain(network, &a.container_id));
        }
        self.each_family(|fam| {
            let listed = parse_rules(&self.list(fam, None, true)?);
            let mut doomed = BTreeSet::new();
            for r in &listed {
                let (Some(owner), Some(c)) = (owner(r), r.comment.as_deref()) else {
                    continue;
                };
                let stale = if owner.starts_with(CHAIN_PREFIX) {
                    hash_of_comment(c)
                        .is_some_and(|h| h.starts_with(&prefix) && !keep_hash.contains(h))
                } else if is_reference_chain(owner) {
                    parse_reference_comment(c)
                        .is_some_and(|(net, _)| net == network && !keep_ref.contains(owner))
                } else {
                    false
                };
                if stale {
                    doomed.insert(owner.to_string());
                }
            }
            match delete_restore(&listed, &doomed) {
                Some(text) => self.restore(fam, &text),
                None => Ok(()),
            }
        })
    }

    /// Our chains (by the instance hash in their comments) and the reference's chains (by
    /// chain name) of `network`, from a listing of each family's nat table.
    fn attachments(&self, network: &str) -> Result<Vec<Listed>, Error> {
        let prefix = format!("{}-", network_hash(network));
        let mut found: BTreeMap<(String, &'static str), Listed> = BTreeMap::new();
        for fam in self.present_families()? {
            for r in parse_rules(&self.list(fam, None, true)?) {
                let (Some(owner), Some(c)) = (owner(&r), r.comment.as_deref()) else {
                    continue;
                };
                let (key, layout) = if owner.starts_with(CHAIN_PREFIX) {
                    match hash_of_comment(c).filter(|h| h.starts_with(&prefix)) {
                        Some(h) => (h.to_string(), "iptables"),
                        None => continue,
                    }
                } else if is_reference_chain(owner)
                    && parse_reference_comment(c).is_some_and(|(net, _)| net == network)
                {
                    (owner.to_string(), "iptables (reference plugin)")
                } else {
                    continue;
                };
                let l = found
                    .entry((key.clone(), layout))
                    .or_insert_with(|| Listed {
                        key,
                        comment: Some(c.to_string()),
                        ips: Vec::new(),
                        layout,
                    });
                if r.chain == POSTROUTING
                    && let Some(ip) = r.source.as_deref().and_then(source_ip)
                {
                    l.ips.push(ip);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

/// The chain a rule belongs to: its own chain, or the target of a `POSTROUTING` jump.
fn owner(r: &RuleLine) -> Option<&str> {
    if r.chain == POSTROUTING {
        r.target.as_deref()
    } else {
        Some(r.chain.as_str())
    }
}

/// The address of a `-s a.b.c.d/32` value.
fn source_ip(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.parse().ok()
}

/// Setup restore text for one family. `stale: None` creates the chain (`-N`, which fails
/// when it exists); `Some` re-declares it (`:CHAIN` flushes an existing chain) and deletes
/// the listed old jumps.
fn setup_restore(
    fam: Family,
    chain: &str,
    comment: &str,
    ips: &[IpNetwork],
    stale: Option<&[&RuleLine]>,
) -> String {
    let host = if fam.v6 { 128 } else { 32 };
    let mut s = match stale {
        None => format!("*nat\n-N {chain}\n"),
        Some(_) => format!("*nat\n:{chain} - [0:0]\n"),
    };
    for r in stale.unwrap_or_default() {
        let _ = writeln!(s, "{}", r.delete_line());
    }
    let mut seen = HashSet::new();
    let ips: Vec<&IpNetwork> = ips.iter().filter(|ip| seen.insert(**ip)).collect();
    for ip in &ips {
        let src = format!("{}/{host}", ip.ip());
        let _ = writeln!(
            s,
            "-A {chain} -s {src} -d {}/{} -m comment --comment \"{comment}\" -j ACCEPT",
            ip.network(),
            ip.prefix()
        );
        let _ = writeln!(
            s,
            "-A {chain} -s {src} ! -d {} -m comment --comment \"{comment}\" -j MASQUERADE",
            fam.multicast
        );
    }
    for ip in &ips {
        let _ = writeln!(
            s,
            "-A {POSTROUTING} -s {}/{host} -m comment --comment \"{comment}\" -j {chain}",
            ip.ip()
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// Restore text deleting `doomed` chains (which must exist, jump or not) and every
/// POSTROUTING jump to them; `None` if nothing to do. `:CHAIN - [0:0]` first flushes the
/// chain, which makes `-X` valid whatever rules it holds.
fn delete_restore(listed: &[RuleLine], doomed: &BTreeSet<String>) -> Option<String> {
    if doomed.is_empty() {
        return None;
    }
    let mut s = String::from("*nat\n");
    for c in doomed {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    for r in listed
        .iter()
        .filter(|r| r.chain == POSTROUTING && r.target.as_ref().is_some_and(|t| doomed.contains(t)))
    {
        let _ = writeln!(s, "{}", r.delete_line());
    }
    for c in doomed {
        let _ = writeln!(s, "-X {c}");
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// The chains declared (`-N`) in `iptables -S` output.
fn parse_chains(out: &str) -> HashSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(|c| c.trim().to_string())
        .collect()
}

/// The `-A` lines of `iptables -S` output.
pub(crate) fn parse_rules(out: &str) -> Vec<RuleLine> {
    out.lines()
        .filter(|l| l.starts_with("-A "))
        .filter_map(|l| {
            let toks = tokenize(l);
            let value_of = |flag: &str| {
                toks.iter()
                    .position(|t| t == flag)
                    .and_then(|i| toks.get(i + 1))
                    .cloned()
            };
            Some(RuleLine {
                chain: toks.get(1)?.clone(),
                raw: l.to_string(),
                target: value_of("-j"),
                comment: value_of("--comment"),
                source: value_of("-s"),
            })
        })
        .collect()
}

/// Split an `iptables -S` line into words: whitespace-separated, `"..."` quoted with `\`
/// escapes (the format iptables prints comments in).
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRunner;

    fn att(c: &str, i: &str) -> Attachment {
        Attachment {
            network: "mynet".into(),
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    #[test]
    fn tokenizes_quoted_comments() {
        assert_eq!(
            tokenize(
                r#"-A POSTROUTING -s 10.0.0.9/32 -m comment --comment "name: \"mynet\" id: \"c\"" -j CNI-x"#
            ),
            vec![
                "-A",
                "POSTROUTING",
                "-s",
                "10.0.0.9/32",
                "-m",
                "comment",
                "--comment",
                "name: \"mynet\" id: \"c\"",
                "-j",
                "CNI-x"
            ]
        );
        assert_eq!(tokenize(r#"a "" b"#), vec!["a", "", "b"]);
    }

    #[test]
    fn setup_of_a_new_attachment_lists_nothing() {
        let a = att("cid1", "eth0");
        let ch = iptables_chain(&a);
        let c = iptables_comment(&a);
        let fake = FakeRunner::new();
        let ips: Vec<IpNetwork> = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00:1::5/64".parse().unwrap(),
        ];
        Iptables::new(&fake).setup(&a, &ips).unwrap();
        let expected = format!(
            "$ iptables-restore -w --noflush\n\
             *nat\n\
             -N {ch}\n\
             -A {ch} -s 10.244.1.5/32 -d 10.244.1.0/24 -m comment --comment \"{c}\" -j ACCEPT\n\
             -A {ch} -s 10.244.1.5/32 ! -d 224.0.0.0/4 -m comment --comment \"{c}\" -j MASQUERADE\n\
             -A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"{c}\" -j {ch}\n\
             COMMIT\n\
             $ ip6tables-restore -w --noflush\n\
             *nat\n\
             -N {ch}\n\
             -A {ch} -s fd00:1::5/128 -d fd00:1::/64 -m comment --comment \"{c}\" -j ACCEPT\n\
             -A {ch} -s fd00:1::5/128 ! -d ff00::/8 -m comment --comment \"{c}\" -j MASQUERADE\n\
             -A POSTROUTING -s fd00:1::5/128 -m comment --comment \"{c}\" -j {ch}\n\
             COMMIT\n"
        );
        assert_eq!(fake.transcript(), expected);
    }

    #[test]
    fn repeated_setup_replaces_the_chain_and_its_jumps() {
        let a = att("cid1", "eth0");
        let ch = iptables_chain(&a);
        let c = iptables_comment(&a);
        let fake = FakeRunner::new().without(&["ip6tables", "ip6tables-restore"]);
        // The chain exists: `-N` fails, POSTROUTING is listed, the old jump replaced.
        fake.fail(
            "iptables-restore",
            "iptables-restore v1.8.9 (nf_tables): Chain already exists",
        );
        fake.answer(
            "iptables",
            &format!(
                "-P POSTROUTING ACCEPT\n\
                 -A POSTROUTING -s 10.9.9.9/32 -j MASQUERADE\n\
                 -A POSTROUTING -s 10.244.1.4/32 -m comment --comment \"{c}\" -j {ch}\n"
            ),
        );
        Iptables::new(&fake)
            .setup(&a, &["10.244.1.5/24".parse().unwrap()])
            .unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].args, ["-w", "-t", "nat", "-S", "POSTROUTING"]);
        assert_eq!(
            calls[2].stdin.as_deref().unwrap(),
            format!(
                "*nat\n\
                 :{ch} - [0:0]\n\
                 -D POSTROUTING -s 10.244.1.4/32 -m comment --comment \"{c}\" -j {ch}\n\
                 -A {ch} -s 10.244.1.5/32 -d 10.244.1.0/24 -m comment --comment \"{c}\" -j ACCEPT\n\
                 -A {ch} -s 10.244.1.5/32 ! -d 224.0.0.0/4 -m comment --comment \"{c}\" -j MASQUERADE\n\
                 -A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"{c}\" -j {ch}\n\
                 COMMIT\n"
            )
        );
    }

    #[test]
    fn comments_carry_the_whole_container_id() {
        let cid = "f".repeat(64);
        let a = att(&cid, "eth0");
        let fake = FakeRunner::new().without(&["ip6tables", "ip6tables-restore"]);
        Iptables::new(&fake)
            .setup(&a, &["10.0.0.2/24".parse().unwrap()])
            .unwrap();
        let t = fake.transcript();
        assert_eq!(t.matches(&format!("id: {cid}\"")).count(), 3, "{t}");
    }

    #[test]
    fn setup_v4_only_touches_iptables_only() {
        let fake = FakeRunner::new().without(&["ip6tables", "ip6tables-restore"]);
        Iptables::new(&fake)
            .setup(&att("c", "eth0"), &["10.0.0.2/24".parse().unwrap()])
            .unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].tool, "iptables-restore");
    }

    #[test]
    fn teardown_removes_ours_and_reference_chain() {
        let a = att("cid1", "eth0");
        let ch = iptables_chain(&a);
        let other = iptables_chain(&att("cid2", "eth0"));
        let reference = reference_chain("mynet", "cid1");
        let c = iptables_comment(&a);
        let fake = FakeRunner::new();
        fake.answer(
            "iptables",
            &format!(
                "-P POSTROUTING ACCEPT\n\
                 -N {ch}\n-N {other}\n-N {reference}\n\
                 -A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"{c}\" -j {ch}\n\
                 -A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"x\" -j {other}\n\
                 -A POSTROUTING -s 10.244.1.7/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"cid1\\\"\" -j {reference}\n"
            ),
        );
        fake.fail("ip6tables", "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `nat': Table does not exist");
        Iptables::new(&fake).teardown(&a).unwrap();
        let (first, second) = if ch < reference {
            (&ch, &reference)
        } else {
            (&reference, &ch)
        };
        let jump_ref = format!(
            "-D POSTROUTING -s 10.244.1.7/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"cid1\\\"\" -j {reference}\n"
        );
        let expected = format!(
            "$ iptables -w -t nat -S\n\
             $ iptables-restore -w --noflush\n\
             *nat\n\
             :{first} - [0:0]\n\
             :{second} - [0:0]\n\
             -D POSTROUTING -s 10.244.1.5/32 -m comment --comment \"{c}\" -j {ch}\n\
             {jump_ref}\
             -X {first}\n\
             -X {second}\n\
             COMMIT\n\
             $ ip6tables -w -t nat -S\n"
        );
        assert_eq!(fake.transcript(), expected);
    }

    #[test]
    fn teardown_removes_a_chain_without_jump() {
        // The Go plugin crashed between creating its chain and adding the jump.
        let a = att("cid1", "eth0");
        let reference = reference_chain("mynet", "cid1");
        let fake = FakeRunner::new().without(&["ip6tables"]);
        fake.answer(
            "iptables",
            &format!(
                "-P POSTROUTING ACCEPT\n-N {reference}\n-A {reference} -d 10.0.0.0/24 -j ACCEPT\n"
            ),
        );
        Iptables::new(&fake).teardown(&a).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(
            calls[1].stdin.as_deref(),
            Some(format!("*nat\n:{reference} - [0:0]\n-X {reference}\nCOMMIT\n").as_str())
        );
    }

    #[test]
    fn teardown_skips_families_without_a_nat_table() {
        let a = att("cid1", "eth0");
        let fake = FakeRunner::new();
        Iptables::new(&fake).teardown_where(&a, |_| false).unwrap();
        assert_eq!(fake.transcript(), "");
        Iptables::new(&fake).teardown_where(&a, |v6| v6).unwrap();
        assert_eq!(fake.transcript(), "$ ip6tables -w -t nat -S\n");
    }

    #[test]
    fn teardown_with_nothing_listed_runs_no_restore() {
        let fake = FakeRunner::new();
        Iptables::new(&fake).teardown(&att("c", "eth0")).unwrap();
        assert_eq!(
            fake.transcript(),
            "$ iptables -w -t nat -S\n$ ip6tables -w -t nat -S\n"
        );
    }

    #[test]
    fn teardown_without_tools_reports_missing_tool() {
        let fake = FakeRunner::new().without(&["iptables", "ip6tables"]);
        let err = Iptables::new(&fake)
            .teardown(&att("c", "eth0"))
            .unwrap_err();
        assert!(err.is_tool_not_found());
    }

    #[test]
    fn gc_removes_stale_chains_of_this_network_only() {
        let keep = att("keep", "eth0");
        let gone = att("gone", "eth0");
        let foreign = Attachment {
            network: "othernet".into(),
            ..gone.clone()
        };
        let (kc, gc_, fc) = (
            iptables_chain(&keep),
            iptables_chain(&gone),
            iptables_chain(&foreign),
        );
        let (kcm, gcm, fcm) = (
            iptables_comment(&keep),
            iptables_comment(&gone),
            iptables_comment(&foreign),
        );
        let ref_keep = reference_chain("mynet", "keep");
        let ref_gone = reference_chain("mynet", "old");
        let ref_other = reference_chain("othernet", "old");
        let listing = format!(
            "-P POSTROUTING ACCEPT\n\
             -N {kc}\n-N {gc_}\n-N {fc}\n-N {ref_keep}\n-N {ref_gone}\n-N {ref_other}\n-N CNI-HOSTPORT-MASQ\n\
             -A POSTROUTING -s 10.0.0.1/32 -m comment --comment \"{kcm}\" -j {kc}\n\
             -A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"{gcm}\" -j {gc_}\n\
             -A POSTROUTING -s 10.0.0.3/32 -m comment --comment \"{fcm}\" -j {fc}\n\
             -A POSTROUTING -s 10.0.0.4/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"keep\\\"\" -j {ref_keep}\n\
             -A POSTROUTING -s 10.0.0.5/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"old\\\"\" -j {ref_gone}\n\
             -A POSTROUTING -s 10.0.0.6/32 -m comment --comment \"name: \\\"othernet\\\" id: \\\"old\\\"\" -j {ref_other}\n\
             -A POSTROUTING -m comment --comment \"kube\" -j CNI-HOSTPORT-MASQ\n\
             -A {gc_} -s 10.0.0.2/32 -d 10.0.0.0/24 -m comment --comment \"{gcm}\" -j ACCEPT\n\
             -A {ref_gone} -d 10.0.0.0/24 -m comment --comment \"name: \\\"mynet\\\" id: \\\"old\\\"\" -j ACCEPT\n"
        );
        let fake = FakeRunner::new().without(&["ip6tables"]);
        fake.answer("iptables", &listing);
        Iptables::new(&fake).gc("mynet", &[keep]).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].args, ["-w", "-t", "nat", "-S"]);
        let mut doomed = [gc_.clone(), ref_gone.clone()];
        doomed.sort();
        let expected = format!(
            "*nat\n:{d0} - [0:0]\n:{d1} - [0:0]\n\
             -D POSTROUTING -s 10.0.0.2/32 -m comment --comment \"{gcm}\" -j {gc_}\n\
             -D POSTROUTING -s 10.0.0.5/32 -m comment --comment \"name: \\\"mynet\\\" id: \\\"old\\\"\" -j {ref_gone}\n\
             -X {d0}\n-X {d1}\nCOMMIT\n",
            d0 = doomed[0],
            d1 = doomed[1]
        );
        assert_eq!(calls[1].tool, "iptables-restore");
        assert_eq!(calls[1].stdin.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn setup_failure_carries_stderr() {
        let fake = FakeRunner::new();
        fake.fail("iptables-restore", "iptables-restore: line 2 failed");
        fake.fail("iptables-restore", "iptables-restore: line 3 failed");
        let err = Iptables::new(&fake)
            .setup(&att("c", "eth0"), &["10.0.0.2/24".parse().unwrap()])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("iptables-restore -w --noflush failed"),
            "{msg}"
        );
        assert!(msg.contains("line 3 failed"), "{msg}");
    }
}
