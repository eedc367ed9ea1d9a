//! The portmap plugin with real traffic. Every test builds its own world:
//!
//! ```text
//!  client netns  eth0 192.168.50.2/24, fd00:50::2/64
//!      │ veth
//!  node netns    eth0 192.168.50.1/24 + 192.168.50.3/24, fd00:50::1/64
//!      └─ bridge (our bridge + host-local: 10.244.9.0/24, fd00:244::/64, hairpin on)
//!           ├─ pod a  (rcni-echo: "pod-a PEER" on tcp 80 and udp 53)
//!           └─ pod b
//! ```
//!
//! `portmap` runs chained after `bridge` in the node netns, with the bridge's result as
//! prevResult, and the mappings in `runtimeConfig.portMappings`, as a runtime calls it.
//! Every assertion is about traffic or about the kernel's rule set.

use std::collections::BTreeSet;

use rcni_integration::echo::{Client, EchoServer};
use rcni_integration::{Call, TestNetns, bin, reference_bin, temp_dir, unique, veth_between};
use serde_json::{Value, json};

const ECHO: &str = env!("CARGO_BIN_EXE_rcni-echo");
const NET: &str = "pmnet";
const NODE4: &str = "192.168.50.1";
const NODE4_OTHER: &str = "192.168.50.3";
const NODE6: &str = "fd00:50::1";
const CLIENT4: &str = "192.168.50.2";
const CLIENT6: &str = "fd00:50::2";
const GATEWAY4: &str = "10.244.9.1";
const GATEWAY6: &str = "fd00:244::1";
const BACKENDS: [&str; 2] = ["iptables", "nftables"];

fn echo() -> &'static std::path::Path {
    std::path::Path::new(ECHO)
}

struct World {
    node: TestNetns,
    client: TestNetns,
    dir: tempfile::TempDir,
    bridge: String,
}

struct Pod {
    ns: TestNetns,
    id: String,
    result: Value,
    v4: String,
    v6: String,
}

impl World {
    fn new() -> World {
        let node = TestNetns::new("pmn");
        let client = TestNetns::new("pmc");
        veth_between(&node, "eth0", &client, "eth0");
        for (ns, addrs) in [
            (
                &node,
                vec![
                    format!("{NODE4}/24"),
                    format!("{NODE4_OTHER}/24"),
                    format!("{NODE6}/64"),
                ],
            ),
            (
                &client,
                vec![format!("{CLIENT4}/24"), format!("{CLIENT6}/64")],
            ),
        ] {
            for a in addrs {
                // nodad: the IPv6 address is usable at once.
                ns.exec_ok("ip", &["addr", "add", &a, "dev", "eth0", "nodad"]);
            }
        }
        World {
            node,
            client,
            dir: temp_dir(),
            bridge: unique("pmbr"),
        }
    }

    fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NET,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.9.0/24"}], [{"subnet": "fd00:244::/64"}]],
                "dataDir": self.dir.path(),
            },
        })
    }

    /// A pod networked by our bridge + host-local, answering on tcp 80 and udp 53.
    fn pod(&self, id: &str) -> (Pod, EchoServer) {
        let ns = TestNetns::new("pmp");
        let result = Call::new(bin("bridge"), "ADD", self.bridge_conf())
            .container(id)
            .netns(&ns)
            .in_node(&self.node)
            .run()
            .expect_ok();
        let addr = |v6: bool| {
            result["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or_default().to_owned())
                .find(|a| a.contains(':') == v6)
                .unwrap_or_else(|| panic!("no address in {result}"))
        };
        let (v4, v6) = (addr(false), addr(true));
        // The bridge's IPv6 gateway address goes through duplicate address detection: the
        // pods' IPv6 replies need it (the kernel finishes it on its own, ~1 s).
        rcni_integration::eventually("the bridge's IPv6 gateway address to be usable", || {
            let tentative = self.node.exec_ok(
                "ip",
                &["-6", "addr", "show", "dev", &self.bridge, "tentative"],
            );
            tentative.trim().is_empty()
        });
        let server = EchoServer::start(echo(), &ns, id, &[80], &[53]);
        (
            Pod {
                ns,
                id: id.to_owned(),
                result,
                v4,
                v6,
            },
            server,
        )
    }

    fn portmap_conf(&self, backend: &str, pod: &Pod, mappings: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": NET,
            "type": "portmap",
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": pod.result,
        });
        if !backend.is_empty() {
            c["backend"] = json!(backend);
        }
        c
    }

    /// `portmap` (ours, or another binary) with `command` for `pod`.
    fn call(&self, plugin: std::path::PathBuf, command: &str, pod: &Pod, conf: Value) -> Call {
        Call::new(plugin, command, conf)
            .container(&pod.id)
            .netns(&pod.ns)
            .in_node(&self.node)
    }

    fn add(&self, backend: &str, pod: &Pod, mappings: Value) {
        let conf = self.portmap_conf(backend, pod, mappings);
        let out = self
            .call(bin("portmap"), "ADD", pod, conf)
            .run()
            .expect_ok();
        // The previous result passes through untouched.
        assert_eq!(out, pod.result, "portmap changed the result");
    }

    fn del(&self, backend: &str, pod: &Pod, mappings: Value) {
        let conf = self.portmap_conf(backend, pod, mappings);
        self.call(bin("portmap"), "DEL", pod, conf)
            .run()
            .expect_ok();
    }

    fn client(&self) -> Client<'_> {
        Client::new(echo(), &self.client)
    }

    fn node_client(&self) -> Client<'_> {
        Client::new(echo(), &self.node)
    }

    /// The node's nat rules of both families and its nft ruleset.
    fn rules(&self) -> String {
        let v6 = self.node.exec("ip6tables-save", &["-t", "nat"]);
        format!(
            "{}{}{}",
            self.node.iptables_nat(),
            String::from_utf8_lossy(&v6.stdout),
            self.node.nft_ruleset()
        )
    }

    /// Asserts that no per-attachment port-mapping rule is left (the shared chains and
    /// tables stay, as the reference's do).
    fn assert_no_mapping_rules(&self, what: &str) {
        let rules = self.rules();
        for marker in ["CNI-DN-", "jump a-", "chain a-", "DNAT --to", "dnat to"] {
            assert!(
                !rules.contains(marker),
                "{what}: {marker:?} left in the node's rules:\n{rules}"
            );
        }
    }
}

fn ok(r: Result<String, String>, what: &str) -> String {
    r.unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
}

fn mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": NODE4},
        {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": NODE6},
    ])
}

/// Everything a host port must do, then DEL: for each backend, dual stack.
#[test]
fn host_ports_forward_tcp_and_udp_and_del_removes_them() {
    for backend in BACKENDS {
        let w = World::new();
        let (a, _sa) = w.pod("pod-a");
        let (b, _sb) = w.pod("pod-b");
        w.add(backend, &a, mappings());
        let (client, node) = (w.client(), w.node_client());

        // A client outside the node, both families; its source address is preserved.
        let v4 = format!("{NODE4}:8080");
        let v6 = format!("[{NODE6}]:8080");
        assert_eq!(ok(client.tcp(&v4), backend), format!("pod-a {CLIENT4}"));
        assert_eq!(ok(client.tcp(&v6), backend), format!("pod-a {CLIENT6}"));
        assert_eq!(
            ok(client.udp(&format!("{NODE4}:5353"), 0), backend),
            format!("pod-a {CLIENT4}")
        );
        assert_eq!(
            ok(client.udp(&format!("[{NODE6}]:5353"), 0), backend),
            format!("pod-a {CLIENT6}")
        );
        // Every node address, unless the mapping names one.
        assert!(
            client.tcp(&format!("{NODE4_OTHER}:8080")).is_ok(),
            "{backend}: wildcard mapping"
        );
        assert!(
            client.tcp(&format!("{NODE4}:8081")).is_ok(),
            "{backend}: hostIP mapping"
        );
        let other = client.tcp(&format!("{NODE4_OTHER}:8081"));
        assert!(
            other.is_err(),
            "{backend}: hostIP {NODE4} mapping answered on {NODE4_OTHER}: {other:?}"
        );
        assert!(
            client.tcp(&format!("[{NODE6}]:8082")).is_ok(),
            "{backend}: v6 hostIP"
        );
        assert!(
            client.tcp(&format!("{NODE4}:8082")).is_err(),
            "{backend}: v6 hostIP mapped on v4"
        );

        // The node itself: 127.0.0.1 (masqueraded to the bridge address) and its own addresses.
        assert_eq!(
            ok(node.tcp("127.0.0.1:8080"), backend),
            format!("pod-a {GATEWAY4}")
        );
        assert_eq!(
            ok(node.udp("127.0.0.1:5353", 0), backend),
            format!("pod-a {GATEWAY4}")
        );
        assert!(node.tcp(&v4).is_ok(), "{backend}: node → own v4 address");
        assert!(node.tcp(&v6).is_ok(), "{backend}: node → own v6 address");

        // Hairpin: the pod through its own host port, and another pod on the bridge; both
        // masqueraded, or the answer would not come back through the node.
        let hairpin = Client::new(echo(), &a.ns);
        assert_eq!(ok(hairpin.tcp(&v4), backend), format!("pod-a {GATEWAY4}"));
        assert_eq!(ok(hairpin.tcp(&v6), backend), format!("pod-a {GATEWAY6}"));
        let neighbour = Client::new(echo(), &b.ns);
        assert_eq!(ok(neighbour.tcp(&v4), backend), format!("pod-a {GATEWAY4}"));
        assert_eq!(
            ok(neighbour.udp(&format!("{NODE4}:5353"), 0), backend),
            format!("pod-a {GATEWAY4}")
        );

        // route_localnet on the bridge, as the reference sets it.
        assert_eq!(
            w.node
                .sysctl(&format!("net.ipv4.conf.{}.route_localnet", w.bridge)),
            "1"
        );
        // CHECK with the ADD's prevResult.
        let check = w.portmap_conf(backend, &a, mappings());
        w.call(bin("portmap"), "CHECK", &a, check).run().expect_ok();

        // DEL: nothing answers any more, no rule is left; DEL again is fine.
        w.del(backend, &a, mappings());
        assert!(
            client.tcp(&v4).is_err(),
            "{backend}: still forwarded after DEL"
        );
        assert!(
            client.tcp(&v6).is_err(),
            "{backend}: still forwarded after DEL (v6)"
        );
        assert!(
            client.udp(&format!("{NODE4}:5353"), 0).is_err(),
            "{backend}: udp after DEL"
        );
        assert!(
            node.tcp("127.0.0.1:8080").is_err(),
            "{backend}: localhost after DEL"
        );
        w.assert_no_mapping_rules(backend);
        w.del(backend, &a, mappings());
        // b was never mapped and is still reachable directly.
        assert!(node.tcp(&format!("{}:80", b.v4)).is_ok());
        assert!(node.tcp(&format!("[{}]:80", b.v6)).is_ok());
    }
}

/// A runtime's DEL after the pod is gone: no netns, no prevResult. Nothing may be left.
#[test]
fn del_without_netns_or_prev_result_removes_everything() {
    for backend in BACKENDS {
        let w = World::new();
        let (a, server) = w.pod("gone");
        w.add(backend, &a, mappings());
        assert!(w.client().tcp(&format!("{NODE4}:8080")).is_ok());
        drop(server);
        let path = a.ns.path_str().to_owned();
        let Pod { ns, id, .. } = a;
        drop(ns);
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": NET, "type": "portmap", "backend": backend,
            "runtimeConfig": {"portMappings": mappings()},
        });
        Call::new(bin("portmap"), "DEL", conf.clone())
            .container(&id)
            .netns_path(&path)
            .in_node(&w.node)
            .run()
            .expect_ok();
        w.assert_no_mapping_rules(backend);
        // containerd's second DEL has an empty CNI_NETNS.
        conf["backend"] = json!("iptables");
        Call::new(bin("portmap"), "DEL", conf)
            .container(&id)
            .in_node(&w.node)
            .run()
            .expect_ok();
    }
}

/// GC keeps the valid attachments' mappings and removes the others'.
#[test]
fn gc_removes_mappings_of_attachments_no_longer_valid() {
    for backend in BACKENDS {
        let w = World::new();
        let (a, _sa) = w.pod("keep");
        let (b, _sb) = w.pod("stale");
        w.add(
            backend,
            &a,
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        w.add(
            backend,
            &b,
            json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}]),
        );
        let client = w.client();
        assert!(client.tcp(&format!("{NODE4}:9090")).is_ok());
        let gc = json!({
            "cniVersion": "1.1.0", "name": NET, "type": "portmap", "backend": backend,
            "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}],
        });
        Call::new(bin("portmap"), "GC", gc)
            .in_node(&w.node)
            .run()
            .expect_ok();
        assert_eq!(
            ok(client.tcp(&format!("{NODE4}:8080")), backend),
            format!("keep {CLIENT4}")
        );
        assert!(
            client.tcp(&format!("{NODE4}:9090")).is_err(),
            "{backend}: GC left the stale mapping"
        );
        // STATUS answers.
        let status = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap"});
        Call::new(bin("portmap"), "STATUS", status)
            .in_node(&w.node)
            .run()
            .expect_ok();
        // GC without the list removes nothing.
        let bare = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap"});
        Call::new(bin("portmap"), "GC", bare)
            .in_node(&w.node)
            .run()
            .expect_ok();
        assert!(client.tcp(&format!("{NODE4}:8080")).is_ok());
        w.del(
            backend,
            &a,
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        w.assert_no_mapping_rules(backend);
    }
}

/// A client that sent to a UDP port before it was mapped keeps its (un-NAT'ed) conntrack
/// entry as long as it keeps sending; ADD deletes it, so the next datagram is forwarded.
#[test]
fn add_flushes_stale_udp_conntrack_entries() {
    for backend in BACKENDS {
        let w = World::new();
        let (a, _sa) = w.pod("first");
        let (b, _sb) = w.pod("udp");
        // Some mapping, so that connection tracking runs in the node.
        w.add(
            backend,
            &a,
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let client = w.client();
        let to = format!("{NODE4}:5353");
        assert!(
            client.udp(&to, 40000).is_err(),
            "nothing listens on the node yet"
        );
        let tracked = w.node.exec_ok("cat", &["/proc/net/nf_conntrack"]);
        assert!(
            tracked.contains("dport=5353"),
            "{backend}: no conntrack entry:\n{tracked}"
        );
        w.add(
            backend,
            &b,
            json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]),
        );
        // Same source port: the same conntrack tuple as before.
        assert_eq!(
            ok(client.udp(&to, 40000), backend),
            format!("udp {CLIENT4}")
        );
    }
}

/// Bad input: the right code, a message, and nothing installed.
#[test]
fn bad_input_is_rejected_before_anything_is_installed() {
    let w = World::new();
    let (a, _sa) = w.pod("bad");
    let cases = [
        (
            json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": 65536, "containerPort": 80, "protocol": "tcp"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": 80, "containerPort": 0, "protocol": "tcp"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": 80, "containerPort": 99999, "protocol": "tcp"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "node"}]),
            json!({}),
            7,
        ),
        (
            json!([{"hostPort": "80", "containerPort": 80, "protocol": "tcp"}]),
            json!({}),
            6,
        ),
        (mappings(), json!({"markMasqBit": 32}), 7),
        (mappings(), json!({"markMasqBit": -1}), 7),
        (
            mappings(),
            json!({"markMasqBit": 13, "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            7,
        ),
        (mappings(), json!({"backend": "ipvs"}), 7),
    ];
    for backend in ["", "nftables"] {
        for (m, extra, code) in &cases {
            let mut conf = w.portmap_conf(backend, &a, m.clone());
            for (k, v) in extra.as_object().into_iter().flatten() {
                conf[k] = v.clone();
            }
            let r = w.call(bin("portmap"), "ADD", &a, conf).run();
            let e = r.expect_err(*code);
            assert!(
                e["msg"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("failed to parse config: "),
                "{e}"
            );
            w.assert_no_mapping_rules(&format!("{m} {extra}"));
        }
    }
    // Not chained.
    let mut conf = w.portmap_conf("", &a, mappings());
    conf.as_object_mut().map(|c| c.remove("prevResult"));
    let e = w.call(bin("portmap"), "ADD", &a, conf).run().expect_err(7);
    assert_eq!(e["msg"], json!("must be called as chained plugin"));
    let rules = w.rules();
    assert!(
        !rules.contains("CNI-HOSTPORT") && !rules.contains("rcni_hostport"),
        "{rules}"
    );
}

/// CHECK fails when a rule disappears.
#[test]
fn check_notices_missing_rules() {
    for backend in BACKENDS {
        let w = World::new();
        let (a, _sa) = w.pod("chk");
        let m = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        w.add(backend, &a, m.clone());
        let check = || {
            w.call(
                bin("portmap"),
                "CHECK",
                &a,
                w.portmap_conf(backend, &a, m.clone()),
            )
            .run()
        };
        check().expect_ok();
        match backend {
            "iptables" => {
                let chain = w
                    .node
                    .iptables_nat()
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(":CNI-DN-")
                            .map(|c| format!("CNI-DN-{}", &c[..21]))
                    })
                    .expect("our chain");
                w.node
                    .exec_ok("iptables", &["-w", "-t", "nat", "-F", &chain]);
            }
            _ => {
                w.node
                    .exec_ok("nft", &["flush", "map", "ip", "rcni_hostport", "hostports"]);
            }
        }
        let e = check().expect_err(999);
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        // Without prevResult CHECK cannot know the addresses.
        let mut bare = w.portmap_conf(backend, &a, m.clone());
        bare.as_object_mut().map(|c| c.remove("prevResult"));
        let e = w
            .call(bin("portmap"), "CHECK", &a, bare)
            .run()
            .expect_err(7);
        assert_eq!(e["msg"], json!("Required prevResult missing"));
    }
}

/// No mappings: the previous result is passed on untouched, in every version; with
/// mappings too. A prevResult of an older version is converted to the config's.
#[test]
fn previous_result_passes_through() {
    let node = TestNetns::new("pmr");
    let pod = TestNetns::new("pmq");
    for version in rcni_integration::ALL_VERSIONS {
        let prev = if version < &"0.3.0" {
            json!({"cniVersion": version, "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1"}, "dns": {}})
        } else {
            json!({"cniVersion": version, "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                   "ips": [{"address": "10.1.0.5/24", "interface": 0}], "custom": {"kept": true}})
        };
        let conf =
            json!({"cniVersion": version, "name": NET, "type": "portmap", "prevResult": prev});
        let out = Call::new(bin("portmap"), "ADD", conf)
            .container("pt")
            .netns(&pod)
            .in_node(&node)
            .run()
            .expect_ok();
        assert_eq!(out, prev, "{version}");
    }
    // A 0.3.1 prevResult under a 1.0.0 config is rendered as 1.0.0 (no ips[].version).
    let prev = json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.5/24"}]});
    let conf = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev});
    let out = Call::new(bin("portmap"), "ADD", conf)
        .container("pt")
        .netns(&pod)
        .in_node(&node)
        .run()
        .expect_ok();
    assert_eq!(
        out,
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]})
    );
}

/// Normalized iptables rules of one attachment chain and its jumps, both families.
fn reference_layout(w: &World) -> BTreeSet<String> {
    let v6 = w.node.exec("ip6tables-save", &["-t", "nat"]);
    let all = format!(
        "{}\n{}",
        w.node.iptables_nat(),
        String::from_utf8_lossy(&v6.stdout)
    );
    all.lines()
        .filter(|l| l.starts_with("-A ") || (l.starts_with(':') && l.contains("CNI-")))
        .map(|l| {
            let mut words: Vec<&str> = l.split_whitespace().collect();
            words.sort();
            words.join(" ")
        })
        .collect()
}

/// The reference (Debian's v1.1.1 `/usr/lib/cni/portmap`, iptables) and ours, on the same
/// pods: the same rules, the same reachability, and each one's DEL removes the other's.
#[test]
fn differential_against_the_reference_portmap() {
    let reference = reference_bin("portmap");
    let w = World::new();
    let (a, _sa) = w.pod("pod-a");
    let (b, _sb) = w.pod("pod-b");
    let m = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": NODE4},
    ]);
    let conf = |pod: &Pod| {
        let mut c = w.portmap_conf("", pod, m.clone());
        // v1.1.1 speaks up to 1.0.0.
        c["cniVersion"] = json!("1.0.0");
        c
    };

    // Same rules: reference ADD, snapshot, our DEL; our ADD, snapshot.
    w.call(reference.clone(), "ADD", &a, conf(&a))
        .run()
        .expect_ok();
    let theirs = reference_layout(&w);
    assert!(theirs.iter().any(|l| l.contains("CNI-DN-")), "{theirs:?}");
    w.call(bin("portmap"), "DEL", &a, conf(&a))
        .run()
        .expect_ok();
    w.assert_no_mapping_rules("our DEL of the reference's rules");
    w.call(bin("portmap"), "ADD", &a, conf(&a))
        .run()
        .expect_ok();
    let ours = reference_layout(&w);
    assert_eq!(
        ours, theirs,
        "our iptables rules differ from the reference's"
    );
    // The reference's DEL removes ours.
    w.call(reference.clone(), "DEL", &a, conf(&a))
        .run()
        .expect_ok();
    w.assert_no_mapping_rules("the reference's DEL of our rules");

    // Same reachability: pod a mapped by the reference, pod b by us (other host ports).
    let mb = json!([
        {"hostPort": 9080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 6353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 9081, "containerPort": 80, "protocol": "tcp", "hostIP": NODE4},
    ]);
    w.call(reference.clone(), "ADD", &a, conf(&a))
        .run()
        .expect_ok();
    let mut conf_b = w.portmap_conf("", &b, mb.clone());
    conf_b["cniVersion"] = json!("1.0.0");
    w.call(bin("portmap"), "ADD", &b, conf_b.clone())
        .run()
        .expect_ok();
    let probes = |tcp: u16, udp: u16, host_ip_port: u16| {
        let (client, node) = (w.client(), w.node_client());
        let hairpin = |pod: &Pod| Client::new(echo(), &pod.ns).tcp(&format!("{NODE4}:{tcp}"));
        vec![
            client.tcp(&format!("{NODE4}:{tcp}")),
            client.tcp(&format!("[{NODE6}]:{tcp}")),
            client.udp(&format!("{NODE4}:{udp}"), 0),
            client.tcp(&format!("{NODE4}:{host_ip_port}")),
            client.tcp(&format!("{NODE4_OTHER}:{host_ip_port}")),
            node.tcp(&format!("127.0.0.1:{tcp}")),
            node.tcp(&format!("{NODE4}:{tcp}")),
            hairpin(&a),
            hairpin(&b),
        ]
        .into_iter()
        .map(|r| {
            r.map(|s| s.split_whitespace().nth(1).unwrap_or_default().to_owned())
                .ok()
        })
        .collect::<Vec<_>>()
    };
    let theirs = probes(8080, 5353, 8081);
    let ours = probes(9080, 6353, 9081);
    assert_eq!(
        ours, theirs,
        "reachability differs (answers' source addresses)"
    );
    assert_eq!(theirs[0].as_deref(), Some(CLIENT4), "{theirs:?}");
    assert!(
        theirs[4].is_none(),
        "hostIP mapping answered on another address"
    );
    // Each one's DEL removes the other's rules.
    w.call(bin("portmap"), "DEL", &a, conf(&a))
        .run()
        .expect_ok();
    w.call(reference, "DEL", &b, conf_b).run().expect_ok();
    w.assert_no_mapping_rules("cross DEL");
    assert!(w.client().tcp(&format!("{NODE4}:8080")).is_err());
    assert!(w.client().tcp(&format!("{NODE4}:9080")).is_err());
}

/// A `PATH` whose first `nft` is a tripwire: it records that it ran and fails. The plugin
/// looks tools up on `PATH` first, so any `nft` process would be this one.
struct Tripwire {
    dir: tempfile::TempDir,
}

impl Tripwire {
    fn new() -> Tripwire {
        let dir = temp_dir();
        let nft = dir.path().join("nft");
        std::fs::write(
            &nft,
            format!(
                "#!/bin/sh\necho \"nft $*\" >> {}\nexit 1\n",
                dir.path().join("ran").display()
            ),
        )
        .expect("write the tripwire");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Tripwire { dir }
    }

    fn path(&self) -> String {
        format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.dir.path().display()
        )
    }

    fn assert_not_run(&self, what: &str) {
        let ran = std::fs::read_to_string(self.dir.path().join("ran")).unwrap_or_default();
        assert!(ran.is_empty(), "{what}: nft was run: {ran}");
    }
}

/// The nftables backend speaks netlink: ADD, CHECK, DEL and GC work, with traffic, where
/// every `nft` on `PATH` would fail.
#[test]
fn the_nftables_backend_runs_no_nft_process() {
    let w = World::new();
    let trip = Tripwire::new();
    let (a, _sa) = w.pod("nonft");
    let (k, _sk) = w.pod("later");
    let ma = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]);
    let mk = json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": NODE4}]);
    let run = |cmd: &str, pod: &Pod, m: &Value| {
        w.call(
            bin("portmap"),
            cmd,
            pod,
            w.portmap_conf("nftables", pod, m.clone()),
        )
        .env("PATH", &trip.path())
        .run()
    };
    run("ADD", &a, &ma).expect_ok();
    run("ADD", &k, &mk).expect_ok();
    trip.assert_not_run("ADD");
    let client = w.client();
    assert_eq!(
        ok(client.tcp(&format!("{NODE4}:8080")), "tcp"),
        format!("nonft {CLIENT4}")
    );
    assert_eq!(
        ok(client.udp(&format!("[{NODE6}]:5353"), 0), "udp6"),
        format!("nonft {CLIENT6}")
    );
    assert_eq!(
        ok(client.tcp(&format!("{NODE4}:9090")), "hostIP"),
        format!("later {CLIENT4}")
    );
    run("CHECK", &a, &ma).expect_ok();
    run("CHECK", &k, &mk).expect_ok();
    trip.assert_not_run("CHECK");
    run("DEL", &a, &ma).expect_ok();
    trip.assert_not_run("DEL");
    assert!(client.tcp(&format!("{NODE4}:8080")).is_err());
    assert!(client.tcp(&format!("{NODE4}:9090")).is_ok());
    let gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap", "backend": "nftables",
                    "cni.dev/valid-attachments": []});
    Call::new(bin("portmap"), "GC", gc)
        .in_node(&w.node)
        .env("PATH", &trip.path())
        .run()
        .expect_ok();
    trip.assert_not_run("GC");
    assert!(client.tcp(&format!("{NODE4}:9090")).is_err());
    w.assert_no_mapping_rules("after DEL and GC");
}

/// The nftables backend on the old-kernel paths (`RCNI_TEST_KERNEL_FALLBACKS=1`): no
/// extended ACKs, no strict checking, dumps without kernel-side filters.
#[test]
fn the_nftables_backend_on_the_old_kernel_paths() {
    let w = World::new();
    let (a, _sa) = w.pod("oldk");
    let m = mappings();
    let run = |cmd: &str| {
        w.call(
            bin("portmap"),
            cmd,
            &a,
            w.portmap_conf("nftables", &a, m.clone()),
        )
        .env("RCNI_TEST_KERNEL_FALLBACKS", "1")
        .env("CNI_LOG_LEVEL", "debug")
        .run()
    };
    let add = run("ADD");
    assert!(add.stderr.contains("old-kernel path"), "{add:?}");
    add.expect_ok();
    let client = w.client();
    assert_eq!(
        ok(client.tcp(&format!("{NODE4}:8080")), "tcp"),
        format!("oldk {CLIENT4}")
    );
    assert_eq!(
        ok(client.tcp(&format!("[{NODE6}]:8082")), "v6 hostIP"),
        format!("oldk {CLIENT6}")
    );
    assert_eq!(
        ok(w.node_client().tcp("127.0.0.1:8080"), "localhost"),
        format!("oldk {GATEWAY4}")
    );
    let check = run("CHECK");
    assert!(
        check.stderr.contains("nf_tables dumps without filters"),
        "{check:?}"
    );
    check.expect_ok();
    run("DEL").expect_ok();
    assert!(client.tcp(&format!("{NODE4}:8080")).is_err());
    w.assert_no_mapping_rules("DEL on the old-kernel path");
}

/// nft conditions in the nftables backend, with traffic: a client excluded by its address
/// gets no forwarding, the node still does. Conditions the backend cannot express are a
/// config error, before anything is installed.
#[test]
fn nft_conditions_select_the_traffic_that_is_forwarded() {
    let w = World::new();
    let (a, _sa) = w.pod("cond");
    let m = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let mut conf = w.portmap_conf("", &a, m.clone());
    conf["conditionsV4"] = json!(["ip", "saddr", "!=", CLIENT4]);
    let mut bad = conf.clone();
    bad["conditionsV6"] = json!(["tcp", "dport", "1"]);
    let e = w.call(bin("portmap"), "ADD", &a, bad).run().expect_err(7);
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|s| s.contains("conditionsV6: unsupported nftables condition")),
        "{e}"
    );
    w.assert_no_mapping_rules("refused conditions");
    // nft syntax selects the nftables backend.
    w.call(bin("portmap"), "ADD", &a, conf.clone())
        .run()
        .expect_ok();
    assert!(w.node.nft_ruleset().contains("rcni_hostport"));
    assert!(w.client().tcp(&format!("{NODE4}:8080")).is_err());
    assert!(w.client().tcp(&format!("[{NODE6}]:8080")).is_ok());
    assert_eq!(
        ok(w.node_client().tcp(&format!("{NODE4}:8080")), "node"),
        format!("cond {NODE4}")
    );
    w.call(bin("portmap"), "CHECK", &a, conf.clone())
        .run()
        .expect_ok();
    w.call(bin("portmap"), "DEL", &a, conf).run().expect_ok();
    w.assert_no_mapping_rules("DEL");
}
