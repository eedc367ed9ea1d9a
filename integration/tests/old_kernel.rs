//! Kernels before 4.20 (issue 10, point 2): the old-kernel paths, forced on this kernel with
//! `RCNI_TEST_KERNEL_FALLBACKS=1` through the real binaries (the plugins pass it on to the
//! plugins they run). Forced, the netlink sockets ask for no strict checking and no extended
//! or capped ACKs (the kernel then dumps every address, whatever link a dump asks for), the
//! dispatcher does without `/proc/thread-self`, and the attributes an old kernel ignores
//! (port isolation, VLAN filtering at bridge creation) are not sent, as such a kernel ignores
//! them: the plugins must notice and refuse.
//!
//! Root only (network namespaces). Never touches the machine's own netns.

use rcni_integration::{Call, FlannelNode, Reply, TestNetns, bin, dir_entries};
use serde_json::{Value, json};

const FALLBACKS: &str = "RCNI_TEST_KERNEL_FALLBACKS";
const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.249.0.0/16\nFLANNEL_SUBNET=10.249.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

/// A node that also has another link with an IPv4 address: an address dump of the bridge
/// that the kernel does not filter lists it too, and taking it for the bridge's would fail
/// every ADD ("already has an IP address different from ...").
fn node() -> FlannelNode {
    let node = FlannelNode::new("oldk", "oldk", SUBNET_ENV);
    node.ns
        .exec_ok("ip", &["link", "add", "other0", "type", "bridge"]);
    node.ns
        .exec_ok("ip", &["addr", "add", "192.168.66.1/24", "dev", "other0"]);
    node.ns.exec_ok("ip", &["link", "set", "other0", "up"]);
    node
}

/// A call with the old-kernel paths forced and debug logs.
fn old(
    node: &FlannelNode,
    plugin: &str,
    cmd: &str,
    conf: &Value,
    cid: &str,
    pod: &TestNetns,
) -> Call {
    Call::new(bin(plugin), cmd, conf.clone())
        .container(cid)
        .netns(pod)
        .in_node(&node.ns)
        .env(FALLBACKS, "1")
        .env("CNI_LOG_LEVEL", "debug")
}

fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap_or_default().to_owned()
}

/// The old path was taken: the netlink sockets said so on stderr.
fn assert_old_path(r: &Reply) {
    assert!(
        r.stderr.contains("old-kernel path"),
        "the fallback was not taken: {r:?}"
    );
}

#[test]
fn the_flannel_chain_works_on_the_old_kernel_paths() {
    let node = node();
    let conf = node.flannel_conf(json!({"hairpinMode": true}));
    let pods = [TestNetns::new("oka"), TestNetns::new("okb")];
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let r = old(&node, "flannel", "ADD", &conf, &format!("old{i}"), pod).run();
        assert_old_path(&r);
        results.push(r.expect_ok());
    }
    let ips: Vec<String> = results.iter().map(pod_ip).collect();
    assert_eq!(ips, ["10.249.1.2", "10.249.1.3"]);
    let v4: Vec<String> = node
        .ns
        .addrs(&node.bridge)
        .into_iter()
        .filter(|a| !a.contains(':'))
        .collect();
    assert_eq!(
        v4,
        ["10.249.1.1/24"],
        "the gateway, and only it, on the bridge"
    );
    assert!(pods[0].ping(&ips[1]), "pod -> pod");
    assert!(node.ns.ping(&ips[0]), "node -> pod");
    let ipt = node.ns.iptables_nat();
    assert!(ipt.contains(&ips[0]), "masquerade rule:\n{ipt}");

    for (i, pod) in pods.iter().enumerate() {
        let mut check = conf.clone();
        check["prevResult"] = results[i].clone();
        old(&node, "flannel", "CHECK", &check, &format!("old{i}"), pod)
            .run()
            .expect_ok();
    }
    let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
    let r = old(&node, "loopback", "ADD", &lo, "old0", &pods[0])
        .ifname("lo")
        .run();
    assert_old_path(&r);
    assert_eq!(r.expect_ok()["ips"][0]["address"], json!("127.0.0.1/8"));

    for (i, pod) in pods.iter().enumerate() {
        old(&node, "flannel", "DEL", &conf, &format!("old{i}"), pod)
            .run()
            .expect_ok();
        assert!(pod.link("eth0").is_none());
    }
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(node.veths().is_empty(), "{:?}", node.veths());
    assert!(!node.ns.iptables_nat().contains(&ips[0]));
}

/// Without /proc/thread-self the own-netns check (code 8) still holds.
#[test]
fn own_netns_is_refused_on_the_old_kernel_path() {
    let node = node();
    let conf = node.flannel_conf(json!({}));
    let e = old(&node, "bridge", "ADD", &conf, "self", &node.ns)
        .run()
        .expect_err(8);
    assert_eq!(
        e["msg"],
        json!("plugin's netns and netns from CNI_NETNS should not be the same")
    );
}

fn assert_refused_and_nothing_left(node: &FlannelNode, pod: &TestNetns, r: &Reply, what: &str) {
    assert_old_path(r);
    let e = r.expect_err(999);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains(what),
        "{r:?}"
    );
    assert!(node.veths().is_empty(), "{:?}", node.veths());
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(pod.link("eth0").is_none());
    assert!(
        dir_entries(&node.flannel_dir()).is_empty(),
        "saved config left"
    );
}

/// `portIsolation` on a kernel that ignores it (before 4.18) is refused, not silently lost;
/// the same config isolates the port when the kernel has the feature.
#[test]
fn port_isolation_the_kernel_ignores_is_refused() {
    let node = node();
    let conf = node.flannel_conf(json!({"portIsolation": true}));
    let pod = TestNetns::new("oki");
    let r = old(&node, "flannel", "ADD", &conf, "iso", &pod).run();
    assert_refused_and_nothing_left(&node, &pod, &r, "IFLA_BRPORT_ISOLATED needs Linux 4.18");

    let call = |cmd: &str| {
        Call::new(bin("flannel"), cmd, conf.clone())
            .container("iso")
            .netns(&pod)
            .in_node(&node.ns)
            .run()
    };
    call("ADD").expect_ok();
    let veth = node.veths().pop().expect("a host veth");
    let port = node.ns.link(&veth).expect("port");
    assert_eq!(port["linkinfo"]["info_slave_data"]["isolated"], json!(true));
    call("DEL").expect_ok();
}

/// `vlan` on a kernel that creates the bridge without VLAN filtering (before 4.3, where it
/// ignores the attribute) is refused: the pods would not be isolated.
#[test]
fn vlan_on_a_bridge_that_does_not_filter_is_refused() {
    let node = node();
    let conf = node.flannel_conf(json!({"vlan": 100}));
    let pod = TestNetns::new("okv");
    let r = old(&node, "flannel", "ADD", &conf, "vl", &pod).run();
    assert_refused_and_nothing_left(&node, &pod, &r, "does not filter VLANs");
    let br = node.ns.link(&node.bridge).expect("the bridge was made");
    assert_ne!(br["linkinfo"]["info_data"]["vlan_filtering"], json!(1));
}
