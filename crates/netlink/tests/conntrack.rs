//! ctnetlink against the kernel: real conntrack entries in a private netns (thread-level
//! `unshare(CLONE_NEWNET)`), made by real UDP traffic. Needs root and FAILS without it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;

use netlink::conntrack::{self, Filter, proto};
use netlink::{Netlink, Netns, netns::run_in};
use nix::sched::{CloneFlags, unshare};

/// A fresh netns with lo up and connection tracking on (an nft rule that uses `ct`).
fn tracked_netns() -> Netns {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) failed: these tests must run as root");
        let mut nl = Netlink::new().expect("netlink");
        let lo = nl.link_by_name("lo").expect("lo").expect("lo exists");
        nl.set_up(lo.index).expect("lo up");
        let script = "add table inet t\n\
             add chain inet t out { type filter hook output priority 0 ; }\n\
             add rule inet t out ct state new counter\n";
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        assert!(child.wait().expect("nft").success(), "nft failed");
        Netns::current().expect("open thread netns")
    })
    .join()
    .expect("netns thread")
}

/// One datagram from `from` to `to` (the receiver need not exist: the entry is made anyway).
fn send(from: &str, to: &str) {
    let from: SocketAddr = from.parse().expect("addr");
    let sock = UdpSocket::bind(from).expect("bind");
    sock.send_to(b"x", to.parse::<SocketAddr>().expect("addr"))
        .expect("send");
}

fn udp_ports(v6: bool) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = conntrack::list(v6)
        .expect("list")
        .into_iter()
        .filter(|e| e.protocol == proto::UDP)
        .map(|e| (e.src_port, e.dst_port))
        .collect();
    v.sort();
    v
}

#[test]
fn deletes_udp_entries_by_original_destination_port() {
    let ns = tracked_netns();
    run_in(&ns, || {
        send("127.0.0.1:40000", "127.0.0.1:5353");
        send("127.0.0.1:40001", "127.0.0.1:5353");
        send("127.0.0.1:40002", "127.0.0.1:6000");
        send("[::1]:40003", "[::1]:5353");
        // A TCP entry to the same port must survive a UDP filter.
        let listener = std::net::TcpListener::bind("127.0.0.1:5353").expect("listen");
        let _client = std::net::TcpStream::connect("127.0.0.1:5353").expect("connect");
        let _server = listener.accept().expect("accept");
        assert_eq!(
            udp_ports(false),
            vec![(40000, 5353), (40001, 5353), (40002, 6000)]
        );
        let tcp_before = conntrack::list(false)
            .expect("list")
            .iter()
            .filter(|e| e.protocol == proto::TCP && e.dst_port == 5353)
            .count();
        assert_eq!(tcp_before, 1);
        let e = conntrack::list(false).expect("list");
        let one = e.iter().find(|e| e.src_port == 40000).expect("entry");
        assert_eq!(one.src, "127.0.0.1".parse::<IpAddr>().expect("ip"));

        let f = Filter {
            protocol: proto::UDP,
            dst_ports: vec![5353],
        };
        assert_eq!(conntrack::delete(false, &f).expect("delete"), 2);
        assert_eq!(udp_ports(false), vec![(40002, 6000)]);
        let tcp_after = conntrack::list(false)
            .expect("list")
            .iter()
            .filter(|e| e.protocol == proto::TCP && e.dst_port == 5353)
            .count();
        assert_eq!(tcp_after, 1, "the TCP entry was deleted too");
        // IPv6 is another table.
        assert_eq!(udp_ports(true), vec![(40003, 5353)]);
        assert_eq!(conntrack::delete(true, &f).expect("delete v6"), 1);
        assert!(udp_ports(true).is_empty());
        // Nothing left to delete: fine.
        assert_eq!(conntrack::delete(false, &f).expect("delete again"), 0);
    })
    .expect("run in netns");
}
