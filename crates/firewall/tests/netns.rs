//! Real-tool tests: every test runs on a thread that unshared a fresh network namespace,
//! so `nft`/`iptables*` children only ever see that namespace (it vanishes with the
//! thread). Needs root: without it the tests fail, they do not skip.

#![allow(clippy::unwrap_used)]

use firewall::hash::{comment, instance_hash, iptables_chain, reference_chain};
use firewall::{
    Attachment, IpNetwork, Iptables, Masquerade, Nftables, SystemRunner, nft_chain_name,
};
use std::process::Command;

mod common;
use common::{in_private_netns, sh};

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
    Nftables::new(SystemRunner::new())
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
        // One nat base chain per attachment, named after it, not duplicated by re-setup.
        assert_eq!(
            rs.matches("type nat hook postrouting priority srcnat; policy accept;")
                .count(),
            2,
            "{rs}"
        );
        assert_eq!(
            rs.matches(&format!("chain {} {{", nft_chain_name(&a)))
                .count(),
            1,
            "{rs}"
        );

        // Re-setup with a different IP replaces the old rule.
        nft().setup(&a, &ips(&["10.244.1.9/24"])).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 1, "{rs}");
        assert!(rs.contains("ip saddr 10.244.1.9 "), "{rs}");

        nft().teardown(&a).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &a), 0, "{rs}");
        assert!(!rs.contains(&nft_chain_name(&a)), "{rs}");
        assert_eq!(count(&rs, &b), 1, "{rs}");
        nft().teardown(&a).unwrap(); // idempotent
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
        firewall::teardown_all(&att("n", "c", "eth0")).unwrap();
        assert_eq!(
            sh("nft", &["list", "tables"]),
            "table inet rcni_masquerade\n"
        );
    });
}

#[test]
fn nft_teardown_without_table_is_ok() {
    in_private_netns(|| {
        nft().teardown(&att("n", "c", "eth0")).unwrap();
        nft().gc("n", &[]).unwrap();
        assert!(!nft_ruleset().contains("rcni_masquerade"));
    });
}

#[test]
fn nft_reused_ip_is_not_removed_by_old_owner() {
    in_private_netns(|| {
        let old = att("mynet", "old", "eth0");
        let new = att("mynet", "new", "eth0");
        nft().setup(&old, &ips(&["10.244.1.5/24"])).unwrap();
        nft().setup(&new, &ips(&["10.244.1.5/24"])).unwrap();
        nft().teardown(&old).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &old), 0, "{rs}");
        assert_eq!(count(&rs, &new), 1, "{rs}");
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
        nft().gc("mynet", std::slice::from_ref(&keep)).unwrap();
        let rs = nft_ruleset();
        assert_eq!(count(&rs, &keep), 1, "{rs}");
        assert_eq!(count(&rs, &gone), 0, "{rs}");
        assert_eq!(count(&rs, &gone_if), 0, "{rs}");
        assert_eq!(count(&rs, &other), 1, "{rs}");
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
        assert_eq!(count(&nat_rules("iptables"), &a), 3);
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
                comment(&a)
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
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), go_nft.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());

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
