//! The whole chain a flannel node runs: `flannel` → `bridge` → `host-local`, plus
//! `loopback`, in a node netns, with pods that must reach each other and the node.

use std::fs;
use std::path::Path;

use rcni_integration::{Call, TestNetns, bin, bin_dir, dir_entries, temp_dir, unique};
use serde_json::{Value, json};

/// A node with flanneld's subnet.env written and the dirs a flannel conf points at.
struct Node {
    ns: TestNetns,
    dir: tempfile::TempDir,
    bridge: String,
}

impl Node {
    fn new(subnet_env: &str) -> Self {
        let ns = TestNetns::new("chain");
        let dir = temp_dir();
        fs::write(dir.path().join("subnet.env"), subnet_env).expect("write subnet.env");
        Node {
            ns,
            dir,
            bridge: unique("cbr"),
        }
    }

    fn ipam_dir(&self) -> String {
        self.dir.path().join("ipam").to_string_lossy().into_owned()
    }

    fn flannel_dir(&self) -> String {
        self.dir
            .path()
            .join("flannel")
            .to_string_lossy()
            .into_owned()
    }

    /// The kube-flannel conf, pointed at this node's files.
    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cbr0",
            "type": "flannel",
            "subnetFile": self.dir.path().join("subnet.env"),
            "dataDir": self.flannel_dir(),
            "ipam": {"dataDir": self.ipam_dir()},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true, "bridge": self.bridge},
        })
    }

    fn call(&self, command: &str, version: &str, id: &str, pod: Option<&TestNetns>) -> Call {
        let mut c = Call::new(bin("flannel"), command, self.conf(version))
            .container(id)
            .in_node(&self.ns)
            .args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web");
        if let Some(p) = pod {
            c = c.netns(p);
        }
        c
    }

    /// The allocation files of network cbr0 (IPs only).
    fn allocations(&self) -> Vec<String> {
        dir_entries(&Path::new(&self.ipam_dir()).join("cbr0"))
            .into_iter()
            // Everything but the lock, the round-robin files and our owner index: a leftover
            // temp file counts too.
            .filter(|f| f != "lock" && f != ".rcni-owners" && !f.starts_with("last_reserved_ip"))
            .collect()
    }
}

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

fn pod_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .or_else(|| result["ip4"]["ip"].as_str())
        .unwrap_or_else(|| panic!("no address in {result}"));
    addr.split('/').next().unwrap_or_default().to_owned()
}

#[test]
fn flannel_chain_networks_pods_on_every_version() {
    for version in rcni_integration::ALL_VERSIONS {
        let node = Node::new(SUBNET_ENV);
        let pod_a = TestNetns::new("pa");
        let pod_b = TestNetns::new("pb");

        let ra = node
            .call("ADD", version, "pod-a", Some(&pod_a))
            .run()
            .expect_ok();
        let rb = node
            .call("ADD", version, "pod-b", Some(&pod_b))
            .run()
            .expect_ok();
        assert_eq!(
            ra["cniVersion"],
            json!(version),
            "{version}: result version"
        );
        let (ip_a, ip_b) = (pod_ip(&ra), pod_ip(&rb));
        assert_eq!(ip_a, "10.244.1.2", "{version}: first pod gets .2");
        assert_eq!(ip_b, "10.244.1.3", "{version}: second pod gets .3");

        // Kernel state: the bridge carries the gateway with FLANNEL_MTU; the pod has
        // its address, MTU and a default route via the gateway.
        let br = node
            .ns
            .link(&node.bridge)
            .expect("bridge exists in the node");
        assert_eq!(
            br["mtu"],
            json!(1450),
            "{version}: bridge MTU from FLANNEL_MTU"
        );
        assert!(
            node.ns
                .addrs(&node.bridge)
                .contains(&"10.244.1.1/24".to_owned())
        );
        let eth0 = pod_a.link("eth0").expect("eth0 in pod");
        assert_eq!(eth0["mtu"], json!(1450));
        assert!(pod_a.addrs("eth0").contains(&format!("{ip_a}/24")));
        let default = pod_a
            .routes("-4")
            .into_iter()
            .find(|r| r["dst"] == json!("default"))
            .unwrap_or_else(|| panic!("{version}: no default route in pod"));
        assert_eq!(default["gateway"], json!("10.244.1.1"));
        assert_eq!(node.ns.sysctl("net.ipv4.ip_forward"), "1");

        // Traffic: pod → pod, pod → gateway, node → pod.
        assert!(pod_a.ping(&ip_b), "{version}: pod a cannot reach pod b");
        assert!(pod_b.ping(&ip_a), "{version}: pod b cannot reach pod a");
        assert!(
            pod_a.ping("10.244.1.1"),
            "{version}: pod cannot reach its gateway"
        );
        assert!(node.ns.ping(&ip_b), "{version}: node cannot reach the pod");

        // The saved delegate config is what DEL will use.
        let saved = node.dir.path().join("flannel").join("pod-a");
        let saved: Value =
            serde_json::from_slice(&fs::read(&saved).expect("saved conf")).expect("json");
        assert_eq!(saved["type"], json!("bridge"));
        assert_eq!(
            saved["ipMasq"],
            json!(false),
            "FLANNEL_IPMASQ=true ⇒ ipMasq false"
        );
        assert_eq!(
            saved["ipam"]["ranges"],
            json!([[{"subnet": "10.244.1.0/24"}]])
        );

        if version >= &"0.4.0" {
            // A runtime passes the ADD result as prevResult on CHECK.
            let mut check = node.call("CHECK", version, "pod-a", Some(&pod_a));
            check.config["prevResult"] = ra.clone();
            check.run().expect_ok();
            // CHECK notices a pod whose interface is gone.
            pod_b.exec_ok("ip", &["link", "set", "eth0", "name", "gone0"]);
            let mut broken = node.call("CHECK", version, "pod-b", Some(&pod_b));
            broken.config["prevResult"] = rb.clone();
            let e = broken.run().expect_err(999);
            assert!(
                e["msg"].as_str().unwrap_or_default().contains("eth0"),
                "{version}: CHECK must name the missing interface: {e}"
            );
            pod_b.exec_ok("ip", &["link", "set", "gone0", "name", "eth0"]);
        }

        node.call("DEL", version, "pod-a", Some(&pod_a))
            .run()
            .expect_ok();
        node.call("DEL", version, "pod-b", Some(&pod_b))
            .run()
            .expect_ok();
        // DEL twice is fine.
        node.call("DEL", version, "pod-b", Some(&pod_b))
            .run()
            .expect_ok();
        assert!(
            node.allocations().is_empty(),
            "{version}: IPs left: {:?}",
            node.allocations()
        );
        assert!(
            pod_a.link("eth0").is_none(),
            "{version}: pod interface left behind"
        );
        assert!(
            dir_entries(Path::new(&node.flannel_dir())).is_empty(),
            "saved confs left"
        );
    }
}

/// The reference's most-reported leak: the saved delegate config is gone (reboot,
/// zero-byte file), so its DEL succeeds without calling host-local and the IP is
/// never freed. Ours rebuilds the delegate config from subnet.env and releases.
#[test]
fn del_without_saved_config_still_releases_the_ip() {
    for damage in ["missing", "empty"] {
        let node = Node::new(SUBNET_ENV);
        let pod = TestNetns::new("pl");
        node.call("ADD", "0.3.1", "lost", Some(&pod))
            .run()
            .expect_ok();
        assert_eq!(node.allocations(), vec!["10.244.1.2".to_owned()]);

        let saved = node.dir.path().join("flannel").join("lost");
        match damage {
            "missing" => fs::remove_file(&saved).expect("remove saved conf"),
            _ => fs::write(&saved, b"").expect("truncate saved conf"),
        }
        node.call("DEL", "0.3.1", "lost", Some(&pod))
            .run()
            .expect_ok();
        assert!(
            node.allocations().is_empty(),
            "{damage}: IP leaked: {:?}",
            node.allocations()
        );
        assert!(
            pod.link("eth0").is_none(),
            "{damage}: pod interface left behind"
        );
    }
}

/// Dual stack from a dual-stack subnet.env: one address per family, both reachable.
#[test]
fn dual_stack_pods_reach_each_other() {
    let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
    let node = Node::new(env);
    let pod_a = TestNetns::new("da");
    let pod_b = TestNetns::new("db");
    let ra = node
        .call("ADD", "1.0.0", "dual-a", Some(&pod_a))
        .run()
        .expect_ok();
    let rb = node
        .call("ADD", "1.0.0", "dual-b", Some(&pod_b))
        .run()
        .expect_ok();
    let addrs = |r: &Value| -> Vec<String> {
        r["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["address"].as_str())
                    .map(|s| s.split('/').next().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (addrs(&ra), addrs(&rb));
    assert_eq!(a.len(), 2, "one address per family: {ra}");
    assert!(a[1].contains(':') && b[1].contains(':'));
    assert!(pod_a.ping(&b[0]), "v4 pod→pod");
    assert!(pod_a.ping(&b[1]), "v6 pod→pod");
    node.call("DEL", "1.0.0", "dual-a", Some(&pod_a))
        .run()
        .expect_ok();
    node.call("DEL", "1.0.0", "dual-b", Some(&pod_b))
        .run()
        .expect_ok();
    assert!(node.allocations().is_empty());
}

/// containerd calls DEL a second time with an empty CNI_NETNS; loopback and the
/// chain must accept it.
#[test]
fn second_del_with_empty_netns_succeeds() {
    let node = Node::new(SUBNET_ENV);
    let pod = TestNetns::new("ce");
    node.call("ADD", "0.3.1", "ctrd", Some(&pod))
        .run()
        .expect_ok();
    node.call("DEL", "0.3.1", "ctrd", Some(&pod))
        .run()
        .expect_ok();
    node.call("DEL", "0.3.1", "ctrd", None).run().expect_ok();
    let lo = json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"});
    Call::new(bin("loopback"), "DEL", lo)
        .container("ctrd")
        .ifname("lo")
        .run()
        .expect_ok();
    assert!(node.allocations().is_empty());
    assert!(bin_dir().join("loopback").exists());
}
