//! The old-kernel path: dumps sent without table/chain filters (as a kernel that ignores
//! them answers: everything), so only our own filtering selects what teardown and GC
//! touch. A separate test binary, because the switch is process-wide.

#![allow(clippy::unwrap_used)]

mod common;

use common::{in_private_netns, nft_script, sh};
use firewall::naming::{comment, instance_hash};
use firewall::nftables::list;
use firewall::{Attachment, IpNetwork, Masquerade, Nftables};

fn att(cid: &str) -> Attachment {
    Attachment {
        network: "mynet".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

fn ips(s: &str) -> Vec<IpNetwork> {
    vec![s.parse().unwrap()]
}

fn count(a: &Attachment) -> usize {
    let rs = sh("nft", &["list", "ruleset"]);
    let h = instance_hash(a);
    rs.lines()
        .filter(|l| l.contains("comment") && l.contains(&h))
        .count()
}

#[test]
fn teardown_and_gc_are_exact_when_the_kernel_ignores_dump_filters() {
    list::set_kernel_filters(false);
    in_private_netns(|| {
        let (a, b, c) = (att("a"), att("b"), att("c"));
        for (x, ip) in [(&a, "10.1.0.2/24"), (&b, "10.1.0.3/24"), (&c, "fd00::4/64")] {
            Nftables::new().setup(x, &ips(ip)).unwrap();
        }
        // Unrelated rules in other tables and the Go plugin's table must survive.
        nft_script(&format!(
            "add table ip other\n\
             add chain ip other c\n\
             add rule ip other c ip saddr 10.1.0.2 accept comment \"{}\"\n\
             add table inet other6\n\
             add chain inet other6 masq_checks\n\
             add rule inet other6 masq_checks ip saddr 10.1.0.2 accept comment \"{}\"\n\
             add table inet cni_plugins_masquerade\n\
             add chain inet cni_plugins_masquerade masq_checks\n\
             add rule inet cni_plugins_masquerade masq_checks ip saddr 10.1.0.3 masquerade comment \"{}\"\n",
            comment(&a),
            comment(&a),
            comment(&b)
        ));
        firewall::teardown_all(&a).unwrap();
        assert_eq!(count(&a), 2, "only the unrelated tables' rules are left");
        assert_eq!(count(&b), 2);
        assert_eq!(count(&c), 1);
        firewall::gc_all("mynet", std::slice::from_ref(&c)).unwrap();
        assert_eq!(count(&b), 0);
        assert_eq!(count(&c), 1);
        assert_eq!(count(&a), 2);
    });
}
