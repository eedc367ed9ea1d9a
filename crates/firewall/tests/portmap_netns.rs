//! Port mappings with the real tools: every test runs on a thread that unshared a fresh
//! network namespace, so `nft`/`iptables*` only ever see that namespace. Needs root: without
//! it the tests fail, they do not skip. Traffic is tested by the integration tests; here the
//! kernel must accept every transaction and hold exactly the rules we expect afterwards.

#![allow(clippy::unwrap_used)]

use firewall::portmap::{
    self, DNAT_CHAIN, Iptables, MarkMasq, Nftables, Options, PortMapper, PortMapping, Protocol,
    Request,
};
use firewall::{Attachment, IpNetwork, SystemRunner};
use nix::sched::{CloneFlags, unshare};
use std::process::Command;

fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) failed: these tests must run as root");
            assert_ne!(
                before,
                std::fs::read_link("/proc/thread-self/ns/net").unwrap()
            );
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

fn sh(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn att(cid: &str) -> Attachment {
    Attachment {
        network: "mynet".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

fn pm(hp: u16, cp: u16, proto: Protocol, host_ip: Option<&str>) -> PortMapping {
    PortMapping {
        host_port: hp,
        container_port: cp,
        protocol: proto,
        host_ip: host_ip.map(|s| s.parse().unwrap()),
    }
}

fn mappings() -> Vec<PortMapping> {
    vec![
        pm(8080, 80, Protocol::Tcp, None),
        pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")),
        pm(5353, 53, Protocol::Udp, None),
        pm(9999, 99, Protocol::Sctp, Some("fd00:1::1")),
    ]
}

fn dual(last: u8) -> Vec<IpNetwork> {
    vec![
        format!("10.244.1.{last}/24").parse().unwrap(),
        format!("fd00::{last}/64").parse().unwrap(),
    ]
}

fn nft_ruleset() -> String {
    sh("nft", &["list", "ruleset"])
}

#[test]
fn nftables_setup_check_teardown() {
    in_private_netns(|| {
        let nft = Nftables::new();
        let (a, b) = (att("a"), att("b"));
        let (ms, opts) = (mappings(), Options::default());
        let (addrs_a, addrs_b) = (dual(2), dual(3));
        let req_a = Request {
            att: &a,
            addrs: &addrs_a,
            mappings: &ms,
            opts: &opts,
        };
        nft.setup(&req_a).unwrap();
        nft.setup(&req_a).unwrap(); // idempotent
        nft.check(&req_a).unwrap();
        let rs = nft_ruleset();
        let chain_a = format!("a-{}", firewall::naming::instance_hash(&a));
        assert!(rs.contains(&format!("tcp . 8080 : jump {chain_a}")), "{rs}");
        assert!(
            rs.contains(&format!("192.168.1.5 . tcp . 8443 : jump {chain_a}")),
            "{rs}"
        );
        assert!(
            rs.contains(&format!("fd00:1::1 . sctp . 9999 : jump {chain_a}")),
            "{rs}"
        );
        assert!(rs.contains("dnat to [fd00::2]:99"), "{rs}");
        assert_eq!(rs.matches("dnat to 10.244.1.2:").count(), 3, "{rs}");

        // A new attachment on a set-up table touches nothing shared (no flush of the base
        // chains: their rule handles stay).
        let handles = || {
            sh(
                "nft",
                &["-a", "list", "chain", "ip", "rcni_hostport", "prerouting"],
            )
        };
        let before = handles();
        let c = att("c");
        let addrs_c = dual(4);
        let other_port = vec![pm(7070, 70, Protocol::Tcp, None)];
        let req_c = Request {
            att: &c,
            addrs: &addrs_c,
            mappings: &other_port,
            opts: &opts,
        };
        nft.setup(&req_c).unwrap();
        nft.check(&req_c).unwrap();
        assert_eq!(handles(), before);
        nft.teardown(&c).unwrap();
        // Another attachment takes host port 8080 (its element replaces a's: newest wins).
        let only_8080 = vec![pm(8080, 81, Protocol::Tcp, None)];
        let req_b = Request {
            att: &b,
            addrs: &addrs_b,
            mappings: &only_8080,
            opts: &opts,
        };
        nft.setup(&req_b).unwrap();
        nft.check(&req_b).unwrap();
        let e = nft.check(&req_a).unwrap_err();
        assert!(e.to_string().contains("goes to"), "{e}");
        // a's DEL leaves b's mapping alone.
        nft.teardown(&a).unwrap();
        nft.teardown(&a).unwrap(); // idempotent
        let rs = nft_ruleset();
        assert!(!rs.contains(&chain_a), "{rs}");
        assert!(!rs.contains("10.244.1.2"), "{rs}");
        nft.check(&req_b).unwrap();
        // GC with b valid keeps it; without, removes it.
        nft.gc("mynet", std::slice::from_ref(&b)).unwrap();
        nft.check(&req_b).unwrap();
        nft.gc("othernet", &[]).unwrap();
        nft.check(&req_b).unwrap();
        nft.gc("mynet", &[]).unwrap();
        assert!(nft.check(&req_b).is_err());
        let rs = nft_ruleset();
        assert!(!rs.contains("jump a-"), "{rs}");
        assert!(!rs.contains("dnat"), "{rs}");
        assert_eq!(portmap::list_all().unwrap(), vec![]);
    });
}

#[test]
fn nftables_options() {
    in_private_netns(|| {
        let nft = Nftables::new();
        let a = att("o");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs = dual(4);
        let opts = Options {
            masq_all: true,
            mark: MarkMasq::Bit(20),
            conditions_v4: vec![
                "ip".into(),
                "saddr".into(),
                "!=".into(),
                "192.0.2.0/24".into(),
            ],
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        nft.setup(&req).unwrap();
        nft.check(&req).unwrap();
        let rs = nft_ruleset();
        assert!(rs.contains("chain masquerade-bit20"), "{rs}");
        assert!(
            rs.contains("ip saddr != 192.0.2.0/24 tcp dport 80 jump setmark-bit20"),
            "{rs}"
        );
        let listed = portmap::list_all().unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(
            listed
                .iter()
                .all(|l| l.container_id.as_deref() == Some("o"))
        );
        portmap::teardown_all(&a).unwrap();
        assert!(portmap::list_all().unwrap().is_empty());
    });
}

#[test]
fn iptables_setup_check_teardown() {
    in_private_netns(|| {
        let ipt = Iptables::new(SystemRunner::new());
        let a = att("a");
        let (ms, opts, addrs) = (mappings(), Options::default(), dual(2));
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        ipt.setup(&req).unwrap();
        ipt.check(&req).unwrap();
        // A second ADD replaces, never duplicates.
        ipt.setup(&req).unwrap();
        ipt.check(&req).unwrap();
        let chain = firewall::naming::reference_dnat_chain("mynet", "a");
        for tool in ["iptables", "ip6tables"] {
            let nat = sh(tool, &["-w", "-t", "nat", "-S"]);
            assert_eq!(nat.matches(&format!("-j {chain}")).count(), 3, "{nat}");
            assert_eq!(nat.matches(&format!("-j {DNAT_CHAIN}")).count(), 2, "{nat}");
            assert_eq!(nat.matches("-j CNI-HOSTPORT-MASQ").count(), 1, "{nat}");
            assert_eq!(nat.matches("--set-xmark 0x2000/0x2000").count(), 1, "{nat}");
        }
        let v6 = sh("ip6tables", &["-w", "-t", "nat", "-S", &chain]);
        assert!(v6.contains("-d fd00:1::1/128 -p sctp -m sctp --dport 9999 -j DNAT --to-destination [fd00::2]:99"), "{v6}");
        assert_eq!(portmap::list_all().unwrap().len(), 2);

        // CHECK notices a missing rule.
        sh(
            "iptables",
            &[
                "-w",
                "-t",
                "nat",
                "-D",
                &chain,
                "-p",
                "udp",
                "-m",
                "udp",
                "--dport",
                "5353",
                "-j",
                "DNAT",
                "--to-destination",
                "10.244.1.2:53",
            ],
        );
        assert!(ipt.check(&req).is_err());

        portmap::teardown_all(&a).unwrap();
        portmap::teardown_all(&a).unwrap();
        for tool in ["iptables", "ip6tables"] {
            let nat = sh(tool, &["-w", "-t", "nat", "-S"]);
            assert!(!nat.contains("CNI-DN-"), "{nat}");
        }
        assert!(portmap::list_all().unwrap().is_empty());

        // GC removes another network's stale chain only for that network.
        ipt.setup(&req).unwrap();
        portmap::gc_all("othernet", &[]).unwrap();
        ipt.check(&req).unwrap();
        portmap::gc_all("mynet", std::slice::from_ref(&a)).unwrap();
        ipt.check(&req).unwrap();
        portmap::gc_all("mynet", &[]).unwrap();
        assert!(ipt.check(&req).is_err());
    });
}

#[test]
fn iptables_external_mark_chain_and_conditions() {
    in_private_netns(|| {
        let ipt = Iptables::new(SystemRunner::new());
        sh("iptables", &["-w", "-t", "nat", "-N", "KUBE-MARK-MASQ"]);
        let a = att("x");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
        let opts = Options {
            mark: MarkMasq::External("KUBE-MARK-MASQ".into()),
            conditions_v4: vec!["!".into(), "-d".into(), "192.0.2.0/24".into()],
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        ipt.setup(&req).unwrap();
        ipt.check(&req).unwrap();
        let nat = sh("iptables", &["-w", "-t", "nat", "-S"]);
        assert!(!nat.contains("CNI-HOSTPORT-SETMARK"), "{nat}");
        assert!(nat.contains("! -d 192.0.2.0/24"), "{nat}");
        assert!(nat.contains("-j KUBE-MARK-MASQ"), "{nat}");
        // A missing external chain fails the setup, and nothing is left.
        let b = att("y");
        let missing = Options {
            mark: MarkMasq::External("NOPE".into()),
            ..Options::default()
        };
        let req = Request {
            att: &b,
            mappings: &ms,
            opts: &missing,
            addrs: &addrs,
        };
        assert!(ipt.setup(&req).is_err());
        let nat = sh("iptables", &["-w", "-t", "nat", "-S"]);
        assert!(
            !nat.contains(&firewall::naming::reference_dnat_chain("mynet", "y")),
            "{nat}"
        );
    });
}

#[test]
fn concurrent_iptables_setups_share_the_chains() {
    const N: usize = 12;
    in_private_netns(|| {
        let opts = Options::default();
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let atts: Vec<Attachment> = (0..N).map(|i| att(&format!("c{i}"))).collect();
        let addrs: Vec<Vec<IpNetwork>> = (0..N)
            .map(|i| vec![format!("10.0.0.{}/24", i + 2).parse().unwrap()])
            .collect();
        let lock = tempfile::NamedTempFile::new().unwrap();
        let lock = lock.path();
        // All start together, on a node without the shared chains: every one of them
        // finds them missing (threads started from this one start in its private netns).
        let start = std::sync::Barrier::new(N);
        std::thread::scope(|s| {
            for (a, ad) in atts.iter().zip(&addrs) {
                let (opts, ms, start) = (&opts, &ms, &start);
                s.spawn(move || {
                    let req = Request {
                        att: a,
                        addrs: ad,
                        mappings: ms,
                        opts,
                    };
                    start.wait();
                    Iptables::new(SystemRunner::new())
                        .with_lock(lock)
                        .setup(&req)
                        .unwrap();
                });
            }
        });
        let nat = sh("iptables", &["-w", "-t", "nat", "-S"]);
        assert_eq!(nat.matches("-N CNI-HOSTPORT-DNAT").count(), 1, "{nat}");
        assert_eq!(nat.matches(&format!("-j {DNAT_CHAIN}")).count(), 2, "{nat}");
        assert_eq!(nat.matches("-j CNI-HOSTPORT-MASQ").count(), 1, "{nat}");
        assert_eq!(nat.matches("-j MARK --set-xmark").count(), 1, "{nat}");
        for a in &atts {
            let chain = firewall::naming::reference_dnat_chain("mynet", &a.container_id);
            assert_eq!(
                nat.matches(&format!("-A {DNAT_CHAIN} ")).count(),
                N,
                "{nat}"
            );
            assert!(nat.contains(&format!("-j {chain}")), "{nat}");
        }
    });
}

/// The legacy variant (`iptables-legacy*`, what older nodes run): the same texts must pass.
#[test]
fn iptables_legacy_variant() {
    struct Legacy(SystemRunner);
    fn legacy(tool: &str) -> String {
        match tool.split_once('-') {
            Some((base, rest)) => format!("{base}-legacy-{rest}"),
            None => format!("{tool}-legacy"),
        }
    }
    impl firewall::Runner for Legacy {
        fn has(&self, tool: &str) -> bool {
            self.0.has(&legacy(tool))
        }
        fn run(
            &self,
            tool: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<firewall::Output, firewall::Error> {
            self.0.run(&legacy(tool), args, stdin)
        }
    }
    in_private_netns(|| {
        let ipt = Iptables::new(Legacy(SystemRunner::new()));
        let a = att("leg");
        let (ms, opts, addrs) = (mappings(), Options::default(), dual(2));
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        ipt.setup(&req).unwrap();
        ipt.setup(&req).unwrap();
        ipt.check(&req).unwrap();
        let chain = firewall::naming::reference_dnat_chain("mynet", "leg");
        for tool in ["iptables-legacy", "ip6tables-legacy"] {
            let nat = sh(tool, &["-w", "-t", "nat", "-S"]);
            assert_eq!(nat.matches(&format!("-j {chain}")).count(), 3, "{nat}");
            assert_eq!(nat.matches(&format!("-j {DNAT_CHAIN}")).count(), 2, "{nat}");
        }
        // A second attachment takes the one-restore path.
        let b = att("leg2");
        let addrs_b = dual(3);
        let req_b = Request {
            att: &b,
            addrs: &addrs_b,
            ..req
        };
        ipt.setup(&req_b).unwrap();
        ipt.check(&req_b).unwrap();
        ipt.gc("mynet", std::slice::from_ref(&b)).unwrap();
        assert!(ipt.check(&req).is_err());
        ipt.check(&req_b).unwrap();
        ipt.teardown(&b).unwrap();
        for tool in ["iptables-legacy", "ip6tables-legacy"] {
            let nat = sh(tool, &["-w", "-t", "nat", "-S"]);
            assert!(!nat.contains("CNI-DN-"), "{nat}");
        }
    });
}

/// A runner that records the tools it ran (`legacy`: the x_tables variants).
struct Recording(std::cell::RefCell<Vec<String>>, bool);

impl Recording {
    fn new(legacy: bool) -> Self {
        Self(std::cell::RefCell::new(Vec::new()), legacy)
    }

    fn tool(&self, tool: &str) -> String {
        match (self.1, tool.split_once('-')) {
            (false, _) => tool.to_string(),
            (true, Some((base, rest))) => format!("{base}-legacy-{rest}"),
            (true, None) => format!("{tool}-legacy"),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

impl firewall::Runner for Recording {
    fn has(&self, tool: &str) -> bool {
        SystemRunner::new().has(&self.tool(tool))
    }
    fn run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<firewall::Output, firewall::Error> {
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

fn nat(tool: &str) -> String {
    sh(tool, &["-w", "-t", "nat", "-S"])
}

/// DEL on a node whose rules are nftables or iptables-nft: everything goes over netlink, no
/// process runs (not even `nft` to look), and another attachment's rules stay.
#[test]
fn teardown_all_spawns_nothing_for_nftables_and_iptables_nft() {
    in_private_netns(|| {
        let (a, b) = (att("a"), att("b"));
        let (ms, opts) = (mappings(), Options::default());
        let (addrs_a, addrs_b) = (dual(2), dual(3));
        let req = |att, addrs| Request {
            att,
            addrs,
            mappings: &ms,
            opts: &opts,
        };
        // a has both backends' rules (a node that switched backend), b only iptables ones
        // and an nft mapping on another port.
        Nftables::new().setup(&req(&a, &addrs_a)).unwrap();
        let ipt = Iptables::new(SystemRunner::new());
        ipt.setup(&req(&a, &addrs_a)).unwrap();
        ipt.setup(&req(&b, &addrs_b)).unwrap();
        let other = vec![pm(7070, 70, Protocol::Tcp, None)];
        let req_b = Request {
            mappings: &other,
            ..req(&b, &addrs_b)
        };
        Nftables::new().setup(&req_b).unwrap();
        let rec = Recording::new(false);
        portmap::teardown_all_with(&rec, &a).unwrap();
        assert_eq!(rec.calls(), Vec::<String>::new());
        let chain_a = firewall::naming::reference_dnat_chain("mynet", "a");
        let chain_b = firewall::naming::reference_dnat_chain("mynet", "b");
        for tool in ["iptables", "ip6tables"] {
            let n = nat(tool);
            assert!(!n.contains(&chain_a), "{n}");
            assert_eq!(n.matches(&format!("-j {chain_b}")).count(), 3, "{n}");
        }
        let rs = nft_ruleset();
        assert!(!rs.contains(&portmap_chain(&a)), "{rs}");
        assert!(rs.contains(&portmap_chain(&b)), "{rs}");
        Nftables::new().check(&req_b).unwrap();
        ipt.check(&req(&b, &addrs_b)).unwrap();
        // Nothing of a left: a second DEL reads and sends nothing, still no process.
        portmap::teardown_all_with(&rec, &a).unwrap();
        assert_eq!(rec.calls(), Vec::<String>::new());
    });
}

/// Legacy (x_tables) nat tables are invisible to netlink: those are listed and cleaned with
/// the tools, and only those.
#[test]
fn teardown_all_cleans_legacy_iptables_with_the_tools() {
    in_private_netns(|| {
        let rec = Recording::new(true);
        let a = att("leg");
        let (ms, opts, addrs) = (mappings(), Options::default(), dual(2));
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        Iptables::new(&rec).setup(&req).unwrap();
        rec.0.borrow_mut().clear();
        portmap::teardown_all_with(&rec, &a).unwrap();
        let calls = rec.calls();
        assert!(
            calls[0].starts_with("iptables-legacy -w -t nat -S CNI-HOSTPORT-DNAT"),
            "{calls:?}"
        );
        for tool in ["iptables-legacy", "ip6tables-legacy"] {
            let n = nat(tool);
            assert!(!n.contains("CNI-DN-"), "{n}");
        }
    });
}

fn portmap_chain(a: &Attachment) -> String {
    format!("a-{}", firewall::naming::instance_hash(a))
}

/// Pods started together on a node without the tables: every one of them finds the
/// skeleton missing; the shared chains end up whole, each lookup rule once.
#[test]
fn concurrent_nftables_setups_share_the_skeleton() {
    const N: usize = 12;
    in_private_netns(|| {
        let opts = Options::default();
        let atts: Vec<Attachment> = (0..N).map(|i| att(&format!("c{i}"))).collect();
        let addrs: Vec<Vec<IpNetwork>> = (0..N).map(|i| dual(i as u8 + 2)).collect();
        let ms: Vec<Vec<PortMapping>> = (0..N)
            .map(|i| vec![pm(8000 + i as u16, 80, Protocol::Tcp, None)])
            .collect();
        let start = std::sync::Barrier::new(N);
        std::thread::scope(|s| {
            for ((a, ad), m) in atts.iter().zip(&addrs).zip(&ms) {
                let (opts, start) = (&opts, &start);
                s.spawn(move || {
                    let req = Request {
                        att: a,
                        addrs: ad,
                        mappings: m,
                        opts,
                    };
                    start.wait();
                    Nftables::new().setup(&req).unwrap();
                });
            }
        });
        for ((a, ad), m) in atts.iter().zip(&addrs).zip(&ms) {
            let req = Request {
                att: a,
                addrs: ad,
                mappings: m,
                opts: &opts,
            };
            Nftables::new().check(&req).unwrap();
        }
        for fam in ["ip", "ip6"] {
            for chain in ["prerouting", "output"] {
                let c = sh("nft", &["list", "chain", fam, "rcni_hostport", chain]);
                assert_eq!(c.matches("vmap @").count(), 2, "{c}");
            }
        }
    });
}

/// A re-ADD with other host ports moves the attachment's mappings: the old ports stop
/// pointing at it, the new ones do, and a port another attachment took over stays theirs.
#[test]
fn re_add_moves_the_mappings_and_leaves_taken_ports_alone() {
    in_private_netns(|| {
        let nft = Nftables::new();
        let (a, b) = (att("a"), att("b"));
        let opts = Options::default();
        let addrs = dual(2);
        let first = vec![
            pm(8080, 80, Protocol::Tcp, None),
            pm(8081, 81, Protocol::Tcp, None),
        ];
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &first,
            opts: &opts,
        };
        nft.setup(&req).unwrap();
        // b takes 8081 over (newest wins).
        let addrs_b = dual(3);
        let taken = vec![pm(8081, 91, Protocol::Tcp, None)];
        let req_b = Request {
            att: &b,
            addrs: &addrs_b,
            mappings: &taken,
            opts: &opts,
        };
        nft.setup(&req_b).unwrap();
        let second = vec![pm(9090, 90, Protocol::Udp, None)];
        let req2 = Request {
            mappings: &second,
            ..req
        };
        nft.setup(&req2).unwrap();
        nft.check(&req2).unwrap();
        nft.check(&req_b).unwrap();
        let rs = nft_ruleset();
        let (ca, cb) = (portmap_chain(&a), portmap_chain(&b));
        assert!(!rs.contains(&format!("tcp . 8080 : jump {ca}")), "{rs}");
        assert!(rs.contains(&format!("tcp . 8081 : jump {cb}")), "{rs}");
        assert!(rs.contains(&format!("udp . 9090 : jump {ca}")), "{rs}");
        assert!(!rs.contains("dnat to 10.244.1.2:80"), "{rs}");
        // IPv4 only now: the IPv6 chain goes.
        let v4 = vec![addrs[0]];
        let req3 = Request { addrs: &v4, ..req2 };
        nft.setup(&req3).unwrap();
        nft.check(&req3).unwrap();
        let v6 = sh("nft", &["list", "table", "ip6", "rcni_hostport"]);
        assert!(!v6.contains(&ca), "{v6}");
        // CHECK notices a changed rule of the attachment and a changed base chain.
        sh("nft", &["flush", "chain", "ip", "rcni_hostport", &ca]);
        let e = nft.check(&req3).unwrap_err();
        assert!(e.to_string().contains("hostport rules"), "{e}");
        nft.setup(&req3).unwrap();
        nft.check(&req3).unwrap();
        sh("nft", &["flush", "chain", "ip", "rcni_hostport", "output"]);
        let e = nft.check(&req3).unwrap_err();
        assert!(e.to_string().contains("chain output"), "{e}");
    });
}

/// The Go plugin's nftables rules (tables `cni_hostport`, comment = container ID) go with
/// the container's DEL; other containers' stay.
#[test]
fn teardown_all_removes_the_reference_nft_rules() {
    in_private_netns(|| {
        let script = "add table ip cni_hostport\n\
             add chain ip cni_hostport hostports\n\
             add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }\n\
             add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment \"gone\"\n\
             add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.3:80 comment \"kept\"\n\
             add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"gone\"\n";
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        let listed = portmap::list_all().unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        portmap::teardown_all(&att("gone")).unwrap();
        let rs = nft_ruleset();
        assert!(!rs.contains("\"gone\""), "{rs}");
        assert!(rs.contains("\"kept\""), "{rs}");
    });
}

/// Interface conditions reach the kernel as nft writes them.
#[test]
fn nftables_interface_conditions() {
    in_private_netns(|| {
        let a = att("if");
        let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
        let addrs = dual(4);
        let opts = Options {
            conditions_v4: vec!["iifname".into(), "!=".into(), "\"cni*\"".into()],
            conditions_v6: vec!["ip6 daddr != fd00:1::/64".into(), "oifname eth0".into()],
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let nft = Nftables::new();
        nft.setup(&req).unwrap();
        nft.check(&req).unwrap();
        let rs = nft_ruleset();
        assert!(
            rs.contains("iifname != \"cni*\" tcp dport 80 ip saddr 10.244.1.0/24 jump"),
            "{rs}"
        );
        assert!(
            rs.contains(
                "ip6 daddr != fd00:1::/64 oifname \"eth0\" tcp dport 80 dnat to [fd00::4]:8080"
            ),
            "{rs}"
        );
    });
}

/// A node set up by `nft` itself (the previous, text-rendering backend wrote exactly this
/// script: `src/nftables/testdata/portmap_setup.txt`) is checked, re-set up and cleaned by
/// the netlink backend.
#[test]
fn rules_made_by_nft_itself_are_checked_and_cleaned() {
    let script: String = include_str!("../src/nftables/testdata/portmap_setup.txt")
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    in_private_netns(|| {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "{script}");
        let a = att("cid1");
        let ms = vec![
            pm(8080, 80, Protocol::Tcp, None),
            pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")),
            pm(5353, 53, Protocol::Udp, Some("::")),
            pm(9999, 99, Protocol::Sctp, Some("fd00:1::1")),
        ];
        let addrs: Vec<IpNetwork> = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ];
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let opts = Options {
            conditions_v4: words("ip saddr != 192.0.2.0/24 iifname != \"veth*\""),
            conditions_v6: words("ip6 daddr != fc00::/7"),
            ..Options::default()
        };
        let req = Request {
            att: &a,
            addrs: &addrs,
            mappings: &ms,
            opts: &opts,
        };
        let nft = Nftables::new();
        nft.check(&req).unwrap();
        let before = nft_ruleset();
        nft.setup(&req).unwrap();
        nft.check(&req).unwrap();
        assert_eq!(nft_ruleset(), before, "a re-ADD changed nothing");
        assert_eq!(portmap::list_all().unwrap().len(), 2);
        portmap::teardown_all(&a).unwrap();
        let rs = nft_ruleset();
        assert!(!rs.contains("chain a-") && !rs.contains("dnat"), "{rs}");
        assert!(portmap::list_all().unwrap().is_empty());
    });
}
