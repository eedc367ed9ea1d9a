//! Kernel tests: every test runs in its own private netns (thread-level
//! `unshare(CLONE_NEWNET)`), so the machine's netns is never touched. They need root and FAIL
//! without it.

use std::net::IpAddr;
use std::process::Command;

use ipnetwork::IpNetwork;
use netlink::{Family, Netlink, Netns, RouteEntry, netns, sysctl};
use nix::sched::{CloneFlags, unshare};

/// Moves the calling test thread into a fresh, empty netns and opens a socket there.
fn private_netns() -> Netlink {
    unshare(CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) failed: these tests must run as root");
    let mut nl = Netlink::new().expect("netlink socket");
    let lo = nl
        .link_by_name("lo")
        .expect("lo lookup")
        .expect("lo exists");
    nl.set_up(lo.index).expect("lo up");
    nl
}

/// Another fresh netns, kept alive by the returned fd only (dropped with it).
fn second_netns() -> Netns {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        Netns::current().expect("open thread netns")
    })
    .join()
    .expect("netns thread")
}

/// Runs a command in the calling thread's netns (children inherit it) and parses its JSON.
fn json(cmd: &[&str]) -> serde_json::Value {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("cidr")
}

fn bridge(nl: &mut Netlink, name: &str, vlan_filtering: bool) -> u32 {
    nl.create_bridge(name, None, vlan_filtering)
        .expect("create bridge");
    let link = nl.link_by_name(name).expect("get").expect("exists");
    nl.set_up(link.index).expect("up");
    link.index
}

#[test]
fn bridge_create_lookup_and_errno() {
    let mut nl = private_netns();
    nl.create_bridge("br-t", Some(1400), false)
        .expect("create bridge");
    let br = nl.link_by_name("br-t").expect("get").expect("exists");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    assert_eq!(br.vlan_filtering, Some(false));
    assert_eq!(br.hairpin, None);
    assert!(!br.up && !br.promisc);
    assert!(br.mac.is_some());
    assert_eq!(
        nl.link_by_index(br.index).expect("by index"),
        Some(br.clone())
    );

    let err = nl.create_bridge("br-t", None, false).expect_err("twice");
    assert!(err.is_exists(), "{err}");
    assert_eq!(nl.link_by_name("missing0").expect("lookup"), None);
    assert_eq!(nl.link_by_index(99999).expect("lookup"), None);
    let err = nl.delete_link(99999).expect_err("delete missing");
    assert!(err.is_not_found(), "{err}");
    // The kernel's extended-ACK text is kept in the message.
    let err = nl
        .create_bridge("br-small", Some(10), false)
        .expect_err("tiny mtu");
    assert_eq!(err.errno(), Some(EINVAL));
    assert!(err.to_string().contains("mtu"), "{err}");

    nl.set_up(br.index).expect("up");
    nl.set_promisc(br.index, true).expect("promisc");
    nl.set_mtu(br.index, 1300).expect("mtu");
    nl.set_mac(br.index, [0x02, 0, 0, 0, 0, 0x42]).expect("mac");
    let br2 = nl.link_by_index(br.index).expect("get").expect("exists");
    assert!(br2.up && br2.promisc);
    assert_eq!(br2.mtu, 1300);
    assert_eq!(br2.mac, Some([0x02, 0, 0, 0, 0, 0x42]));
    let shown = json(&["ip", "-j", "link", "show", "br-t"]);
    assert_eq!(shown[0]["address"], "02:00:00:00:00:42");
    assert_eq!(shown[0]["mtu"], 1300);

    nl.set_promisc(br.index, false).expect("promisc off");
    nl.set_down(br.index).expect("down");
    let br3 = nl.link_by_index(br.index).expect("get").expect("exists");
    assert!(!br3.up && !br3.promisc);

    nl.delete_link(br.index).expect("delete");
    assert_eq!(nl.link_by_name("br-t").expect("lookup"), None);
}

#[test]
fn veth_peer_created_in_other_netns() {
    let mut nl = private_netns();
    let ns2 = second_netns();
    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05];
    nl.create_veth("veth-host", "eth0", &ns2, Some(1450), Some(mac))
        .expect("create veth");

    let host = nl.link_by_name("veth-host").expect("get").expect("exists");
    assert_eq!(host.kind.as_deref(), Some("veth"));
    assert_eq!(host.mtu, 1450);
    assert_eq!(
        nl.link_by_name("eth0").expect("lookup"),
        None,
        "peer must not be here"
    );

    let mut nl2 = Netlink::in_netns(&ns2).expect("socket in ns2");
    let peer = nl2.link_by_name("eth0").expect("get").expect("peer in ns2");
    assert_eq!(peer.kind.as_deref(), Some("veth"));
    assert_eq!(peer.mac, Some(mac));
    assert_eq!(peer.mtu, 1450);
    assert_eq!(peer.peer_index, Some(host.index));
    assert_eq!(host.peer_index, Some(peer.index));
    let names: Vec<String> = nl2
        .links()
        .expect("dump")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo", "eth0"]);

    // Collisions on either side are EEXIST, so the caller can retry with another host name.
    let err = nl
        .create_veth("veth-host", "eth1", &ns2, None, None)
        .expect_err("host name taken");
    assert!(err.is_exists(), "{err}");
    let err = nl
        .create_veth("veth-other", "eth0", &ns2, None, None)
        .expect_err("peer name taken");
    assert!(err.is_exists(), "{err}");
    assert_eq!(nl.link_by_name("veth-other").expect("lookup"), None);

    // Deleting the host end takes the peer with it.
    nl.delete_link(host.index).expect("delete");
    assert_eq!(nl2.link_by_name("eth0").expect("lookup"), None);
}

/// A bridge with one veth port (peer in a throwaway netns); returns (bridge, port) indexes.
fn bridge_with_port(nl: &mut Netlink, vlan_filtering: bool) -> (u32, u32, Netns) {
    let br = bridge(nl, "br-p", vlan_filtering);
    let ns2 = second_netns();
    nl.create_veth("veth-p", "eth0", &ns2, None, None)
        .expect("veth");
    let port = nl.link_by_name("veth-p").expect("get").expect("port").index;
    nl.set_master(port, br).expect("master");
    nl.set_up(port).expect("up");
    (br, port, ns2)
}

#[test]
fn bridge_port_master_hairpin_isolation() {
    let mut nl = private_netns();
    let (br, port, _ns2) = bridge_with_port(&mut nl, false);

    let link = nl.link_by_index(port).expect("get").expect("port");
    assert_eq!(link.master, Some(br));
    assert_eq!((link.hairpin, link.isolated), (Some(false), Some(false)));

    nl.set_bridge_port(port, true, true).expect("port flags");
    let link = nl.link_by_index(port).expect("get").expect("port");
    assert_eq!((link.hairpin, link.isolated), (Some(true), Some(true)));
    let shown = json(&["ip", "-j", "-d", "link", "show", "veth-p"]);
    assert_eq!(shown[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    assert_eq!(shown[0]["linkinfo"]["info_slave_data"]["isolated"], true);
    nl.set_bridge_port(port, false, true).expect("port flags");
    let link = nl.link_by_index(port).expect("get").expect("port");
    assert_eq!((link.hairpin, link.isolated), (Some(false), Some(true)));
}

/// VLAN filtering needs CONFIG_BRIDGE_VLAN_FILTERING, which the sandbox kernel this was written
/// on (6.18.44-fc) lacks: creating a bridge with vlan_filtering 1 fails with EOPNOTSUPP there,
/// for `ip link add ... type bridge vlan_filtering 1` too. Run with `--ignored` elsewhere.
#[test]
#[ignore = "needs CONFIG_BRIDGE_VLAN_FILTERING; scripts/test.sh runs it on a kernel that has it"]
fn bridge_vlan_filtering_and_vlans() {
    let mut nl = private_netns();
    let (br, port, _ns2) = bridge_with_port(&mut nl, true);
    assert_eq!(
        nl.link_by_index(br)
            .expect("get")
            .expect("br")
            .vlan_filtering,
        Some(true)
    );
    nl.bridge_vlan_add(port, 100, true, true).expect("vlan 100");
    nl.bridge_vlan_add(port, 200, false, false)
        .expect("vlan 200");
    let vlans = json(&["bridge", "-j", "vlan", "show", "dev", "veth-p"]);
    let entries = vlans[0]["vlans"].as_array().expect("vlans");
    let v100 = entries.iter().find(|v| v["vlan"] == 100).expect("vlan 100");
    let flags = v100["flags"].as_array().expect("flags");
    assert!(
        flags.contains(&"PVID".into()) && flags.contains(&"Egress Untagged".into()),
        "{v100}"
    );
    let v200 = entries.iter().find(|v| v["vlan"] == 200).expect("vlan 200");
    assert!(v200.get("flags").is_none(), "{v200}");

    nl.bridge_vlan_del(port, 100).expect("del vlan 100");
    nl.bridge_vlan_del(port, 1).expect("del default vlan 1");
    let vlans = json(&["bridge", "-j", "vlan", "show", "dev", "veth-p"]);
    let vids: Vec<u64> = vlans[0]["vlans"]
        .as_array()
        .expect("vlans")
        .iter()
        .filter_map(|v| v["vlan"].as_u64())
        .collect();
    assert_eq!(vids, [200]);
}

#[test]
fn addresses_add_list_delete() {
    let mut nl = private_netns();
    let br = bridge(&mut nl, "br-a", false);
    nl.add_addr(br, net("10.1.2.3/24")).expect("add v4");
    nl.add_addr(br, net("fd00::3/64")).expect("add v6");
    let err = nl.add_addr(br, net("10.1.2.3/24")).expect_err("twice");
    assert!(err.is_exists(), "{err}");

    let addrs = nl.addrs(Some(br)).expect("dump");
    let v4 = addrs
        .iter()
        .find(|a| a.address == net("10.1.2.3/24"))
        .expect("v4 listed");
    assert_eq!((v4.index, v4.scope, v4.dadfailed), (br, 0, false));
    assert!(addrs.iter().any(|a| a.address == net("fd00::3/64")));
    assert!(addrs.iter().all(|a| a.index == br));
    // lo's addresses are not in a per-link dump but are in the full one.
    let all = nl.addrs(None).expect("dump all");
    assert!(all.iter().any(|a| a.address == net("127.0.0.1/8")));

    // Broadcast is set as the reference (vishvananda/netlink AddrAdd) does.
    let shown = json(&["ip", "-j", "-4", "addr", "show", "br-a"]);
    assert_eq!(shown[0]["addr_info"][0]["broadcast"], "10.1.2.255");

    nl.del_addr(br, net("10.1.2.3/24")).expect("del");
    assert!(
        !nl.addrs(Some(br))
            .expect("dump")
            .iter()
            .any(|a| a.address == net("10.1.2.3/24"))
    );
    let err = nl.del_addr(br, net("10.1.2.3/24")).expect_err("del twice");
    assert_eq!(err.errno(), Some(EADDRNOTAVAIL), "{err}");
}

/// EINVAL on Linux.
const EINVAL: i32 = 22;
/// EADDRNOTAVAIL on Linux (the crate's errors expose raw errnos).
const EADDRNOTAVAIL: i32 = 99;

#[test]
fn routes_add_list_delete() {
    let mut nl = private_netns();
    let br = bridge(&mut nl, "br-r", false);
    nl.add_addr(br, net("10.1.2.3/24")).expect("addr");

    let gw: IpAddr = "10.1.2.1".parse().expect("ip");
    let mut via = RouteEntry::new(net("10.9.0.0/16"));
    via.gw = Some(gw);
    via.oif = Some(br);
    via.priority = Some(50);
    via.mtu = Some(1400);
    via.advmss = Some(1360);
    nl.add_route(&via).expect("route via gw");
    let err = nl.add_route(&via).expect_err("twice");
    assert!(err.is_exists(), "{err}");

    let mut direct = RouteEntry::new(net("10.8.0.0/16"));
    direct.oif = Some(br);
    nl.add_route(&direct).expect("direct route");

    let mut other_table = RouteEntry::new(net("0.0.0.0/0"));
    other_table.gw = Some(gw);
    other_table.table = Some(1000);
    nl.add_route(&other_table).expect("table 1000 default");

    let routes = nl.routes(Family::V4).expect("dump");
    let got = routes
        .iter()
        .find(|r| r.dst == net("10.9.0.0/16"))
        .expect("via route listed");
    assert_eq!(got.gw, Some(gw));
    assert_eq!(got.oif, Some(br));
    assert_eq!(
        (got.priority, got.mtu, got.advmss),
        (Some(50), Some(1400), Some(1360))
    );
    assert_eq!((got.table, got.scope), (Some(254), Some(0)));
    let got = routes
        .iter()
        .find(|r| r.dst == net("10.8.0.0/16"))
        .expect("direct listed");
    assert_eq!((got.gw, got.scope), (None, Some(253)));
    let got = routes
        .iter()
        .find(|r| r.table == Some(1000))
        .expect("table 1000 listed");
    assert_eq!(got.dst, net("0.0.0.0/0"));
    assert!(routes.iter().all(|r| r.dst.is_ipv4()));
    let shown = json(&["ip", "-j", "-d", "route", "show", "10.9.0.0/16"]);
    assert_eq!(shown[0]["protocol"], "boot");

    nl.del_route(&via).expect("del");
    nl.del_route(&other_table).expect("del table 1000");
    let err = nl.del_route(&via).expect_err("del twice");
    assert!(err.is_not_found(), "{err}");
    let routes = nl.routes(Family::All).expect("dump");
    assert!(!routes.iter().any(|r| r.dst == net("10.9.0.0/16")));
    assert!(
        routes.iter().any(|r| r.dst.is_ipv6()),
        "v6 local routes in an All dump"
    );
}

#[test]
fn ipv6_route_via_gateway() {
    let mut nl = private_netns();
    let br = bridge(&mut nl, "br-6", false);
    nl.add_addr(br, net("fd00::3/64")).expect("addr");
    let mut r = RouteEntry::new(net("fd01::/64"));
    r.gw = Some("fd00::1".parse().expect("ip"));
    r.oif = Some(br);
    nl.add_route(&r).expect("v6 route");
    let routes = nl.routes(Family::V6).expect("dump");
    let got = routes
        .iter()
        .find(|x| x.dst == net("fd01::/64"))
        .expect("listed");
    assert_eq!(got.gw, r.gw);
}

#[test]
fn dump_spanning_many_datagrams() {
    let mut nl = private_netns();
    for i in 0..60 {
        nl.create_bridge(&format!("br-many{i}"), None, false)
            .expect("bridge");
    }
    let links = nl.links().expect("dump");
    assert_eq!(links.len(), 61);
    // The socket is still in sync after a multi-part dump.
    assert!(nl.link_by_name("br-many59").expect("get").is_some());
}

#[test]
fn sysctl_in_private_and_other_netns() {
    let _nl = private_netns();
    sysctl::set("net/ipv4/ip_forward", "1").expect("set");
    assert_eq!(sysctl::get("net/ipv4/ip_forward").expect("get"), "1");
    sysctl::ensure("net/ipv4/ip_forward", "1").expect("ensure same");
    sysctl::ensure("net/ipv4/conf/lo/arp_notify", "1").expect("ensure change");
    assert_eq!(
        sysctl::get("net/ipv4/conf/lo/arp_notify").expect("get"),
        "1"
    );

    // /proc/sys/net follows the netns of the thread that opens it.
    let ns2 = second_netns();
    let there = netns::run_in(&ns2, || sysctl::get("net/ipv4/ip_forward"))
        .expect("run_in")
        .expect("get");
    assert_eq!(there, "0");
    let err = sysctl::get("net/ipv6/conf/nope0/accept_ra").expect_err("missing");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn netns_open_and_run_in() {
    let _nl = private_netns();
    let err =
        Netns::open(std::path::Path::new("/run/netns/rcni-does-not-exist")).expect_err("missing");
    assert!(err.is_not_found(), "{err}");

    let here = std::fs::read_link("/proc/thread-self/ns/net").expect("readlink");
    let ns2 = second_netns();
    let inside = netns::run_in(&ns2, || std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("run_in")
        .expect("readlink");
    assert_ne!(here, inside);
    // The calling thread did not move.
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").expect("readlink"),
        here
    );
    // The current netns is named without /proc/thread-self (kernels before 3.17 lack it) and
    // is this thread's, not the main thread's.
    let cur = Netns::current().expect("current");
    assert!(
        !cur.path().starts_with("/proc/thread-self"),
        "{}",
        cur.path().display()
    );
    assert_eq!(std::fs::read_link(cur.path()).expect("readlink"), here);
    let main = std::fs::read_link("/proc/self/ns/net").expect("readlink");
    assert_ne!(main, here, "this test thread has its own netns");
}

/// The old-kernel path (no NETLINK_GET_STRICT_CHK, no extended or capped ACKs), on this
/// kernel: the kernel then ignores the link filter of an address dump, and `addrs` must
/// still return only the asked link's addresses; kernel errors still decode.
#[test]
fn without_strict_checking_dumps_are_filtered_here() {
    let mut strict = private_netns();
    assert!(strict.strict_checking(), "this kernel has strict checking");
    let a = bridge(&mut strict, "br-sa", false);
    let b = bridge(&mut strict, "br-sb", false);
    strict.add_addr(a, net("10.7.1.1/24")).expect("addr a");
    strict.add_addr(b, net("10.7.2.1/24")).expect("addr b");

    let mut old = Netlink::without_optional_features().expect("plain socket");
    assert!(!old.strict_checking());
    let only_a: Vec<IpNetwork> = old
        .addrs(Some(a))
        .expect("addrs")
        .into_iter()
        .map(|x| x.address)
        .filter(IpNetwork::is_ipv4)
        .collect();
    assert_eq!(only_a, [net("10.7.1.1/24")]);
    assert_eq!(
        old.addrs(Some(a)).expect("addrs"),
        strict.addrs(Some(a)).expect("addrs"),
        "the same answer with and without the kernel's filtering"
    );

    // Errors without extended ACKs: the kernel echoes the whole request; the errno survives.
    let err = old.add_addr(a, net("10.7.1.1/24")).expect_err("twice");
    assert!(err.is_exists(), "{err}");
    let err = old.create_bridge("br-sa", None, false).expect_err("exists");
    assert!(err.is_exists(), "{err}");
    let mut unreachable = RouteEntry::new(net("10.99.0.0/16"));
    unreachable.gw = Some("192.0.2.1".parse().expect("ip"));
    let err = old
        .add_route(&unreachable)
        .expect_err("gateway not on link");
    assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
}

#[test]
fn route_get_names_the_outgoing_interface() {
    let mut nl = private_netns();
    let br = bridge(&mut nl, "rg0", false);
    nl.add_addr(br, net("10.9.0.1/24")).expect("add v4");
    let r = nl
        .route_get("10.9.0.5".parse().expect("ip"))
        .expect("route get")
        .expect("a route");
    assert_eq!(r.oif, Some(br));
    // No route: the kernel says ENETUNREACH.
    let err = nl
        .route_get("192.0.2.1".parse().expect("ip"))
        .expect_err("unreachable");
    assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
}
