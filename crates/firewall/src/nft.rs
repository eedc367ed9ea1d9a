//! nftables backend: one `nft -f -` transaction per change, in our own table.
//!
//! Layout (mirrors the Go plugin's `inet cni_plugins_masquerade`, under our own name):
//!
//! ```text
//! table inet rcni_masquerade {
//!     chain masq_checks {
//!         ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 masquerade comment "<hash>, net: .., if: .., id: .."
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return
//!         ip6 daddr ff00::/8 return
//!         goto masq_checks
//!     }
//! }
//! ```
//!
//! Setup lists `masq_checks` (`nft -j list chain`), then in one transaction: creates the
//! table and chains (`add` is idempotent), rebuilds the base chain, deletes the rules that
//! carry this attachment's hash, and adds one rule per IP. Teardown and GC list the chain and
//! delete by handle in one transaction; they also clean the Go plugin's table, whose rules use
//! the same hash format.

use crate::hash::{comment, hash_of_comment, instance_hash, network_hash};
use crate::runner::{Runner, SystemRunner, run_ok};
use crate::{Attachment, Error, Masquerade};
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::fmt::Write;

/// Our table (family `inet`).
pub const TABLE: &str = "rcni_masquerade";
/// The Go plugin's table (family `inet`), cleaned on teardown/GC.
pub const REFERENCE_TABLE: &str = "cni_plugins_masquerade";
/// Regular chain holding one rule per attachment IP (same name in both tables).
pub const CHAIN: &str = "masq_checks";
/// Base chain (nat hook postrouting, priority srcnat).
pub const BASE_CHAIN: &str = "postrouting";

const NFT: &str = "nft";

/// A rule found in a `masq_checks` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedRule {
    pub handle: u64,
    pub comment: Option<String>,
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

    /// Rules of `table`'s `masq_checks`; empty when the table or chain does not exist.
    fn list(&self, table: &str) -> Result<Vec<ListedRule>, Error> {
        let args = ["-j", "list", "chain", "inet", table, CHAIN];
        let out = self.runner.run(NFT, &args, None)?;
        if !out.success {
            if out.stderr.contains("No such file or directory") {
                return Ok(Vec::new());
            }
            return Err(crate::runner::failed(NFT, &args, &out));
        }
        parse_listing(&out.stdout)
    }

    fn apply(&self, script: &str) -> Result<(), Error> {
        run_ok(&self.runner, NFT, &["-f", "-"], Some(script)).map(drop)
    }

    /// Delete, in both tables, the rules whose hash satisfies `doomed`. One transaction.
    fn delete_matching(&self, doomed: impl Fn(&str) -> bool) -> Result<(), Error> {
        let mut victims = Vec::new();
        for table in [TABLE, REFERENCE_TABLE] {
            for r in self.list(table)? {
                if r.comment
                    .as_deref()
                    .and_then(hash_of_comment)
                    .is_some_and(&doomed)
                {
                    victims.push((table, r.handle));
                }
            }
        }
        if victims.is_empty() {
            return Ok(());
        }
        self.apply(&delete_script(&victims))
    }
}

impl<R: Runner> Masquerade for Nftables<R> {
    fn setup(&self, att: &Attachment, ips: &[IpNetwork]) -> Result<(), Error> {
        let hash = instance_hash(att);
        let stale: Vec<u64> = self
            .list(TABLE)?
            .into_iter()
            .filter(|r| r.comment.as_deref().and_then(hash_of_comment) == Some(hash.as_str()))
            .map(|r| r.handle)
            .collect();
        self.apply(&setup_script(att, ips, &stale))
    }

    fn teardown(&self, att: &Attachment) -> Result<(), Error> {
        let hash = instance_hash(att);
        self.delete_matching(|h| h == hash)
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
        self.delete_matching(|h| h.starts_with(&prefix) && !keep.contains(h))
    }
}

/// The setup transaction: ensure table/chains, rebuild the base chain, replace the
/// attachment's rules (`stale` handles in [`TABLE`]'s `masq_checks`) by one rule per IP.
pub(crate) fn setup_script(att: &Attachment, ips: &[IpNetwork], stale: &[u64]) -> String {
    let c = comment(att);
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("add table inet {TABLE}"));
    line(format!("add chain inet {TABLE} {CHAIN}"));
    line(format!(
        "add chain inet {TABLE} {BASE_CHAIN} {{ type nat hook postrouting priority srcnat ; }}"
    ));
    line(format!("flush chain inet {TABLE} {BASE_CHAIN}"));
    line(format!(
        "add rule inet {TABLE} {BASE_CHAIN} ip daddr 224.0.0.0/4 return"
    ));
    line(format!(
        "add rule inet {TABLE} {BASE_CHAIN} ip6 daddr ff00::/8 return"
    ));
    line(format!("add rule inet {TABLE} {BASE_CHAIN} goto {CHAIN}"));
    for h in stale {
        line(format!("delete rule inet {TABLE} {CHAIN} handle {h}"));
    }
    let mut seen = HashSet::new();
    for ip in ips.iter().filter(|ip| seen.insert(**ip)) {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        line(format!(
            "add rule inet {TABLE} {CHAIN} {fam} saddr {} {fam} daddr != {}/{} masquerade comment \"{c}\"",
            ip.ip(),
            ip.network(),
            ip.prefix()
        ));
    }
    s
}

/// One transaction deleting rules by (table, handle) from `masq_checks`.
pub(crate) fn delete_script(victims: &[(&str, u64)]) -> String {
    let mut s = String::new();
    for (table, handle) in victims {
        let _ = writeln!(s, "delete rule inet {table} {CHAIN} handle {handle}");
    }
    s
}

/// Parse `nft -j list chain ..` output into the chain's rules.
pub(crate) fn parse_listing(json: &str) -> Result<Vec<ListedRule>, Error> {
    let parse_err = |reason: String| Error::Parse {
        tool: NFT.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| parse_err(format!("invalid JSON: {e}")))?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| parse_err("no \"nftables\" array".to_string()))?;
    let mut rules = Vec::new();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let handle = rule
            .get("handle")
            .and_then(|h| h.as_u64())
            .ok_or_else(|| parse_err(format!("rule without handle: {rule}")))?;
        let comment = rule
            .get("comment")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        rules.push(ListedRule { handle, comment });
    }
    Ok(rules)
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

    fn listing(rules: &[(u64, &str)]) -> String {
        let rules: Vec<String> = rules
            .iter()
            .map(|(h, c)| {
                format!(
                    r#"{{"rule": {{"family": "inet", "table": "{TABLE}", "chain": "{CHAIN}", "handle": {h}, "comment": "{c}", "expr": []}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6", "json_schema_version": 1}}}}, {{"chain": {{"family": "inet", "table": "{TABLE}", "name": "{CHAIN}", "handle": 1}}}}{}{}]}}"#,
            if rules.is_empty() { "" } else { ", " },
            rules.join(", ")
        )
    }

    const NO_TABLE: &str = "Error: No such file or directory\nlist chain inet x masq_checks\n";

    #[test]
    fn setup_transaction_dual_stack_replaces_stale() {
        let a = att("cid1", "eth0");
        let c = comment(&a);
        let fake = FakeRunner::new();
        fake.answer(
            NFT,
            &listing(&[(7, &c), (8, "ffffffffffffffff-0000000000000000, x")]),
        );
        let nft = Nftables::new(&fake);
        let ips: Vec<IpNetwork> = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00:1::5/64".parse().unwrap(),
        ];
        nft.setup(&a, &ips).unwrap();
        let expected = format!(
            "$ nft -j list chain inet rcni_masquerade masq_checks\n\
             $ nft -f -\n\
             add table inet rcni_masquerade\n\
             add chain inet rcni_masquerade masq_checks\n\
             add chain inet rcni_masquerade postrouting {{ type nat hook postrouting priority srcnat ; }}\n\
             flush chain inet rcni_masquerade postrouting\n\
             add rule inet rcni_masquerade postrouting ip daddr 224.0.0.0/4 return\n\
             add rule inet rcni_masquerade postrouting ip6 daddr ff00::/8 return\n\
             add rule inet rcni_masquerade postrouting goto masq_checks\n\
             delete rule inet rcni_masquerade masq_checks handle 7\n\
             add rule inet rcni_masquerade masq_checks ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 masquerade comment \"{c}\"\n\
             add rule inet rcni_masquerade masq_checks ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/64 masquerade comment \"{c}\"\n"
        );
        assert_eq!(fake.transcript(), expected);
        assert!(c.ends_with(", net: mynet, if: eth0, id: cid1"));
    }

    #[test]
    fn setup_on_fresh_node_has_no_deletes() {
        let fake = FakeRunner::new();
        fake.fail(NFT, NO_TABLE);
        Nftables::new(&fake)
            .setup(&att("c", "eth0"), &["10.0.0.2/32".parse().unwrap()])
            .unwrap();
        let t = fake.transcript();
        assert!(!t.contains("delete"));
        assert!(t.contains("ip saddr 10.0.0.2 ip daddr != 10.0.0.2/32 masquerade"));
    }

    #[test]
    fn teardown_deletes_only_this_attachment_in_both_tables() {
        let a = att("cid1", "eth0");
        let other_if = att("cid1", "eth1");
        let fake = FakeRunner::new();
        fake.answer(
            NFT,
            &listing(&[(4, &comment(&other_if)), (5, &comment(&a))]),
        );
        fake.answer(NFT, &listing(&[(9, &comment(&a))]));
        Nftables::new(&fake).teardown(&a).unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -j list chain inet rcni_masquerade masq_checks\n\
             $ nft -j list chain inet cni_plugins_masquerade masq_checks\n\
             $ nft -f -\n\
             delete rule inet rcni_masquerade masq_checks handle 5\n\
             delete rule inet cni_plugins_masquerade masq_checks handle 9\n"
        );
    }

    #[test]
    fn teardown_without_tables_is_a_noop() {
        let fake = FakeRunner::new();
        fake.fail(NFT, NO_TABLE);
        fake.fail(NFT, NO_TABLE);
        Nftables::new(&fake).teardown(&att("c", "eth0")).unwrap();
        assert_eq!(fake.calls.borrow().len(), 2);
    }

    #[test]
    fn listing_error_is_reported() {
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
        let other_net = Attachment {
            network: "othernet".into(),
            ..stale.clone()
        };
        let fake = FakeRunner::new();
        fake.answer(
            NFT,
            &listing(&[
                (2, &comment(&valid)),
                (3, &comment(&stale)),
                (4, &comment(&other_net)),
                (5, "not ours"),
            ]),
        );
        fake.fail(NFT, NO_TABLE);
        Nftables::new(&fake).gc("mynet", &[valid]).unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -j list chain inet rcni_masquerade masq_checks\n\
             $ nft -j list chain inet cni_plugins_masquerade masq_checks\n\
             $ nft -f -\n\
             delete rule inet rcni_masquerade masq_checks handle 3\n"
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(matches!(parse_listing("{"), Err(Error::Parse { .. })));
        assert!(matches!(parse_listing("{}"), Err(Error::Parse { .. })));
        assert_eq!(parse_listing(&listing(&[])).unwrap(), vec![]);
    }
}
