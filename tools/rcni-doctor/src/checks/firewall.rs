//! The firewall: `forward-drop` (read with `nft` and `iptables`), `leftover-rules` (through
//! the firewall crate's listing).

use std::collections::HashSet;

use firewall::{Masquerade, Runner};
use ipnetwork::IpNetwork;
use serde_json::Value;

use super::state::live_attachments;
use super::{check, count, list};
use crate::Context;
use crate::finding::{CheckResult, Finding, Id, Outcome, Repair};
use crate::network::Config;

/// A FORWARD hook that drops what it does not accept, and accepts nothing of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dropping {
    /// Where: `iptables filter FORWARD`, `nft inet filter forward`.
    chain: String,
    /// How to add the accept rules by hand.
    remedy: String,
}

/// One chain of a ruleset, tool-independent.
#[derive(Debug, Clone, Default)]
struct Chain {
    family: String,
    table: String,
    name: String,
    /// A base chain on the forward hook.
    forward_hook: bool,
    policy_drop: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    /// Source/destination prefixes it matches (positive matches only).
    addrs: Vec<IpNetwork>,
    /// Interfaces it matches (`-i`/`-o`, `iifname`/`oifname`).
    ifaces: Vec<String>,
    /// Anything else it matches on.
    other_matches: bool,
    verdict: Verdict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Verdict {
    Accept,
    Drop,
    Jump(String),
    #[default]
    Other,
}

impl Rule {
    /// Accepts the network's traffic: an accept matching a prefix that covers it, or the
    /// pods' bridge.
    fn accepts(&self, net: IpNetwork, bridge: Option<&str>) -> bool {
        self.verdict == Verdict::Accept
            && (self.addrs.iter().any(|p| {
                p.is_ipv4() == net.is_ipv4() && p.prefix() <= net.prefix() && p.contains(net.ip())
            }) || bridge.is_some_and(|b| self.ifaces.iter().any(|i| i == b)))
    }

    /// Drops everything that reaches it.
    fn drops_all(&self) -> bool {
        self.verdict == Verdict::Drop
            && self.addrs.is_empty()
            && self.ifaces.is_empty()
            && !self.other_matches
    }
}

/// Base chains on the forward hook of `chains` that drop by default (policy or a final
/// catch-all drop) and accept nothing of `net` (following jumps).
fn dropping(chains: &[Chain], net: IpNetwork, bridge: Option<&str>) -> Vec<String> {
    let family_ok = |f: &str| {
        matches!(
            (f, net.is_ipv4()),
            ("ip" | "inet", true) | ("ip6" | "inet", false)
        )
    };
    let mut out = Vec::new();
    for base in chains
        .iter()
        .filter(|c| c.forward_hook && family_ok(&c.family))
    {
        if !(base.policy_drop || base.rules.iter().any(Rule::drops_all)) {
            continue;
        }
        let mut seen = HashSet::new();
        let mut todo = vec![base];
        let mut accepted = false;
        while let Some(c) = todo.pop() {
            if !seen.insert(&c.name) {
                continue;
            }
            for r in &c.rules {
                if r.accepts(net, bridge) {
                    accepted = true;
                }
                if let Verdict::Jump(t) = &r.verdict
                    && let Some(next) = chains
                        .iter()
                        .find(|x| &x.name == t && x.table == c.table && x.family == c.family)
                {
                    todo.push(next);
                }
            }
        }
        if !accepted {
            out.push(format!("{} {} {}", base.family, base.table, base.name));
        }
    }
    out
}

/// `nft -j list ruleset` as chains.
fn nft_chains(json: &str) -> Result<Vec<Chain>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("nft -j output: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft -j output has no \"nftables\" array")?;
    let s = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut chains: Vec<Chain> = Vec::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            chains.push(Chain {
                family: s(c, "family"),
                table: s(c, "table"),
                name: s(c, "name"),
                forward_hook: s(c, "hook") == "forward" && s(c, "type") == "filter",
                policy_drop: s(c, "policy") == "drop",
                rules: Vec::new(),
            });
        } else if let Some(r) = item.get("rule") {
            let (family, table, chain) = (s(r, "family"), s(r, "table"), s(r, "chain"));
            let rule = nft_rule(r.get("expr").and_then(Value::as_array));
            if let Some(c) = chains
                .iter_mut()
                .find(|c| c.family == family && c.table == table && c.name == chain)
            {
                c.rules.push(rule);
            }
        }
    }
    Ok(chains)
}

fn nft_rule(exprs: Option<&Vec<Value>>) -> Rule {
    let mut rule = Rule::default();
    for e in exprs.into_iter().flatten() {
        if e.get("accept").is_some() {
            rule.verdict = Verdict::Accept;
        } else if e.get("drop").is_some() || e.get("reject").is_some() {
            rule.verdict = Verdict::Drop;
        } else if let Some(t) = e
            .get("jump")
            .or_else(|| e.get("goto"))
            .and_then(|j| j.get("target"))
            .and_then(Value::as_str)
        {
            rule.verdict = Verdict::Jump(t.to_owned());
        } else if let Some(m) = e.get("match") {
            let positive = matches!(m.get("op").and_then(Value::as_str), Some("==" | "in"));
            let left = m.get("left").unwrap_or(&Value::Null);
            let right = m.get("right").unwrap_or(&Value::Null);
            let field = left
                .get("payload")
                .and_then(|p| p.get("field"))
                .and_then(Value::as_str);
            let meta = left
                .get("meta")
                .and_then(|p| p.get("key"))
                .and_then(Value::as_str);
            match (positive, field, meta) {
                (true, Some("saddr" | "daddr"), _) => rule.addrs.extend(nft_prefixes(right)),
                (true, _, Some("iifname" | "oifname")) => {
                    rule.ifaces.extend(right.as_str().map(str::to_owned));
                }
                _ => rule.other_matches = true,
            }
        } else if e.get("counter").is_none() && e.get("log").is_none() {
            rule.other_matches |= e.get("xt").is_some();
        }
    }
    rule
}

/// The prefixes an nft match's right-hand side names (a prefix, an address, a set of them).
fn nft_prefixes(right: &Value) -> Vec<IpNetwork> {
    if let Some(set) = right.get("set").and_then(Value::as_array) {
        return set.iter().flat_map(nft_prefixes).collect();
    }
    if let Some(p) = right.get("prefix") {
        let addr = p.get("addr").and_then(Value::as_str).unwrap_or_default();
        let len = p.get("len").and_then(Value::as_u64).unwrap_or(0);
        return format!("{addr}/{len}").parse().into_iter().collect();
    }
    right
        .as_str()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .map(IpNetwork::from)
        .into_iter()
        .collect()
}

/// `iptables -S` (filter table) as chains of family `family` (`ip` or `ip6`).
fn iptables_chains(listing: &str, family: &str) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::new();
    let chain = |chains: &mut Vec<Chain>, name: &str| -> usize {
        if let Some(i) = chains.iter().position(|c| c.name == name) {
            return i;
        }
        chains.push(Chain {
            family: family.to_owned(),
            table: "filter".into(),
            name: name.to_owned(),
            forward_hook: name == "FORWARD",
            ..Chain::default()
        });
        chains.len() - 1
    };
    for line in listing.lines() {
        let w = firewall::iptables_words(line);
        match w.first().map(String::as_str) {
            Some("-P") if w.len() >= 3 => {
                let i = chain(&mut chains, &w[1]);
                chains[i].policy_drop = w[2] == "DROP";
            }
            Some("-N") if w.len() >= 2 => {
                chain(&mut chains, &w[1]);
            }
            Some("-A") if w.len() >= 2 => {
                let i = chain(&mut chains, &w[1]);
                chains[i].rules.push(iptables_rule(&w[2..]));
            }
            _ => {}
        }
    }
    chains
}

fn iptables_rule(words: &[String]) -> Rule {
    let mut rule = Rule::default();
    let mut negate = false;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "!" => {
                negate = true;
                continue;
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let v = it.next().and_then(|a| a.parse::<IpNetwork>().ok());
                match (negate, v) {
                    (false, Some(p)) => rule.addrs.push(p),
                    _ => rule.other_matches = true,
                }
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => match (negate, it.next()) {
                (false, Some(i)) => rule.ifaces.push(i.clone()),
                _ => rule.other_matches = true,
            },
            "-j" | "--jump" | "-g" | "--goto" => {
                rule.verdict = match it.next().map(String::as_str) {
                    Some("ACCEPT") => Verdict::Accept,
                    Some("DROP" | "REJECT") => Verdict::Drop,
                    // A user chain (followed when it exists) or another target (RETURN, LOG).
                    Some(t) => Verdict::Jump(t.to_owned()),
                    None => Verdict::Other,
                };
                // Target options (--reject-with ...) follow; nothing after matters here.
                break;
            }
            "-m" => {
                // `-m comment --comment x` matches everything; any other module restricts.
                if it.next().map(String::as_str) != Some("comment") {
                    rule.other_matches = true;
                }
            }
            "--comment" => {
                it.next();
            }
            _ => rule.other_matches = true,
        }
        negate = false;
    }
    rule
}

/// Runs `tool args` through the doctor's runner, stdout or a sentence.
fn listing(ctx: &Context, tool: &str, args: &[&str]) -> Result<String, String> {
    match ctx.runner.run(tool, args, None) {
        Ok(o) if o.success => Ok(o.stdout),
        Ok(o) => Err(format!(
            "{tool} {} failed: {}",
            args.join(" "),
            o.stderr.trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub fn forward_drop(ctx: &Context) -> CheckResult {
    check("FORWARD chain", || {
        let env = ctx.env()?;
        let nets: Vec<IpNetwork> = env
            .networks
            .iter()
            .chain(&env.ipv6_networks)
            .copied()
            .collect();
        let runner = &ctx.runner;
        let has_nft = runner.has("nft");
        let mut chains = Vec::new();
        let mut sources = Vec::new();
        if has_nft {
            let json =
                listing(ctx, "nft", &["-j", "list", "ruleset"]).map_err(Outcome::Unchecked)?;
            chains.extend(nft_chains(&json).map_err(Outcome::Unchecked)?);
            sources.push("nft");
        }
        // iptables-nft rules are nftables rules (nft lists them); legacy ones are not.
        let legacy = runner.has("iptables")
            && (!has_nft || listing(ctx, "iptables", &["-V"]).is_ok_and(|v| v.contains("legacy")));
        if legacy {
            for (tool, family, v6) in [("iptables", "ip", false), ("ip6tables", "ip6", true)] {
                if !nets.iter().any(|n| n.is_ipv6() == v6) || !runner.has(tool) {
                    continue;
                }
                let out = listing(ctx, tool, &["-w", "-t", "filter", "-S"])
                    .map_err(Outcome::Unchecked)?;
                chains.extend(iptables_chains(&out, family));
                sources.push(tool);
            }
        }
        if sources.is_empty() {
            return Err(Outcome::Unchecked(
                "neither nft nor iptables is on PATH, so the firewall cannot be read (the \
                 kernel may still filter)"
                    .into(),
            ));
        }
        let bridge = ctx.net.bridge.as_deref();
        let mut bad: Vec<Dropping> = Vec::new();
        for net in &nets {
            for chain in dropping(&chains, *net, bridge) {
                let (fam, addr) = if net.is_ipv4() {
                    ("ip", "iptables")
                } else {
                    ("ip6", "ip6tables")
                };
                let remedy = if chain.ends_with(" filter FORWARD") {
                    format!(
                        "{addr} -I FORWARD -s {net} -j ACCEPT; {addr} -I FORWARD -d {net} -j ACCEPT"
                    )
                } else {
                    format!(
                        "nft insert rule {chain} {fam} saddr {net} accept; nft insert rule {chain} {fam} daddr {net} accept"
                    )
                };
                bad.push(Dropping {
                    chain: format!("the forward chain {chain} (for {net})"),
                    remedy,
                });
            }
        }
        if bad.is_empty() {
            return Ok(Outcome::Pass(format!(
                "forwarded pod traffic is not dropped (read with {})",
                sources.join(", ")
            )));
        }
        let chains: Vec<String> = bad.iter().map(|d| d.chain.clone()).collect();
        let remedies: Vec<String> = bad.iter().map(|d| d.remedy.clone()).collect();
        Ok(Outcome::Found(Finding::new(
            Id::ForwardDrop,
            format!(
                "{} drops what it does not accept (Docker sets iptables -P FORWARD DROP) and \
                 nothing there accepts the pod network: pods cannot reach pods on other nodes, \
                 nor be reached from them. Add: {}",
                list(&chains, 3),
                remedies.join("; ")
            ),
        )))
    })
}

/// Whose rules these are, as the listing tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// The instance hash (ours, the Go nftables backend) or the Go iptables chain name.
    Key(String),
    /// Port mappings that name their container (and maybe interface).
    Container {
        container_id: String,
        ifname: Option<String>,
    },
}

/// One attachment's rules of one kind in one place.
#[derive(Debug, Clone)]
struct Rules {
    /// `masquerade` or `port mapping`.
    kind: &'static str,
    /// Where, and whose, for people.
    what: String,
    owner: Owner,
}

impl Rules {
    fn belongs_to(&self, network: &str, cid: &str, ifname: &str) -> bool {
        match &self.owner {
            Owner::Key(k) => {
                let att = firewall::Attachment {
                    network: network.to_owned(),
                    container_id: cid.to_owned(),
                    ifname: ifname.to_owned(),
                };
                *k == firewall::naming::instance_hash(&att)
                    || *k == firewall::naming::reference_chain(network, cid)
            }
            Owner::Container {
                container_id,
                ifname: i,
            } => container_id == cid && i.as_deref().is_none_or(|i| i == ifname),
        }
    }
}

/// The masquerade and port-mapping rules of `network`'s attachments, through the firewall
/// crate's listings: masquerade over netlink (nftables) and with `iptables`, port mappings
/// with portmap's listing. Port mappings that do not name their network are left out:
/// nothing may act on them.
fn rules_of(ctx: &Context, network: &str) -> Result<Vec<Rules>, Outcome> {
    let cannot = |e: firewall::Error| {
        Outcome::Unchecked(format!(
            "cannot list masquerade and port-mapping rules: {e}"
        ))
    };
    let masq = |l: firewall::Listed| {
        let who = l
            .comment
            .as_deref()
            .and_then(|c| c.split_once(", "))
            .map_or_else(String::new, |(_, who)| format!(", {who}"));
        Rules {
            kind: "masquerade",
            what: format!("{} {} (masquerade{who})", l.layout, l.key),
            owner: Owner::Key(l.key),
        }
    };
    let mut out = Vec::new();
    match firewall::Nftables::new().attachments(network) {
        Ok(v) => out.extend(v.into_iter().map(masq)),
        // No nf_tables in this kernel: no such rules either.
        Err(e) if e.is_nftables_unavailable() => {}
        Err(e) => return Err(cannot(e)),
    }
    if !ctx.runner.has("iptables") && !ctx.runner.has("ip6tables") {
        return Err(Outcome::Unchecked(
            "iptables is not on PATH, so iptables masquerade and port-mapping rules (which \
             kube-proxy's or another image's iptables may have made) cannot be listed"
                .into(),
        ));
    }
    let ipt = firewall::Iptables::new(ctx.runner);
    out.extend(
        ipt.attachments(network)
            .map_err(cannot)?
            .into_iter()
            .map(masq),
    );
    for l in firewall::portmap::list_all_with(&ctx.runner).map_err(cannot)? {
        let (Some(net), Some(cid)) = (l.network, l.container_id) else {
            continue;
        };
        if net != network {
            continue;
        }
        let place = match l.backend {
            firewall::Backend::Iptables if l.v6 => "ip6tables nat",
            firewall::Backend::Iptables => "iptables nat",
            firewall::Backend::Nftables => "nftables",
        };
        let ifname = l
            .ifname
            .as_deref()
            .map_or_else(String::new, |i| format!(", if: {i}"));
        out.push(Rules {
            kind: "port mapping",
            what: format!(
                "{place} {} (port mapping{ifname}, id: {})",
                l.chain,
                super::short_id(&cid)
            ),
            owner: Owner::Container {
                container_id: cid,
                ifname: l.ifname,
            },
        });
    }
    Ok(out)
}

pub fn leftover_rules(ctx: &Context) -> CheckResult {
    check("pod rules", || {
        let network = ctx.network_name()?;
        let ours = rules_of(ctx, network)?;
        if ours.is_empty() {
            return Ok(Outcome::Pass(format!(
                "no masquerade or port-mapping rules for {network:?}"
            )));
        }
        let live = live_attachments(ctx, network)?;
        let stale: Vec<&Rules> = ours
            .iter()
            .filter(|r| {
                !live
                    .iter()
                    .any(|a| r.belongs_to(network, &a.container_id, &a.ifname))
            })
            .collect();
        if stale.is_empty() {
            let masq = ours.iter().filter(|r| r.kind == "masquerade").count();
            return Ok(Outcome::Pass(format!(
                "{} and {} for {network:?}, all of live pods",
                count(masq, "masquerade rule set"),
                count(ours.len() - masq, "port-mapping rule set")
            )));
        }
        let what: Vec<String> = stale.iter().map(|r| r.what.clone()).collect();
        let message = format!(
            "rules of pods of {network:?} that are gone: {}. They cost a lookup per new \
             connection, and a new pod that gets the same address inherits them (masquerade, \
             a hostPort that was not its own)",
            list(&what, 4)
        );
        let gc_off = matches!(&ctx.config, Config::Loaded { list, .. } if list.disable_gc);
        let finding = if gc_off {
            Finding::new(
                Id::LeftoverRules,
                format!("{message}; the config sets disableGC, so delete them by hand"),
            )
        } else {
            Finding::new(Id::LeftoverRules, message).with_repair(
                format!(
                    "remove them: a CNI GC of network {network:?} with its {} as the valid \
                     ones (bridge's and portmap's GC remove the others' rules)",
                    count(live.len(), "live attachment")
                ),
                Repair::Gc,
            )
        };
        Ok(Outcome::Found(finding))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn iptables_docker_policy() {
        let docker = "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER-USER\n\
                      -A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j ACCEPT\n\
                      -A DOCKER-USER -j RETURN\n";
        let chains = iptables_chains(docker, "ip");
        assert_eq!(
            dropping(&chains, net("10.244.0.0/16"), Some("cni0")),
            ["ip filter FORWARD"]
        );
        // flanneld's accept, reached through a jump.
        let fixed = format!(
            "{docker}-N FLANNEL-FWD\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
             -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n"
        );
        assert!(dropping(&iptables_chains(&fixed, "ip"), net("10.244.0.0/16"), None).is_empty());
        // A negated or narrower match does not count; the bridge as interface does.
        let narrow = "-P FORWARD DROP\n-A FORWARD ! -s 10.244.0.0/16 -j ACCEPT\n\
                      -A FORWARD -s 10.244.1.0/24 -j ACCEPT\n";
        assert_eq!(
            dropping(&iptables_chains(narrow, "ip"), net("10.244.0.0/16"), None).len(),
            1
        );
        let by_bridge = "-P FORWARD DROP\n-A FORWARD -i cni0 -j ACCEPT\n";
        assert!(
            dropping(
                &iptables_chains(by_bridge, "ip"),
                net("10.244.0.0/16"),
                Some("cni0")
            )
            .is_empty()
        );
        // A catch-all REJECT at the end drops as a policy does.
        let reject = "-P FORWARD ACCEPT\n-A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT\n\
                      -A FORWARD -j REJECT --reject-with icmp-host-prohibited\n";
        assert_eq!(
            dropping(&iptables_chains(reject, "ip"), net("10.244.0.0/16"), None).len(),
            1
        );
        assert!(
            dropping(
                &iptables_chains("-P FORWARD ACCEPT\n", "ip"),
                net("10.244.0.0/16"),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn nft_forward_chains() {
        let ruleset = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "filter", "handle": 1}},
          {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 1,
                     "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
          {"chain": {"family": "inet", "table": "filter", "name": "pods", "handle": 2}},
          {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 3,
                    "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                              "right": ["established", "related"]}}, {"accept": null}]}},
          {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 4,
                    "expr": [{"jump": {"target": "pods"}}]}},
          {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 5,
                     "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}
        ]}"#;
        let chains = nft_chains(ruleset).unwrap();
        assert_eq!(
            dropping(&chains, net("10.244.0.0/16"), None),
            ["inet filter forward"]
        );
        assert_eq!(dropping(&chains, net("fd00::/56"), None).len(), 1);
        let with_accept = ruleset.replace(
            r#"{"chain": {"family": "ip", "table": "nat""#,
            r#"{"rule": {"family": "inet", "table": "filter", "chain": "pods", "handle": 6,
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                          "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
                         {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
               {"chain": {"family": "ip", "table": "nat""#,
        );
        let chains = nft_chains(&with_accept).unwrap();
        assert!(dropping(&chains, net("10.244.0.0/16"), None).is_empty());
        // IPv6 is still dropped: nothing accepts it.
        assert_eq!(dropping(&chains, net("fd00::/56"), None).len(), 1);
        assert!(nft_chains("{}").is_err());
    }
}
