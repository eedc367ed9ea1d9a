//! nftables backend: one `nft -f -` transaction per change, in our own table, and no
//! listing on the ADD/DEL paths.
//!
//! Layout: one nat base chain per attachment, named after its instance hash
//! (`a-<sha512(net)[..16]>-<sha512(ifname:cid)[..16]>`):
//!
//! ```text
//! table inet rcni_masquerade {
//!     chain a-0123456789abcdef-fedcba9876543210 {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 ip daddr != 224.0.0.0/4 masquerade comment "<hash>, net: .., if: .., id: .."
//!     }
//! }
//! ```
//!
//! Because the chain's name *is* the attachment key, every change is a blind transaction
//! whose outcome does not depend on what is already there:
//!
//! * setup: `add table`, `add chain <name> {spec}` (idempotent), `flush chain <name>`, then
//!   one rule per IP. A re-ADD replaces the rules, never duplicates them.
//! * teardown: `add chain <name>`, `flush chain <name>`, `delete chain <name>` (the `add`
//!   makes the `delete` valid whether or not the chain exists; nft 1.0.6 has no `destroy`).
//!   Without `add table` the transaction fails with ENOENT when our table does not exist,
//!   which means there is nothing to remove (and we leave no empty table behind).
//!
//! Neither needs the IPs on teardown, and a re-used IP's new owner lives in its own chain,
//! so the old owner's DEL can never remove it.
//!
//! **Why many base chains cost nothing per packet.** nftables nat chains are not hooked
//! into netfilter one by one: `nf_nat_register_fn` (since Linux 4.18, commit 9971a514ed26
//! "netfilter: nf_nat: add nat type hooks to nat core") registers the nat core once per
//! hook, and the core runs the nat chains of that hook (`nf_nat_inet_fn`) only while the
//! conntrack entry has no nat binding for that direction yet, i.e. for the first packet of
//! a connection. Established packets are rewritten from the binding without evaluating
//! any chain. The first packet walks one chain per pod with one or two rules each, the same
//! work as one chain holding one rule per pod (the previous layout).
//!
//! Deleting anything costs one RCU grace period at the end: the release of the `nft`
//! process's nfnetlink socket flushes nf_tables' deferred destroy work
//! (`nf_tables_trans_destroy_flush_work` in the netlink notifier), which waits for one.
//! Callers that care (the bridge plugin's DEL) overlap it with other kernel waits.
//!
//! GC lists our table once and deletes the network's stale attachment chains in one
//! transaction. Teardown and GC also clean the Go plugin's table `inet cni_plugins_masquerade`
//! (rules in `masq_checks` carrying the same comment hash); that one needs a listing
//! (handles), so it is done only when the table exists (see [`Tables`]).

use crate::hash::{comment, hash_of_comment, instance_hash, network_hash};
use crate::runner::{Runner, SystemRunner, failed, run_ok};
use crate::{Attachment, Error, Masquerade};
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::fmt::Write;

/// Our table (family `inet`).
pub const TABLE: &str = "rcni_masquerade";
/// The Go plugin's table (family `inet`), cleaned on teardown/GC.
pub const REFERENCE_TABLE: &str = "cni_plugins_masquerade";
/// The Go plugin's regular chain holding one rule per attachment IP.
pub const CHAIN: &str = "masq_checks";
/// Prefix of our per-attachment base chains (`a-` + instance hash).
pub const CHAIN_PREFIX: &str = "a-";
/// Spec of every attachment chain.
const CHAIN_SPEC: &str = "{ type nat hook postrouting priority srcnat ; policy accept ; }";

const NFT: &str = "nft";
/// What nft prints when a table or chain named in a command does not exist.
const ENOENT: &str = "No such file or directory";

/// Our base chain for `att`: `a-<instance hash>`.
pub fn chain_name(att: &Attachment) -> String {
    format!("{CHAIN_PREFIX}{}", instance_hash(att))
}

/// The instance hash an attachment chain is named after (`None` for other chains).
pub(crate) fn hash_of_chain(name: &str) -> Option<&str> {
    let h = name.strip_prefix(CHAIN_PREFIX)?;
    (hash_of_comment(h) == Some(h)).then_some(h)
}

/// Which tables exist in the namespace (one `nft -j list tables`), so that cleanup runs
/// only where something can be left: ours, the Go plugin's, and the nat tables that
/// iptables-nft creates (`ip nat`, `ip6 nat`) on first use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tables {
    pub ours: bool,
    pub reference: bool,
    pub ip_nat: bool,
    pub ip6_nat: bool,
}

/// A rule found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedRule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// What `nft -j list table|chain` returned: chain names and rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    pub chains: Vec<String>,
    pub rules: Vec<ListedRule>,
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

    /// `nft -j list tables`.
    pub(crate) fn probe(&self) -> Result<Tables, Error> {
        let out = run_ok(&self.runner, NFT, &["-j", "list", "tables"], None)?;
        parse_tables(&out)
    }

    /// `nft -j list <what>`; empty when the table or chain does not exist.
    fn list(&self, what: &[&str]) -> Result<Listing, Error> {
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        let out = self.runner.run(NFT, &args, None)?;
        if !out.success {
            if out.stderr.contains(ENOENT) {
                return Ok(Listing::default());
            }
            return Err(failed(NFT, &args, &out));
        }
        parse_listing(&out.stdout)
    }

    fn apply(&self, script: &str) -> Result<(), Error> {
        run_ok(&self.runner, NFT, &["-f", "-"], Some(script)).map(drop)
    }

    /// Handles of the Go table's rules whose hash satisfies `doomed`, as delete commands.
    fn reference_deletes(&self, doomed: impl Fn(&str) -> bool) -> Result<String, Error> {
        let listing = self.list(&["chain", "inet", REFERENCE_TABLE, CHAIN])?;
        let mut s = String::new();
        for r in listing
            .rules
            .iter()
            .filter(|r| rule_hash(r).is_some_and(&doomed))
        {
            let _ = writeln!(
                s,
                "delete rule inet {REFERENCE_TABLE} {} handle {}",
                r.chain, r.handle
            );
        }
        Ok(s)
    }

    /// Teardown knowing which tables exist: the blind transaction when our table exists,
    /// plus the Go table's matching rules when that table exists. At most one listing and
    /// one transaction; nothing at all when neither table exists.
    pub(crate) fn teardown_in(&self, att: &Attachment, tables: &Tables) -> Result<(), Error> {
        let mut script = String::new();
        if tables.ours {
            script.push_str(&teardown_script(att));
        }
        if tables.reference {
            let hash = instance_hash(att);
            script.push_str(&self.reference_deletes(|h| h == hash)?);
        }
        if script.is_empty() {
            return Ok(());
        }
        match self.runner.run(NFT, &["-f", "-"], Some(&script))? {
            out if out.success => Ok(()),
            // Our table vanished since the probe (someone deleted it): nothing was left.
            out if !tables.reference && out.stderr.contains(ENOENT) => Ok(()),
            out => {
                log::debug!("{NFT} input was:\n{script}");
                Err(failed(NFT, &["-f", "-"], &out))
            }
        }
    }
}

impl<R: Runner> Masquerade for Nftables<R> {
    /// One `nft -f -`, no listing.
    fn setup(&self, att: &Attachment, ips: &[IpNetwork]) -> Result<(), Error> {
        self.apply(&setup_script(att, ips))
    }

    /// `nft -j list tables`, then [`teardown_in`](Self::teardown_in).
    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        self.teardown_in(att, &self.probe()?)
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
        let ours = self.list(&["table", "inet", TABLE])?;
        let mut script = gc_script(&ours, &doomed);
        script.push_str(&self.reference_deletes(doomed)?);
        if script.is_empty() {
            return Ok(());
        }
        self.apply(&script)
    }
}

fn rule_hash(r: &ListedRule) -> Option<&str> {
    r.comment.as_deref().and_then(hash_of_comment)
}

/// The setup transaction: ensure table and chain, replace the chain's rules by one rule
/// per IP (duplicates dropped).
pub(crate) fn setup_script(att: &Attachment, ips: &[IpNetwork]) -> String {
    let c = comment(att);
    let chain = chain_name(att);
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {TABLE}");
    let _ = writeln!(s, "add chain inet {TABLE} {chain} {CHAIN_SPEC}");
    let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
    let mut seen = HashSet::new();
    for ip in ips.iter().filter(|ip| seen.insert(**ip)) {
        let (fam, multicast) = if ip.is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        let _ = writeln!(
            s,
            "add rule inet {TABLE} {chain} {fam} saddr {} {fam} daddr != {}/{} {fam} daddr != {multicast} masquerade comment \"{c}\"",
            ip.ip(),
            ip.network(),
            ip.prefix()
        );
    }
    s
}

/// The blind teardown transaction (valid whether or not the chain exists; fails with
/// ENOENT only when our table does not exist).
pub(crate) fn teardown_script(att: &Attachment) -> String {
    let chain = chain_name(att);
    format!(
        "add chain inet {TABLE} {chain}\n\
         flush chain inet {TABLE} {chain}\n\
         delete chain inet {TABLE} {chain}\n"
    )
}

/// GC commands for our table: delete the doomed attachment chains, and doomed rules found
/// in any other chain (e.g. the pre-release layout's `masq_checks`).
fn gc_script(listing: &Listing, doomed: &impl Fn(&str) -> bool) -> String {
    let mut s = String::new();
    let mut gone = HashSet::new();
    for chain in &listing.chains {
        if hash_of_chain(chain).is_some_and(doomed) {
            let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
            let _ = writeln!(s, "delete chain inet {TABLE} {chain}");
            gone.insert(chain.as_str());
        }
    }
    for r in &listing.rules {
        if !gone.contains(r.chain.as_str()) && rule_hash(r).is_some_and(doomed) {
            let _ = writeln!(
                s,
                "delete rule inet {TABLE} {} handle {}",
                r.chain, r.handle
            );
        }
    }
    s
}

fn parse_json(json: &str) -> Result<Vec<serde_json::Value>, Error> {
    let parse_err = |reason: String| Error::Parse {
        tool: NFT.to_string(),
        reason,
    };
    let mut v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| parse_err(format!("invalid JSON: {e}")))?;
    match v.get_mut("nftables").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => Ok(items),
        _ => Err(parse_err("no \"nftables\" array".to_string())),
    }
}

/// Parse `nft -j list tables`.
pub(crate) fn parse_tables(json: &str) -> Result<Tables, Error> {
    let mut t = Tables::default();
    for table in parse_json(json)?.iter().filter_map(|i| i.get("table")) {
        let field = |k: &str| table.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        match (field("family"), field("name")) {
            ("inet", TABLE) => t.ours = true,
            ("inet", REFERENCE_TABLE) => t.reference = true,
            ("ip", "nat") => t.ip_nat = true,
            ("ip6", "nat") => t.ip6_nat = true,
            _ => {}
        }
    }
    Ok(t)
}

/// Parse `nft -j list table|chain ..` output into chains and rules.
pub(crate) fn parse_listing(json: &str) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for item in parse_json(json)? {
        if let Some(name) = item
            .get("chain")
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
        {
            listing.chains.push(name.to_string());
        }
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let (Some(chain), Some(handle)) = (
            rule.get("chain").and_then(|c| c.as_str()),
            rule.get("handle").and_then(|h| h.as_u64()),
        ) else {
            return Err(Error::Parse {
                tool: NFT.to_string(),
                reason: format!("rule without chain or handle: {rule}"),
            });
        };
        listing.rules.push(ListedRule {
            chain: chain.to_string(),
            handle,
            comment: rule
                .get("comment")
                .and_then(|c| c.as_str())
                .map(str::to_string),
        });
    }
    Ok(listing)
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

    fn tables(list: &[(&str, &str)]) -> String {
        let items: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, (f, n))| {
                format!(r#"{{"table": {{"family": "{f}", "name": "{n}", "handle": {i}}}}}"#)
            })
            .collect();
        format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6", "json_schema_version": 1}}}}{}{}]}}"#,
            if items.is_empty() { "" } else { ", " },
            items.join(", ")
        )
    }

    /// A listing of `table` with `chains` and rules `(chain, handle, comment)`.
    fn listing(table: &str, chains: &[&str], rules: &[(&str, u64, &str)]) -> String {
        let mut items = vec![format!(
            r#"{{"metainfo": {{"version": "1.0.6", "json_schema_version": 1}}}}"#
        )];
        items.push(format!(
            r#"{{"table": {{"family": "inet", "name": "{table}", "handle": 1}}}}"#
        ));
        for c in chains {
            items.push(format!(
                r#"{{"chain": {{"family": "inet", "table": "{table}", "name": "{c}", "handle": 2}}}}"#
            ));
        }
        for (c, h, cm) in rules {
            items.push(format!(
                r#"{{"rule": {{"family": "inet", "table": "{table}", "chain": "{c}", "handle": {h}, "comment": "{cm}", "expr": []}}}}"#
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    const NO_TABLE: &str = "Error: No such file or directory\nlist chain inet x masq_checks\n";

    #[test]
    fn setup_is_one_blind_transaction() {
        let a = att("cid1", "eth0");
        let c = comment(&a);
        let ch = chain_name(&a);
        assert_eq!(ch, format!("a-{}", instance_hash(&a)));
        let fake = FakeRunner::new();
        let ips: Vec<IpNetwork> = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00:1::5/64".parse().unwrap(),
            "10.244.1.5/24".parse().unwrap(),
        ];
        Nftables::new(&fake).setup(&a, &ips).unwrap();
        let expected = format!(
            "$ nft -f -\n\
             add table inet rcni_masquerade\n\
             add chain inet rcni_masquerade {ch} {{ type nat hook postrouting priority srcnat ; policy accept ; }}\n\
             flush chain inet rcni_masquerade {ch}\n\
             add rule inet rcni_masquerade {ch} ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"{c}\"\n\
             add rule inet rcni_masquerade {ch} ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/64 ip6 daddr != ff00::/8 masquerade comment \"{c}\"\n"
        );
        assert_eq!(fake.transcript(), expected);
        assert!(c.ends_with(", net: mynet, if: eth0, id: cid1"));
    }

    #[test]
    fn teardown_is_blind_when_only_our_table_exists() {
        let a = att("cid1", "eth0");
        let ch = chain_name(&a);
        let fake = FakeRunner::new();
        fake.answer(NFT, &tables(&[("inet", TABLE), ("inet", "filter")]));
        Nftables::new(&fake).teardown(&a).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -j list tables\n\
                 $ nft -f -\n\
                 add chain inet rcni_masquerade {ch}\n\
                 flush chain inet rcni_masquerade {ch}\n\
                 delete chain inet rcni_masquerade {ch}\n"
            )
        );
    }

    #[test]
    fn teardown_cleans_the_reference_table_in_the_same_transaction() {
        let a = att("cid1", "eth0");
        let other_if = att("cid1", "eth1");
        let ch = chain_name(&a);
        let fake = FakeRunner::new();
        fake.answer(NFT, &tables(&[("inet", TABLE), ("inet", REFERENCE_TABLE)]));
        fake.answer(
            NFT,
            &listing(
                REFERENCE_TABLE,
                &[CHAIN],
                &[(CHAIN, 4, &comment(&other_if)), (CHAIN, 9, &comment(&a))],
            ),
        );
        Nftables::new(&fake).teardown(&a).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -j list tables\n\
                 $ nft -j list chain inet cni_plugins_masquerade masq_checks\n\
                 $ nft -f -\n\
                 add chain inet rcni_masquerade {ch}\n\
                 flush chain inet rcni_masquerade {ch}\n\
                 delete chain inet rcni_masquerade {ch}\n\
                 delete rule inet cni_plugins_masquerade masq_checks handle 9\n"
            )
        );
    }

    #[test]
    fn teardown_without_tables_only_probes() {
        let fake = FakeRunner::new();
        fake.answer(NFT, &tables(&[("ip", "filter")]));
        Nftables::new(&fake).teardown(&att("c", "eth0")).unwrap();
        assert_eq!(fake.transcript(), "$ nft -j list tables\n");
    }

    #[test]
    fn teardown_tolerates_a_table_deleted_after_the_probe() {
        let fake = FakeRunner::new();
        fake.answer(NFT, &tables(&[("inet", TABLE)]));
        fake.fail(
            NFT,
            "Error: No such file or directory\nadd chain inet rcni_masquerade a-x\n",
        );
        Nftables::new(&fake).teardown(&att("c", "eth0")).unwrap();
        assert_eq!(fake.calls.borrow().len(), 2);
    }

    #[test]
    fn probe_error_is_reported() {
        let fake = FakeRunner::new();
        fake.fail(
            NFT,
            "Error: Could not process rule: Operation not permitted",
        );
        let err = Nftables::new(&fake)
            .teardown(&att("c", "eth0"))
            .unwrap_err();
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }

    #[test]
    fn gc_keeps_valid_and_other_networks() {
        let valid = att("keep", "eth0");
        let stale = att("gone", "eth0");
        let old_layout = att("older", "eth0");
        let other_net = Attachment {
            network: "othernet".into(),
            ..stale.clone()
        };
        let (vc, sc, oc) = (
            chain_name(&valid),
            chain_name(&stale),
            chain_name(&other_net),
        );
        let fake = FakeRunner::new();
        fake.answer(
            NFT,
            &listing(
                TABLE,
                &[&vc, &sc, &oc, CHAIN, "postrouting"],
                &[
                    (&vc, 2, &comment(&valid)),
                    (&sc, 3, &comment(&stale)),
                    (&oc, 4, &comment(&other_net)),
                    (CHAIN, 5, &comment(&old_layout)),
                    (CHAIN, 6, &comment(&valid)),
                    ("postrouting", 7, "not ours"),
                ],
            ),
        );
        fake.fail(NFT, NO_TABLE);
        Nftables::new(&fake).gc("mynet", &[valid]).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -j list table inet rcni_masquerade\n\
                 $ nft -j list chain inet cni_plugins_masquerade masq_checks\n\
                 $ nft -f -\n\
                 flush chain inet rcni_masquerade {sc}\n\
                 delete chain inet rcni_masquerade {sc}\n\
                 delete rule inet rcni_masquerade masq_checks handle 5\n"
            )
        );
    }

    #[test]
    fn gc_with_nothing_stale_applies_nothing() {
        let fake = FakeRunner::new();
        fake.fail(NFT, NO_TABLE);
        fake.fail(NFT, NO_TABLE);
        Nftables::new(&fake).gc("mynet", &[]).unwrap();
        assert_eq!(fake.calls.borrow().len(), 2);
    }

    #[test]
    fn parsing() {
        assert!(matches!(parse_listing("{"), Err(Error::Parse { .. })));
        assert!(matches!(parse_listing("{}"), Err(Error::Parse { .. })));
        assert!(matches!(parse_tables("[]"), Err(Error::Parse { .. })));
        assert_eq!(
            parse_listing(&listing(TABLE, &[], &[])).unwrap(),
            Listing::default()
        );
        assert_eq!(
            parse_tables(&tables(&[
                ("inet", TABLE),
                ("ip", "nat"),
                ("ip6", "nat"),
                ("inet", REFERENCE_TABLE)
            ]))
            .unwrap(),
            Tables {
                ours: true,
                reference: true,
                ip_nat: true,
                ip6_nat: true
            }
        );
        assert_eq!(parse_tables(&tables(&[])).unwrap(), Tables::default());
        assert_eq!(
            hash_of_chain(&chain_name(&att("c", "eth0"))).map(str::len),
            Some(33)
        );
        assert_eq!(hash_of_chain("a-postrouting"), None);
        assert_eq!(hash_of_chain(CHAIN), None);
    }
}
