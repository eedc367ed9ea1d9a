//! The MAC spoof check against a real kernel (root; private netns per test), and against
//! the reference's layout made by `nft` itself.

#![allow(clippy::unwrap_used)]

mod common;

use common::{in_private_netns, nft_script, sh};
use firewall::SpoofCheck;

fn table() -> String {
    sh("nft", &["list", "table", "bridge", "nat"])
}

#[test]
fn setup_is_the_reference_layout_and_a_repeat_adds_no_second_jump() {
    in_private_netns(|| {
        SpoofCheck::system()
            .setup("veth1", "02:00:00:00:00:01", "c1-eth0")
            .unwrap();
        SpoofCheck::system()
            .setup("veth1", "02:00:00:00:00:01", "c1-eth0")
            .unwrap();
        SpoofCheck::system()
            .setup("veth2", "02:00:00:00:00:02", "c2-eth0")
            .unwrap();
        let t = table();
        for line in [
            "type filter hook prerouting priority dstnat; policy accept;",
            "iifname \"veth1\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\"",
            "jump cni-br-iface-c1-eth0-mac comment \"macspoofchk-c1-eth0\"",
            "ether saddr 02:00:00:00:00:01 return comment \"macspoofchk-c1-eth0\"",
            "drop comment \"macspoofchk-c1-eth0\"",
        ] {
            assert_eq!(t.matches(line).count(), 1, "{line:?} in:\n{t}");
        }
        assert_eq!(t.matches("jump cni-br-iface-c2-eth0 ").count(), 1, "{t}");
        // A repeated setup with another port and MAC replaces the old rules.
        SpoofCheck::system()
            .setup("veth9", "02:00:00:00:00:09", "c1-eth0")
            .unwrap();
        let t = table();
        assert_eq!(t.matches("jump cni-br-iface-c1-eth0 ").count(), 1, "{t}");
        assert!(
            t.contains("iifname \"veth9\" jump cni-br-iface-c1-eth0 "),
            "{t}"
        );
        assert!(!t.contains("02:00:00:00:00:01"), "{t}");

        SpoofCheck::system().teardown("c1-eth0").unwrap();
        let t = table();
        assert!(!t.contains("c1-eth0"), "{t}");
        assert!(t.contains("macspoofchk-c2-eth0"), "{t}");
        SpoofCheck::system().teardown("c1-eth0").unwrap();
        assert_eq!(table(), t);
    });
}

#[test]
fn teardown_removes_what_the_reference_made_and_tolerates_no_table() {
    in_private_netns(|| {
        SpoofCheck::system().teardown("c1-eth0").unwrap();
        assert_eq!(sh("nft", &["list", "tables"]), "");
        nft_script(
            "add table bridge nat\n\
             add chain bridge nat PREROUTING { type filter hook prerouting priority -300; policy accept; }\n\
             add chain bridge nat cni-br-iface-c1-eth0\n\
             add chain bridge nat cni-br-iface-c1-eth0-mac\n\
             add rule bridge nat PREROUTING iifname \"veth1\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0 jump cni-br-iface-c1-eth0-mac comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0-mac ether saddr 02:00:00:00:00:01 return comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0-mac drop comment \"macspoofchk-c1-eth0\"\n",
        );
        SpoofCheck::system().teardown("c1-eth0").unwrap();
        let t = table();
        assert!(!t.contains("c1-eth0"), "{t}");
        assert!(t.contains("chain PREROUTING"), "{t}");
    });
}
