//! Port mappings on the old-kernel path: dumps sent without table/chain filters (as a
//! kernel that ignores them answers: everything of the family), so only our own filtering
//! selects what CHECK compares and what DEL, GC and the listing touch. A separate test
//! binary, because the switch is process-wide.

#![allow(clippy::unwrap_used)]

mod common;

use common::{in_private_netns, nft_script, sh};
use firewall::naming::{comment, instance_hash};
use firewall::nftables::list;
use firewall::portmap::{self, Nftables, Options, PortMapper, PortMapping, Protocol, Request};
use firewall::{Attachment, IpNetwork};

fn att(cid: &str) -> Attachment {
    Attachment {
        network: "mynet".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

#[test]
fn port_mappings_are_exact_when_the_kernel_ignores_dump_filters() {
    list::set_kernel_filters(false);
    in_private_netns(|| {
        let (a, b) = (att("a"), att("b"));
        let chain_a = format!("a-{}", instance_hash(&a));
        // Another table with our chain names and our comments: never ours to read or touch.
        nft_script(&format!(
            "add table ip other\n\
             add chain ip other prerouting\n\
             add rule ip other prerouting tcp dport 1 accept\n\
             add chain ip other {chain_a}\n\
             add rule ip other {chain_a} tcp dport 8080 accept comment \"{}\"\n\
             add table ip6 other\n\
             add chain ip6 other output\n\
             add rule ip6 other output tcp dport 1 accept\n",
            comment(&a)
        ));
        let opts = Options::default();
        let ms = vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            },
            PortMapping {
                host_port: 8443,
                container_port: 443,
                protocol: Protocol::Tcp,
                host_ip: Some("192.168.1.5".parse().unwrap()),
            },
        ];
        let addrs: Vec<IpNetwork> = vec![
            "10.244.1.2/24".parse().unwrap(),
            "fd00::2/64".parse().unwrap(),
        ];
        let addrs_b: Vec<IpNetwork> = vec!["10.244.1.3/24".parse().unwrap()];
        let ms_b = vec![PortMapping {
            host_port: 9090,
            ..ms[0].clone()
        }];
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let req_b = Request {
            att: &b,
            addrs: &addrs_b,
            mappings: &ms_b,
            opts: &opts,
        };
        let nft = Nftables::new();
        nft.setup(&req).unwrap();
        nft.setup(&req).unwrap();
        nft.setup(&req_b).unwrap();
        nft.check(&req).unwrap();
        nft.check(&req_b).unwrap();
        let listed = portmap::list_all().unwrap();
        assert_eq!(listed.len(), 3, "{listed:?}");
        portmap::teardown_all(&a).unwrap();
        assert!(nft.check(&req).is_err());
        nft.check(&req_b).unwrap();
        portmap::gc_all("mynet", &[]).unwrap();
        assert!(nft.check(&req_b).is_err());
        assert!(portmap::list_all().unwrap().is_empty());
        // The other tables are untouched.
        let other = sh("nft", &["list", "table", "ip", "other"]);
        assert!(
            other.contains(&chain_a) && other.contains("dport 8080"),
            "{other}"
        );
        let other6 = sh("nft", &["list", "table", "ip6", "other"]);
        assert!(other6.contains("dport 1"), "{other6}");
    });
}
