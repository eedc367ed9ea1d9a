//! Read-only: which attachments have rules in this network namespace, per backend, as the
//! rules name them. For tools that report leftovers (rcni-doctor); removing them is
//! [`crate::gc_all`]'s job, so a tool never deletes rules by its own reading.
//!
//! Sources, each listed only when its tool is installed:
//!
//! | source | listed with | owner key |
//! |---|---|---|
//! | ours, nftables | `nft -j list table inet rcni_masquerade` | chain `a-<hash>`, or a rule comment's hash |
//! | the Go plugin, nftables | `nft -j list chain inet cni_plugins_masquerade masq_checks` | rule comment's hash |
//! | ours, iptables | `iptables -w -t nat -S` (and `ip6tables`) | comment hash of `RCNI-*` chains and their jumps |
//! | the Go plugin, iptables | same listing | `CNI-<hash>` chain + comment `name: "<net>" id: "<cid>"` |
//!
//! Port mappings ([`RuleKind::PortMapping`]) come from the portmap module's own listing
//! ([`crate::portmap::list_all_with`]); an attachment whose rules do not name their network
//! (the Go plugin's nftables port mappings) is left out: it cannot be attributed.

use std::collections::BTreeSet;

use crate::hash::{
    CHAIN_PREFIX, hash_of_comment, instance_hash, is_reference_chain, network_hash,
    parse_reference_comment, reference_chain,
};
use crate::iptables::parse_rules;
use crate::nft::{self, CHAIN_PREFIX as NFT_CHAIN_PREFIX, Listing, REFERENCE_TABLE, TABLE};
use crate::runner::{Runner, failed};
use crate::{Attachment, Error};

/// What the rules do for their attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RuleKind {
    /// IP masquerade (`ipMasq`).
    Masquerade,
    /// A pod's `hostPort`s (the portmap plugin).
    PortMapping,
}

/// Who programmed the rules, with which tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleSource {
    /// rcni, table `inet rcni_masquerade`.
    Nftables,
    /// rcni, `RCNI-*` chains in the nat table.
    Iptables,
    /// The Go plugins, table `inet cni_plugins_masquerade`.
    ReferenceNftables,
    /// The Go plugins, `CNI-*` chains in the nat table.
    ReferenceIptables,
}

/// How the rules name their attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKey {
    /// `<sha512(network)[..16]>-<sha512(ifname:cid)[..16]>` (ours and the Go nftables
    /// backend's), with the rule comment, whose readable part (`net: .., if: .., id: ..`)
    /// may be cut.
    Instance {
        /// The instance hash.
        hash: String,
        /// The whole comment (empty for a chain found without rules).
        comment: String,
    },
    /// Rules that name their network and container (and maybe interface): the Go iptables
    /// masquerade chains (one per network and container ID) and the port mappings.
    Container {
        /// Network name.
        network: String,
        /// Container ID.
        container_id: String,
        /// Interface name, when the rules tell it (otherwise any of the container's).
        ifname: Option<String>,
    },
}

/// One attachment's rules in one place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleOwner {
    /// What the rules do.
    pub kind: RuleKind,
    /// Who made them.
    pub source: RuleSource,
    /// Where they are, for people: `nft inet rcni_masquerade a-…`, `ip6tables nat CNI-…`.
    pub location: String,
    /// Whose they are.
    pub key: OwnerKey,
}

impl RuleOwner {
    /// Whether the rules belong to network `network`.
    pub fn network_is(&self, network: &str) -> bool {
        match &self.key {
            OwnerKey::Instance { hash, .. } => hash.starts_with(&network_hash(network)),
            OwnerKey::Container { network: n, .. } => n == network,
        }
    }

    /// Whether the rules belong to `att` (for the Go iptables chains: to its container).
    pub fn belongs_to(&self, att: &Attachment) -> bool {
        match &self.key {
            OwnerKey::Instance { hash, .. } => *hash == instance_hash(att),
            OwnerKey::Container {
                network,
                container_id,
                ifname,
            } => {
                *network == att.network
                    && *container_id == att.container_id
                    && ifname.as_ref().is_none_or(|i| *i == att.ifname)
            }
        }
    }
}

/// Every attachment with rules of any kind in this namespace (see the module doc).
pub fn rule_owners<R: Runner>(runner: &R) -> Result<Vec<RuleOwner>, Error> {
    let mut owners = masquerade_owners(runner)?;
    owners.extend(port_mapping_owners(runner)?);
    Ok(owners)
}

/// Attachments with port-mapping rules that name their network and container.
pub fn port_mapping_owners<R: Runner>(runner: &R) -> Result<Vec<RuleOwner>, Error> {
    let listed = crate::portmap::list_all_with(runner)?;
    let mut owners = BTreeSet::new();
    for l in listed {
        let (Some(network), Some(container_id)) = (l.network, l.container_id) else {
            continue;
        };
        let (source, location) = match l.backend {
            crate::Backend::Iptables => (
                // Ours and the reference's are the same rules.
                RuleSource::Iptables,
                format!(
                    "{} nat {}",
                    if l.v6 { "ip6tables" } else { "iptables" },
                    l.chain
                ),
            ),
            crate::Backend::Nftables => {
                let (source, table) = match l.maker {
                    crate::portmap::Maker::Reference => (
                        RuleSource::ReferenceNftables,
                        crate::portmap::NFT_REFERENCE_TABLE,
                    ),
                    _ => (RuleSource::Nftables, crate::portmap::NFT_TABLE),
                };
                (source, format!("nft {table} {}", l.chain))
            }
        };
        owners.insert(RuleOwner {
            kind: RuleKind::PortMapping,
            source,
            location,
            key: OwnerKey::Container {
                network,
                container_id,
                ifname: l.ifname,
            },
        });
    }
    Ok(owners.into_iter().collect())
}

/// Attachments with masquerade rules, from every backend whose tool is installed.
/// `ToolNotFound` when neither `nft` nor `iptables`/`ip6tables` is; other failures are all
/// returned (nothing is listed then: a partial listing would hide leftovers).
pub fn masquerade_owners<R: Runner>(runner: &R) -> Result<Vec<RuleOwner>, Error> {
    let mut owners = BTreeSet::new();
    let mut errors = Vec::new();
    let mut listed_any = false;
    if runner.has("nft") {
        listed_any = true;
        match nft_owners(runner) {
            Ok(o) => owners.extend(o),
            Err(e) => errors.push(e),
        }
    }
    for tool in ["iptables", "ip6tables"] {
        if runner.has(tool) {
            listed_any = true;
            match iptables_owners(runner, tool) {
                Ok(o) => owners.extend(o),
                Err(e) => errors.push(e),
            }
        }
    }
    if !listed_any {
        return Err(Error::ToolNotFound {
            tool: "nft, iptables and ip6tables".into(),
        });
    }
    Error::collect(errors)?;
    Ok(owners.into_iter().collect())
}

/// `nft -j list <what>`; empty when the table or chain does not exist.
fn nft_list<R: Runner>(runner: &R, what: &[&str]) -> Result<Listing, Error> {
    let mut args = vec!["-j", "list"];
    args.extend_from_slice(what);
    let out = runner.run("nft", &args, None)?;
    if !out.success {
        if out.stderr.contains("No such file or directory") {
            return Ok(Listing::default());
        }
        return Err(failed("nft", &args, &out));
    }
    nft::parse_listing(&out.stdout)
}

fn nft_owners<R: Runner>(runner: &R) -> Result<Vec<RuleOwner>, Error> {
    let mut out = Vec::new();
    let owner = |source, table: &str, chain: &str, hash: &str, comment: &str| RuleOwner {
        kind: RuleKind::Masquerade,
        source,
        location: format!("nft inet {table} {chain}"),
        key: OwnerKey::Instance {
            hash: hash.to_owned(),
            comment: comment.to_owned(),
        },
    };
    let ours = nft_list(runner, &["table", "inet", TABLE])?;
    for chain in &ours.chains {
        // A chain named after its attachment counts even when it is empty.
        if let Some(h) = nft::hash_of_chain(chain) {
            let comment = ours
                .rules
                .iter()
                .find(|r| &r.chain == chain)
                .and_then(|r| r.comment.clone())
                .unwrap_or_default();
            out.push(owner(RuleSource::Nftables, TABLE, chain, h, &comment));
        }
    }
    for r in &ours.rules {
        let in_own_chain = r.chain.starts_with(NFT_CHAIN_PREFIX);
        if let (false, Some(c)) = (in_own_chain, r.comment.as_deref())
            && let Some(h) = hash_of_comment(c)
        {
            out.push(owner(RuleSource::Nftables, TABLE, &r.chain, h, c));
        }
    }
    let go = nft_list(runner, &["chain", "inet", REFERENCE_TABLE, nft::CHAIN])?;
    for r in &go.rules {
        if let Some(c) = r.comment.as_deref()
            && let Some(h) = hash_of_comment(c)
        {
            out.push(owner(
                RuleSource::ReferenceNftables,
                REFERENCE_TABLE,
                &r.chain,
                h,
                c,
            ));
        }
    }
    Ok(out)
}

fn iptables_owners<R: Runner>(runner: &R, tool: &str) -> Result<Vec<RuleOwner>, Error> {
    let args = ["-w", "-t", "nat", "-S"];
    let listed = runner.run(tool, &args, None)?;
    if !listed.success {
        // No nat table (legacy iptables before first use): nothing to list.
        if listed.stderr.contains("does not exist") {
            return Ok(Vec::new());
        }
        return Err(failed(tool, &args, &listed));
    }
    let mut out = Vec::new();
    for r in parse_rules(&listed.stdout) {
        // The chain a rule belongs to: its own, or the one a POSTROUTING rule jumps to.
        let owner = if r.chain == "POSTROUTING" {
            r.target.as_deref()
        } else {
            Some(r.chain.as_str())
        };
        let (Some(chain), Some(c)) = (owner, r.comment.as_deref()) else {
            continue;
        };
        let (source, key) = if chain.starts_with(CHAIN_PREFIX) {
            let Some(h) = hash_of_comment(c) else {
                continue;
            };
            (
                RuleSource::Iptables,
                OwnerKey::Instance {
                    hash: h.to_owned(),
                    comment: c.to_owned(),
                },
            )
        } else if is_reference_chain(chain) {
            // Only a chain whose name is the hash of what its comment says is attributed.
            match parse_reference_comment(c) {
                Some((net, cid)) if reference_chain(net, cid) == chain => (
                    RuleSource::ReferenceIptables,
                    OwnerKey::Container {
                        network: net.to_owned(),
                        container_id: cid.to_owned(),
                        ifname: None,
                    },
                ),
                _ => continue,
            }
        } else {
            continue;
        };
        out.push(RuleOwner {
            kind: RuleKind::Masquerade,
            source,
            location: format!("{tool} nat {chain}"),
            key,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{comment, iptables_chain};
    use crate::nft::chain_name;
    use crate::runner::fake::FakeRunner;

    fn att(net: &str, c: &str) -> Attachment {
        Attachment {
            network: net.into(),
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    fn nft_table(table: &str, chains: &[&str], rules: &[(&str, &str)]) -> String {
        let mut items = vec![format!(
            r#"{{"table": {{"family": "inet", "name": "{table}", "handle": 1}}}}"#
        )];
        for c in chains {
            items.push(format!(
                r#"{{"chain": {{"family": "inet", "table": "{table}", "name": "{c}", "handle": 2}}}}"#
            ));
        }
        for (i, (c, cm)) in rules.iter().enumerate() {
            items.push(format!(
                r#"{{"rule": {{"family": "inet", "table": "{table}", "chain": "{c}", "handle": {}, "comment": "{cm}", "expr": []}}}}"#,
                i + 3
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    #[test]
    fn lists_every_backend_and_attributes_owners() {
        let a = att("cbr0", "c1");
        let b = att("cbr0", "c2");
        let go = att("cbr0", "c3");
        let other = att("othernet", "c4");
        let fake = FakeRunner::new();
        let (ca, cb) = (chain_name(&a), chain_name(&b));
        fake.answer(
            "nft",
            &nft_table(
                TABLE,
                &[&ca, &cb, "masq_checks"],
                &[(&ca, &comment(&a)), ("masq_checks", &comment(&other))],
            ),
        );
        fake.answer(
            "nft",
            &nft_table(
                REFERENCE_TABLE,
                &["masq_checks"],
                &[("masq_checks", &comment(&go))],
            ),
        );
        let ours = iptables_chain(&a);
        let goc = reference_chain("cbr0", "c3");
        fake.answer(
            "iptables",
            &format!(
                "-P POSTROUTING ACCEPT\n-N {ours}\n-N {goc}\n-N CNI-HOSTPORT-DNAT\n\
                 -A POSTROUTING -s 10.244.1.2/32 -m comment --comment \"{ca}\" -j {ours}\n\
                 -A {ours} -s 10.244.1.2/32 -m comment --comment \"{ca}\" -j MASQUERADE\n\
                 -A POSTROUTING -s 10.244.1.3/32 -m comment --comment \"name: \\\"cbr0\\\" id: \\\"c3\\\"\" -j {goc}\n\
                 -A POSTROUTING -s 10.244.1.4/32 -m comment --comment \"name: \\\"cbr0\\\" id: \\\"forged\\\"\" -j {goc}\n\
                 -A POSTROUTING -m comment --comment \"kube\" -j KUBE-POSTROUTING\n",
                ca = comment(&a)
            ),
        );
        fake.fail(
            "ip6tables",
            "ip6tables v1.8.9 (nf_tables): table `nat' does not exist\n",
        );
        let owners = masquerade_owners(&fake).unwrap();
        let show: Vec<(RuleSource, &str, bool, bool)> = owners
            .iter()
            .map(|o| {
                (
                    o.source,
                    o.location.as_str(),
                    o.network_is("cbr0"),
                    [&a, &b, &go].iter().any(|x| o.belongs_to(x)),
                )
            })
            .collect();
        let loc_a = format!("nft inet rcni_masquerade {ca}");
        let loc_b = format!("nft inet rcni_masquerade {cb}");
        let ipt_a = format!("iptables nat {ours}");
        let ipt_go = format!("iptables nat {goc}");
        let mut want = vec![
            (RuleSource::Nftables, loc_a.as_str(), true, true),
            (RuleSource::Nftables, loc_b.as_str(), true, true),
            (
                RuleSource::Nftables,
                "nft inet rcni_masquerade masq_checks",
                false,
                false,
            ),
            (RuleSource::Iptables, ipt_a.as_str(), true, true),
            (
                RuleSource::ReferenceNftables,
                "nft inet cni_plugins_masquerade masq_checks",
                true,
                true,
            ),
            (RuleSource::ReferenceIptables, ipt_go.as_str(), true, true),
        ];
        let mut got = show.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // The empty chain of b has no comment; a's has one.
        let b_owner = owners.iter().find(|o| o.location == loc_b).unwrap();
        assert!(b_owner.belongs_to(&b) && !b_owner.belongs_to(&a));
    }

    #[test]
    fn missing_tables_and_tools() {
        let fake = FakeRunner::new().without(&["iptables", "ip6tables"]);
        fake.fail("nft", "Error: No such file or directory\n");
        fake.fail("nft", "Error: No such file or directory\n");
        assert!(masquerade_owners(&fake).unwrap().is_empty());

        let none = FakeRunner::new().without(&["nft", "iptables", "ip6tables"]);
        assert!(masquerade_owners(&none).unwrap_err().is_tool_not_found());

        let broken = FakeRunner::new().without(&["nft", "ip6tables"]);
        broken.fail("iptables", "iptables: Permission denied\n");
        let err = rule_owners(&broken).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }
}
