//! Real-tool tests: every test runs on a thread that unshared a fresh network namespace,
//! so `nft`/`iptables*` children only ever see that namespace (it vanishes with the
//! thread). Needs root: without it the tests fail, they do not skip.

#![allow(clippy::unwrap_used)]

use firewall::naming::{comment, instance_hash, iptables_chain, iptables_comment, reference_chain};
use firewall::{
    Attachment, IpNetwork, Iptables, Masquerade, Nftables, Output, Runner, Session, SystemRunner,
    nft_chain_name,
};
use std::cell::RefCell;

mod common;
use common::{in_private_netns, nft_script, sh};

fn att(net: &str, cid: &str, ifname: &str) -> Attachment {
    Attachment {
        network: net.into(),
        container_id: cid.into(),
        ifname: ifname.into(),
    }
}

fn ips(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

fn nft_ruleset() -> String {
    sh("nft", &["list", "ruleset"])
}

/// Rules of `ruleset` (nft or `iptables -S`) whose comment carries `a`'s instance hash.
fn count(ruleset: &str, a: &Attachment) -> usize {
    let h = instance_hash(a);
    ruleset
        .lines()
        .filter(|l| l.contains("comment") && l.contains(&h))
        .count()
}

fn nat_rules(tool: &str) -> String {
    sh(tool, &["-w", "-t", "nat", "-S"])
}

fn nft() -> Nftables {
    Nftables::new()
}

/// The map element of `ip` in our table of its family (`ip : jump <chain>`), if any.
fn element(ip: &str) -> Option<String> {
    let fam = if ip.contains(':') { "ip6" } else { "ip" };
    let out = std::process::Command::new("nft")
        .args(["list", "map", fam, "rcni_masquerade", "attachments"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split(['{', '}', ','])
        .map(str::trim)
        .find(|e| e.starts_with(&format!("{ip} :")))
        .map(str::to_string)
}

/// A runner that records the tools it ran; with `.1`, the iptables tools are the legacy
/// (x_tables) ones.
struct Recording(RefCell<Vec<String>>, bool);

impl Recording {
    fn new(legacy: bool) -> Self {
        Self(RefCell::new(Vec::new()), legacy)
    }

    fn tool(&self, tool: &str) -> String {
        match (self.1, tool) {
            (true, "iptables" | "ip6tables") => format!("{tool}-legacy"),
            (true, "iptables-restore") => "iptables-legacy-restore".into(),
            (true, "ip6tables-restore") => "ip6tables-legacy-restore".into(),
            _ => tool.into(),
        }
    }
}

impl Runner for Recording {
    fn has(&self, tool: &str) -> bool {
        SystemRunner::new().has(&self.tool(tool))
    }
    fn run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, firewall::Error> {
        let tool = self.tool(tool);
        self.0
            .borrow_mut()
            .push(format!("{tool} {}", args.join(" ")));
        SystemRunner::new().run(&tool, args, stdin)
    }
    fn proc_net(&self, name: &str) -> Option<String> {
        SystemRunner::new().proc_net(name)
    }
}

fn ipt() -> Iptables {
    Iptables::new(SystemRunner::new())
}

#[test]
fn nft_setup_is_idempotent_and_teardown_is_exact() {
    in_private_netns(|| {
        let a = att("mynet", "cid-a", "eth0");
        let b = att("mynet", "cid-b", "eth0");
        nft()
            .setup(&a, &ips(&["10.244.1.5/24", "fd00:1::5/64"]))
            .unwrap();
        nft()
            .setup(&a, &ips(&["10.244.1.5/24", "fd00:1::5/64"]))
            .unwrap();
        nft().setup(&b, &ips(&["10.244.1.6/24"])).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 2, "{rs}");
        assert_eq!(count(&rs, &b), 1, "{rs}");
        assert!(
            rs.contains(
                "ip saddr 10.244.1.5 ip daddr != 10.244.1.0/24 ip daddr != 224.0.0.0/4 masquerade"
            ),
            "{rs}"
        );
        assert!(
            rs.contains(
                "ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/64 ip6 daddr != ff00::/8 masquerade"
            ),
            "{rs}"
        );
        // One nat base chain per family whatever the attachment count, one regular chain
        // per attachment and family, reached from the map.
        assert_eq!(
            rs.matches("type nat hook postrouting priority srcnat; policy accept;")
                .count(),
            2,
            "{rs}"
        );
        assert_eq!(rs.matches("ip saddr vmap @attachments").count(), 1, "{rs}");
        assert_eq!(rs.matches("ip6 saddr vmap @attachments").count(), 1, "{rs}");
        let ca = nft_chain_name(&a);
        assert_eq!(rs.matches(&format!("chain {ca} {{")).count(), 2, "{rs}");
        assert_eq!(
            element("10.244.1.5"),
            Some(format!("10.244.1.5 : jump {ca}"))
        );
        assert_eq!(element("fd00:1::5"), Some(format!("fd00:1::5 : jump {ca}")));

        // Re-setup with another IP replaces the rule and releases the old address.
        nft().setup(&a, &ips(&["10.244.1.9/24"])).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 1, "{rs}");
        assert!(rs.contains("ip saddr 10.244.1.9 "), "{rs}");
        assert_eq!(element("10.244.1.5"), None);
        assert_eq!(element("fd00:1::5"), None);
        assert_eq!(
            element("10.244.1.9"),
            Some(format!("10.244.1.9 : jump {ca}"))
        );

        nft().teardown(&a).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 0, "{rs}");
        assert!(!rs.contains(&ca), "{rs}");
        assert_eq!(element("10.244.1.9"), None);
        assert_eq!(count(&rs, &b), 1, "{rs}");
        nft().teardown(&a).unwrap(); // idempotent
        assert_eq!(nft_ruleset(), rs);
    });
}

#[test]
fn teardown_all_on_a_clean_node_creates_nothing() {
    in_private_netns(|| {
        firewall::teardown_all(&att("n", "c", "eth0")).unwrap();
        assert_eq!(sh("nft", &["list", "tables"]), "");
        // Our table exists but not the chain: still fine, and the table is kept.
        nft()
            .setup(&att("n", "other", "eth0"), &ips(&["10.9.0.2/24"]))
            .unwrap();
        let before = nft_ruleset();
        firewall::teardown_all(&att("n", "c", "eth0")).unwrap();
        assert_eq!(sh("nft", &["list", "tables"]), "table ip rcni_masquerade\n");
        assert_eq!(nft_ruleset(), before);
    });
}

#[test]
fn nft_teardown_without_table_is_ok() {
    in_private_netns(|| {
        nft().teardown(&att("n", "c", "eth0")).unwrap();
        nft().gc("n", &[]).unwrap();
        assert_eq!(nft_ruleset(), "");
    });
}

#[test]
fn nft_reused_ip_is_not_removed_by_old_owner() {
    in_private_netns(|| {
        let old = att("mynet", "old", "eth0");
        let new = att("mynet", "new", "eth0");
        nft().setup(&old, &ips(&["10.244.1.5/24"])).unwrap();
        // IPAM gave the address away without the old owner's DEL: the new owner takes it.
        nft().setup(&new, &ips(&["10.244.1.5/24"])).unwrap();
        let to_new = format!("10.244.1.5 : jump {}", nft_chain_name(&new));
        assert_eq!(element("10.244.1.5"), Some(to_new.clone()));
        // The old owner's late DEL removes its own chain, not the new owner's element.
        nft().teardown(&old).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &old), 0, "{rs}");
        assert!(!rs.contains(&nft_chain_name(&old)), "{rs}");
        assert_eq!(count(&rs, &new), 1, "{rs}");
        assert_eq!(element("10.244.1.5"), Some(to_new));
    });
}

#[test]
fn nft_gc_keeps_valid_and_other_networks() {
    in_private_netns(|| {
        let keep = att("mynet", "keep", "eth0");
        let gone = att("mynet", "gone", "eth0");
        let gone_if = att("mynet", "keep", "eth1");
        let other = att("othernet", "gone", "eth0");
        nft().setup(&keep, &ips(&["10.1.0.2/24"])).unwrap();
        nft()
            .setup(&gone, &ips(&["10.1.0.3/24", "fd00::3/64"]))
            .unwrap();
        nft().setup(&gone_if, &ips(&["10.1.0.4/24"])).unwrap();
        nft().setup(&other, &ips(&["10.2.0.3/24"])).unwrap();
        let listed = nft().attachments("mynet").unwrap();
        let mut keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
        keys.sort();
        let mut want = vec![
            instance_hash(&keep),
            instance_hash(&gone),
            instance_hash(&gone_if),
        ];
        want.sort();
        assert_eq!(keys, want);
        nft().gc("mynet", std::slice::from_ref(&keep)).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &keep), 1, "{rs}");
        assert_eq!(count(&rs, &gone), 0, "{rs}");
        assert_eq!(count(&rs, &gone_if), 0, "{rs}");
        assert_eq!(count(&rs, &other), 1, "{rs}");
        for ip in ["10.1.0.3", "fd00::3", "10.1.0.4"] {
            assert_eq!(element(ip), None, "{ip}");
        }
        assert!(element("10.1.0.2").is_some());
        assert!(element("10.2.0.3").is_some());
        let listed = nft().attachments("mynet").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, instance_hash(&keep));
        assert_eq!(
            listed[0].ips,
            ["10.1.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(listed[0].comment.as_deref(), Some(comment(&keep).as_str()));
    });
}

/// What rcni's previous nftables layout made for `a` with `ip`/`subnet`: one nat base
/// chain per attachment in `inet rcni_masquerade`.
fn old_layout(a: &Attachment, ip: &str, subnet: &str) {
    let chain = format!("a-{}", instance_hash(a));
    nft_script(&format!(
        "add table inet rcni_masquerade\n\
         add chain inet rcni_masquerade {chain} {{ type nat hook postrouting priority srcnat ; policy accept ; }}\n\
         add rule inet rcni_masquerade {chain} ip saddr {ip} ip daddr != {subnet} ip daddr != 224.0.0.0/4 masquerade comment \"{}\"\n",
        comment(a)
    ));
}

#[test]
fn a_node_with_the_old_per_pod_base_chains_is_cleaned_by_del_and_gc() {
    in_private_netns(|| {
        let (a, b, c) = (
            att("mynet", "a", "eth0"),
            att("mynet", "b", "eth0"),
            att("mynet", "c", "eth0"),
        );
        old_layout(&a, "10.1.0.2", "10.1.0.0/24");
        old_layout(&b, "10.1.0.3", "10.1.0.0/24");
        old_layout(&c, "10.1.0.4", "10.1.0.0/24");
        // A pod set up after the upgrade lives in the new layout.
        let d = att("mynet", "d", "eth0");
        nft().setup(&d, &ips(&["10.1.0.5/24"])).unwrap();

        firewall::teardown_all(&a).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 0, "{rs}");
        assert!(!rs.contains(&format!("a-{}", instance_hash(&a))), "{rs}");
        assert_eq!(count(&rs, &b), 1, "{rs}");
        assert_eq!(count(&rs, &d), 1, "{rs}");

        // GC keeps b, drops c; the old table is empty then, and goes.
        firewall::gc_all("mynet", &[b.clone(), d.clone()]).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &c), 0, "{rs}");
        assert_eq!(count(&rs, &b), 1, "{rs}");
        firewall::teardown_all(&b).unwrap();
        let tables = sh("nft", &["list", "tables"]);
        assert!(!tables.contains("inet rcni_masquerade"), "{tables}");
        assert_eq!(count(&nft_ruleset(), &d), 1);
    });
}

#[test]
fn eleven_hundred_attachments_get_their_rules_and_lose_them() {
    in_private_netns(|| {
        let n = 1100;
        let backend = nft();
        let atts: Vec<Attachment> = (0..n)
            .map(|i| att(&format!("net{}", i % 3), &format!("pod{i}"), "eth0"))
            .collect();
        for (i, a) in atts.iter().enumerate() {
            let ip = format!("10.{}.{}.{}/16", 100 + i % 3, i / 250, i % 250 + 2);
            backend.setup(a, &ips(&[&ip])).unwrap();
        }
        let rs = nft_ruleset();
        // Two base chains at most (ip, ip6), one chain and one element per attachment.
        assert_eq!(
            rs.matches("type nat hook postrouting").count(),
            1,
            "base chains"
        );
        assert_eq!(rs.matches("masquerade comment").count(), n);
        for a in &atts {
            assert_eq!(count(&rs, a), 1, "{a:?}");
        }
        let elements = sh(
            "nft",
            &["list", "map", "ip", "rcni_masquerade", "attachments"],
        );
        assert_eq!(elements.matches(": jump m-").count(), n);
        let mut session = Session::new();
        for a in &atts {
            firewall::teardown_all_in(&mut session, a).unwrap();
        }
        let rs = nft_ruleset();
        assert_eq!(rs.matches("masquerade comment").count(), 0, "{rs}");
        assert_eq!(rs.matches(": jump").count(), 0, "{rs}");
        assert_eq!(rs.matches("chain m-").count(), 0, "{rs}");
    });
}

#[test]
fn teardown_all_removes_iptables_nft_state_without_any_process() {
    in_private_netns(|| {
        // kube-proxy style: iptables-nft's nat table exists with unrelated rules.
        sh(
            "iptables",
            &[
                "-w",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "lo",
                "-j",
                "RETURN",
            ],
        );
        let a = att("mynet", "cid", "eth0");
        nft().setup(&a, &ips(&["10.1.0.2/24"])).unwrap();
        let rec = Recording::new(false);
        firewall::teardown_all_with(&rec, &mut Session::new(), &a).unwrap();
        assert_eq!(count(&nft_ruleset(), &a), 0);
        // The pod's iptables chains (ours and the reference's), dual-stack, and another
        // pod's: only the pod's go, still without a process.
        let b = att("mynet", "other", "eth0");
        ipt()
            .setup(&a, &ips(&["10.1.0.2/24", "fd00::2/64"]))
            .unwrap();
        ipt().setup(&b, &ips(&["10.1.0.3/24"])).unwrap();
        let ref_a = go_reference_chain("mynet", "cid", "10.1.0.2", "10.1.0.0/24");
        firewall::teardown_all_with(&rec, &mut Session::new(), &a).unwrap();
        assert_eq!(rec.0.borrow().len(), 0, "{:?}", rec.0.borrow());
        let (v4, v6) = (nat_rules("iptables"), nat_rules("ip6tables"));
        assert_eq!(count(&v4, &a), 0, "{v4}");
        assert_eq!(count(&v6, &a), 0, "{v6}");
        assert!(
            !v4.contains(&iptables_chain(&a)) && !v4.contains(&ref_a),
            "{v4}"
        );
        assert_eq!(count(&v4, &b), 3, "{v4}");
        assert!(v4.contains("-A POSTROUTING -o lo -j RETURN"), "{v4}");
    });
}

#[test]
fn teardown_all_cleans_legacy_iptables_with_the_tools() {
    in_private_netns(|| {
        let rec = Recording::new(true);
        let a = att("mynet", "cid", "eth0");
        Iptables::new(&rec)
            .setup(&a, &ips(&["10.1.0.2/24"]))
            .unwrap();
        // And a reference chain without its jump (Go crashed in between).
        let chain = reference_chain("mynet", "cid");
        sh("iptables-legacy", &["-w", "-t", "nat", "-N", &chain]);
        rec.0.borrow_mut().clear();
        firewall::teardown_all_with(&rec, &mut Session::new(), &a).unwrap();
        let calls = rec.0.borrow().clone();
        assert!(
            calls[0].starts_with("iptables-legacy -w -t nat -S"),
            "{calls:?}"
        );
        let v4 = sh("iptables-legacy", &["-w", "-t", "nat", "-S"]);
        assert_eq!(count(&v4, &a), 0, "{v4}");
        assert!(
            !v4.contains(&chain) && !v4.contains(&iptables_chain(&a)),
            "{v4}"
        );
    });
}

#[test]
fn teardown_all_removes_a_go_chain_that_has_no_jump() {
    in_private_netns(|| {
        // The Go plugin creates its chain, then adds the jump: a crash in between.
        let chain = reference_chain("mynet", "cid");
        sh("iptables", &["-w", "-t", "nat", "-N", &chain]);
        sh(
            "iptables",
            &[
                "-w",
                "-t",
                "nat",
                "-A",
                &chain,
                "-d",
                "10.1.0.0/24",
                "-j",
                "ACCEPT",
            ],
        );
        let other = reference_chain("mynet", "other");
        sh("iptables", &["-w", "-t", "nat", "-N", &other]);
        firewall::teardown_all(&att("mynet", "cid", "eth0")).unwrap();
        let v4 = nat_rules("iptables");
        assert!(!v4.contains(&chain), "{v4}");
        assert!(v4.contains(&format!("-N {other}")), "{v4}");
    });
}

#[test]
fn long_identifiers_fit_comment_limits() {
    in_private_netns(|| {
        let a = att(&"n".repeat(100), &"c".repeat(64), "eth0");
        assert_eq!(comment(&a).len(), 128);
        nft().setup(&a, &ips(&["10.3.0.2/24"])).unwrap();
        ipt().setup(&a, &ips(&["10.3.0.2/24"])).unwrap();
        assert_eq!(count(&nft_ruleset(), &a), 1);
        let v4 = nat_rules("iptables");
        assert_eq!(count(&v4, &a), 3);
        // iptables keeps the whole 64-character container ID (its limit is 255 bytes),
        // so `iptables-save | grep <id>` finds the rules.
        assert_eq!(v4.matches(&"c".repeat(64)).count(), 3, "{v4}");
        nft().teardown(&a).unwrap();
        ipt().teardown(&a).unwrap();
        assert_eq!(count(&nft_ruleset(), &a), 0);
        assert_eq!(count(&nat_rules("iptables"), &a), 0);
    });
}

#[test]
fn iptables_setup_is_idempotent_and_teardown_is_exact() {
    in_private_netns(|| {
        let a = att("mynet", "cid-a", "eth0");
        let b = att("mynet", "cid-b", "eth0");
        let ch = iptables_chain(&a);
        ipt()
            .setup(&a, &ips(&["10.244.1.5/24", "fd00:1::5/64"]))
            .unwrap();
        ipt()
            .setup(&a, &ips(&["10.244.1.5/24", "fd00:1::5/64"]))
            .unwrap();
        ipt().setup(&b, &ips(&["10.244.1.6/24"])).unwrap();
        let v4 = nat_rules("iptables");
        let v6 = nat_rules("ip6tables");
        // Two chain rules and one jump per family, no duplicates.
        assert_eq!(count(&v4, &a), 3, "{v4}");
        assert_eq!(count(&v6, &a), 3, "{v6}");
        assert_eq!(count(&v4, &b), 3, "{v4}");
        assert_eq!(count(&v6, &b), 0, "{v6}");
        assert!(
            v4.contains(&format!(
                "-A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"{}\" -j {ch}",
                iptables_comment(&a)
            )),
            "{v4}"
        );
        assert!(
            v4.contains(&format!("-A {ch} -s 10.244.1.5/32 ! -d 224.0.0.0/4")),
            "{v4}"
        );
        assert!(
            v6.contains(&format!("-A {ch} -s fd00:1::5/128 -d fd00:1::/64")),
            "{v6}"
        );
        assert!(v6.contains("! -d ff00::/8"), "{v6}");

        // Re-setup with another IP replaces the jump and the chain rules.
        ipt().setup(&a, &ips(&["10.244.1.9/24"])).unwrap();
        let v4 = nat_rules("iptables");
        assert_eq!(count(&v4, &a), 3, "{v4}");
        assert!(!v4.contains("10.244.1.5/32"), "{v4}");

        ipt().teardown(&a).unwrap();
        let v4 = nat_rules("iptables");
        let v6 = nat_rules("ip6tables");
        assert_eq!(count(&v4, &a), 0, "{v4}");
        assert_eq!(count(&v6, &a), 0, "{v6}");
        assert!(!v4.contains(&ch) && !v6.contains(&ch), "{v4}{v6}");
        assert_eq!(count(&v4, &b), 3, "{v4}");
        ipt().teardown(&a).unwrap(); // idempotent
    });
}

#[test]
fn iptables_reused_ip_is_not_removed_by_old_owner() {
    in_private_netns(|| {
        let old = att("mynet", "old", "eth0");
        let new = att("mynet", "new", "eth0");
        ipt().setup(&old, &ips(&["10.244.1.5/24"])).unwrap();
        ipt().setup(&new, &ips(&["10.244.1.5/24"])).unwrap();
        ipt().teardown(&old).unwrap();
        let v4 = nat_rules("iptables");
        assert_eq!(count(&v4, &old), 0, "{v4}");
        assert_eq!(count(&v4, &new), 3, "{v4}");
    });
}

/// Create what the Go bridge plugin (v1.1.1, iptables) leaves for (network, cid, ip).
fn go_reference_chain(network: &str, cid: &str, ip: &str, subnet: &str) -> String {
    let chain = reference_chain(network, cid);
    let c = format!("name: \"{network}\" id: \"{cid}\"");
    sh("iptables", &["-w", "-t", "nat", "-N", &chain]);
    sh(
        "iptables",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            &chain,
            "-d",
            subnet,
            "-j",
            "ACCEPT",
            "-m",
            "comment",
            "--comment",
            &c,
        ],
    );
    sh(
        "iptables",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            &chain,
            "!",
            "-d",
            "224.0.0.0/4",
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            &c,
        ],
    );
    sh(
        "iptables",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            ip,
            "-j",
            &chain,
            "-m",
            "comment",
            "--comment",
            &c,
        ],
    );
    chain
}

#[test]
fn iptables_gc_keeps_valid_and_cleans_reference_chains() {
    in_private_netns(|| {
        let keep = att("mynet", "keep", "eth0");
        let gone = att("mynet", "gone", "eth0");
        let other = att("othernet", "gone", "eth0");
        ipt()
            .setup(&keep, &ips(&["10.1.0.2/24", "fd00::2/64"]))
            .unwrap();
        ipt()
            .setup(&gone, &ips(&["10.1.0.3/24", "fd00::3/64"]))
            .unwrap();
        ipt().setup(&other, &ips(&["10.2.0.3/24"])).unwrap();
        let ref_keep = go_reference_chain("mynet", "keep", "10.1.0.12", "10.1.0.0/24");
        let ref_gone = go_reference_chain("mynet", "old", "10.1.0.13", "10.1.0.0/24");
        let ref_other = go_reference_chain("othernet", "old", "10.2.0.13", "10.2.0.0/24");
        // An unrelated chain with a CNI- prefix (portmap-like) must survive.
        sh("iptables", &["-w", "-t", "nat", "-N", "CNI-HOSTPORT-MASQ"]);

        let listed = ipt().attachments("mynet").unwrap();
        let keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
        for k in [
            &instance_hash(&keep),
            &instance_hash(&gone),
            &ref_keep,
            &ref_gone,
        ] {
            assert!(keys.contains(&k.as_str()), "{k} not in {keys:?}");
        }
        assert!(!keys.contains(&instance_hash(&other).as_str()));
        ipt().gc("mynet", std::slice::from_ref(&keep)).unwrap();
        let v4 = nat_rules("iptables");
        let v6 = nat_rules("ip6tables");
        assert_eq!(count(&v4, &keep), 3, "{v4}");
        assert_eq!(count(&v6, &keep), 3, "{v6}");
        assert_eq!(count(&v4, &gone), 0, "{v4}");
        assert_eq!(count(&v6, &gone), 0, "{v6}");
        assert_eq!(count(&v4, &other), 3, "{v4}");
        assert!(v4.contains(&format!("-N {ref_keep}")), "{v4}");
        assert!(!v4.contains(&ref_gone), "{v4}");
        assert!(v4.contains(&format!("-N {ref_other}")), "{v4}");
        assert!(v4.contains("-N CNI-HOSTPORT-MASQ"), "{v4}");
    });
}

#[test]
fn teardown_all_cleans_both_backends_and_go_leftovers() {
    in_private_netns(|| {
        let a = att("mynet", "cid1", "eth0");
        let b = att("mynet", "cid2", "eth0");
        nft()
            .setup(&a, &ips(&["10.1.0.2/24", "fd00::2/64"]))
            .unwrap();
        ipt()
            .setup(&a, &ips(&["10.1.0.2/24", "fd00::2/64"]))
            .unwrap();
        nft().setup(&b, &ips(&["10.1.0.3/24"])).unwrap();
        let ref_a = go_reference_chain("mynet", "cid1", "10.1.0.2", "10.1.0.0/24");
        let ref_b = go_reference_chain("mynet", "cid2", "10.1.0.3", "10.1.0.0/24");
        // What the Go nftables backend (v1.6+) leaves: same comment format, its own table.
        let go_nft = format!(
            "add table inet cni_plugins_masquerade\n\
             add chain inet cni_plugins_masquerade masq_checks\n\
             add rule inet cni_plugins_masquerade masq_checks ip saddr 10.1.0.2 ip daddr != 10.1.0.0/24 masquerade comment \"{}\"\n\
             add rule inet cni_plugins_masquerade masq_checks ip saddr 10.1.0.3 ip daddr != 10.1.0.0/24 masquerade comment \"{}\"\n",
            comment(&a),
            comment(&b)
        );
        nft_script(&go_nft);

        firewall::teardown_all(&a).unwrap();
        let rs = nft_ruleset();
        let v4 = nat_rules("iptables");
        let v6 = nat_rules("ip6tables");
        assert_eq!(count(&rs, &a), 0, "{rs}");
        assert_eq!(count(&rs, &b), 2, "{rs}"); // ours + Go's table
        assert_eq!(count(&v4, &a), 0, "{v4}");
        assert_eq!(count(&v6, &a), 0, "{v6}");
        assert!(!v4.contains(&ref_a), "{v4}");
        assert!(v4.contains(&format!("-N {ref_b}")), "{v4}");
        firewall::teardown_all(&a).unwrap();

        firewall::gc_all("mynet", &[]).unwrap();
        let rs = nft_ruleset();
        let v4 = nat_rules("iptables");
        assert_eq!(count(&rs, &b), 0, "{rs}");
        assert!(!v4.contains(&ref_b), "{v4}");
    });
}
