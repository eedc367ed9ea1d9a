//! bridge `ipMasq` through the real binaries, in a node netns: both backends on the
//! old-kernel paths (`RCNI_TEST_KERNEL_FALLBACKS=1`: nf_tables dumps unfiltered by the
//! kernel, no extended ACKs), and a node that ran rcni's previous nftables layout (one nat
//! base chain per pod) cleaned by DEL and GC.
//!
//! Root only (network namespaces). Never touches the machine's own netns.

use rcni_integration::{Call, Reply, TestNetns, bin, temp_dir};
use serde_json::{Value, json};

const NET: &str = "masqnet";
const FALLBACKS: &str = "RCNI_TEST_KERNEL_FALLBACKS";

struct Node {
    ns: TestNetns,
    data: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        Node {
            ns: TestNetns::new("mnode"),
            data: temp_dir(),
        }
    }

    fn conf(&self, backend: &str) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": NET,
            "type": "bridge",
            "bridge": "masq0",
            "isGateway": true,
            "ipMasq": true,
            "ipMasqBackend": backend,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.78.0.0/24"}]],
                "dataDir": self.data.path().to_string_lossy(),
            },
        })
    }

    fn call(&self, cmd: &str, conf: &Value, cid: &str, pod: &TestNetns) -> Call {
        Call::new(bin("bridge"), cmd, conf.clone())
            .container(cid)
            .netns(pod)
            .in_node(&self.ns)
    }

    fn old_kernel(&self, cmd: &str, conf: &Value, cid: &str, pod: &TestNetns) -> Reply {
        self.call(cmd, conf, cid, pod)
            .env(FALLBACKS, "1")
            .env("CNI_LOG_LEVEL", "debug")
            .run()
    }

    fn rules(&self) -> String {
        format!("{}{}", self.ns.nft_ruleset(), self.ns.iptables_nat())
    }
}

fn ip_of(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap_or_default().to_owned()
}

fn on_the_old_kernel_paths(backend: &str) {
    let node = Node::new();
    let conf = node.conf(backend);
    let (a, b) = (TestNetns::new("mpod"), TestNetns::new("mpod"));
    let ra = node.old_kernel("ADD", &conf, "cid-a", &a);
    let ip_a = ip_of(&ra.expect_ok());
    let ip_b = ip_of(&node.old_kernel("ADD", &conf, "cid-b", &b).expect_ok());
    let rules = node.rules();
    for ip in [&ip_a, &ip_b] {
        assert!(
            rules.contains(&format!("saddr {ip} ")) || rules.contains(&format!("-s {ip}/32")),
            "no rule for {ip} ({backend}):\n{rules}"
        );
    }
    let del = node.old_kernel("DEL", &conf, "cid-a", &a);
    del.expect_ok();
    for path in [
        "nfnetlink socket without extended ACKs (old-kernel path)",
        "nf_tables dumps without filters (old-kernel path)",
    ] {
        assert!(del.stderr.contains(path), "{path:?} not taken: {del:?}");
    }
    let rules = node.rules();
    assert!(
        !rules.contains(&format!("{ip_a} ")),
        "{ip_a} left:\n{rules}"
    );
    assert!(
        !rules.contains(&format!("{ip_a}/")),
        "{ip_a} left:\n{rules}"
    );
    assert!(
        rules.contains(&format!("saddr {ip_b} ")) || rules.contains(&format!("-s {ip_b}/32")),
        "{ip_b} lost with the other pod's DEL ({backend}):\n{rules}"
    );
    node.old_kernel("DEL", &conf, "cid-b", &b).expect_ok();
    let rules = node.rules();
    assert!(!rules.contains(&ip_b), "{ip_b} left:\n{rules}");
}

#[test]
fn nftables_on_the_old_kernel_paths() {
    on_the_old_kernel_paths("nftables");
}

#[test]
fn iptables_on_the_old_kernel_paths() {
    on_the_old_kernel_paths("iptables");
}

/// What rcni's previous release made for a pod: a nat base chain of its own in
/// `inet rcni_masquerade`, named after the attachment's instance hash.
fn old_layout_chain(node: &Node, cid: &str, ip: &str) -> String {
    let hash = firewall::naming::instance_hash(&firewall::Attachment {
        network: NET.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    });
    let chain = format!("a-{hash}");
    let script = format!(
        "add table inet rcni_masquerade\n\
         add chain inet rcni_masquerade {chain} {{ type nat hook postrouting priority srcnat ; policy accept ; }}\n\
         add rule inet rcni_masquerade {chain} ip saddr {ip} ip daddr != 10.78.0.0/24 masquerade comment \"{hash}, net: {NET}, if: eth0, id: {cid}\"\n"
    );
    let path = node.data.path().join(format!("{cid}.nft"));
    std::fs::write(&path, script).expect("write nft script");
    node.ns
        .exec_ok("nft", &["-f", path.to_str().expect("utf-8 path")]);
    chain
}

#[test]
fn a_node_with_the_previous_layout_is_cleaned_by_del_and_gc() {
    let node = Node::new();
    let conf = node.conf("nftables");
    let old_a = old_layout_chain(&node, "old-a", "10.78.0.200");
    let old_b = old_layout_chain(&node, "old-b", "10.78.0.201");
    // A pod set up now lands in the new layout next to them.
    let pod = TestNetns::new("mpod");
    let ip = ip_of(&node.call("ADD", &conf, "new", &pod).run().expect_ok());

    // DEL of an old pod (its netns is long gone) removes its base chain.
    node.call("DEL", &conf, "old-a", &pod)
        .netns_path("")
        .run()
        .expect_ok();
    let rules = node.ns.nft_ruleset();
    assert!(!rules.contains(&old_a), "{rules}");
    assert!(rules.contains(&old_b), "{rules}");
    assert!(rules.contains(&format!("saddr {ip} ")), "{rules}");

    // GC with only the new pod valid removes the last old chain, and the old table.
    let gc = json!({
        "cniVersion": "1.1.0",
        "name": NET,
        "type": "bridge",
        "bridge": "masq0",
        "isGateway": true,
        "ipMasq": true,
        "ipMasqBackend": "nftables",
        "ipam": conf["ipam"].clone(),
        "cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}],
    });
    Call::new(bin("bridge"), "GC", gc)
        .in_node(&node.ns)
        .run()
        .expect_ok();
    let tables = node.ns.exec_ok("nft", &["list", "tables"]);
    assert!(!tables.contains("inet rcni_masquerade"), "{tables}");
    let rules = node.ns.nft_ruleset();
    assert!(rules.contains(&format!("saddr {ip} ")), "{rules}");
    node.call("DEL", &conf, "new", &pod).run().expect_ok();
}

/// 1100 pods with `ipMasq` on the nftables backend, over three bridges (a bridge takes at
/// most 1023 ports), through the real bridge and host-local: every ADD succeeds (the previous
/// layout, one nat base chain per pod, failed from pod 1025 with E2BIG), the ruleset keeps one
/// base chain whatever the count, each pod has its chain and its verdict-map element, and DEL
/// takes them all away again.
#[test]
fn eleven_hundred_masqueraded_pods_over_three_bridges() {
    const PODS: usize = 1100;
    let node = Node::new();
    let confs: Vec<Value> = (0..3)
        .map(|k| {
            let mut c = node.conf("nftables");
            c["name"] = json!(format!("{NET}{k}"));
            c["bridge"] = json!(format!("masq{k}"));
            c["ipam"]["ranges"] = json!([[{"subnet": format!("10.{}.0.0/22", 90 + k)}]]);
            c
        })
        .collect();
    let pods: Vec<TestNetns> = (0..PODS).map(|_| TestNetns::new("mq")).collect();
    let mut ips = Vec::with_capacity(PODS);
    for (i, pod) in pods.iter().enumerate() {
        let reply = node
            .call("ADD", &confs[i % 3], &format!("mq-{i}"), pod)
            .run();
        ips.push(ip_of(&reply.expect_ok()));
    }
    let rules = node.ns.nft_ruleset();
    assert_eq!(
        rules.matches("type nat hook postrouting").count(),
        1,
        "one nat base chain for {PODS} pods"
    );
    assert_eq!(rules.matches("chain m-").count(), PODS, "a chain per pod");
    let map = node.ns.exec_ok(
        "nft",
        &["list", "map", "ip", "rcni_masquerade", "attachments"],
    );
    assert_eq!(
        map.matches(": jump m-").count(),
        PODS,
        "a map element per pod"
    );
    for ip in &ips {
        assert!(
            map.contains(&format!("{ip} : jump m-")),
            "no element for {ip}"
        );
    }
    for (i, pod) in pods.iter().enumerate() {
        node.call("DEL", &confs[i % 3], &format!("mq-{i}"), pod)
            .run()
            .expect_ok();
    }
    let rules = node.ns.nft_ruleset();
    assert_eq!(rules.matches("chain m-").count(), 0, "{rules}");
    assert_eq!(rules.matches(": jump").count(), 0, "{rules}");
}
