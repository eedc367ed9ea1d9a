//! A failed ADD never removes what that ADD did not create (issue 10, point 1).
//!
//! The case that matters: a runtime repeats an ADD for a pod that is already up (a retry
//! after a timeout), or a second container ID is attached to the same netns and ifname.
//! The repeated ADD must fail (the interface exists) and leave the running pod exactly as
//! it was: its interface, its address and reservation, its saved flannel config, its
//! masquerade and spoof-check rules, its traffic. Each plugin's failure path is exercised:
//! the whole flannel → bridge → host-local chain, bridge alone, host-local alone (a repeated
//! ADD must not release an address the container held before it), and loopback (a failed
//! ADD leaves `lo` as it found it).
//!
//! Root only (network namespaces). Never touches the machine's own netns.

use std::fs;
use std::path::Path;

use rcni_integration::{Call, FlannelNode, Reply, TestNetns, bin, dir_entries, temp_dir};
use serde_json::{Value, json};

/// flanneld leaves masquerading to the plugins (`FLANNEL_IPMASQ=false`), so the bridge
/// installs masquerade rules that a wrong undo would remove.
const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.246.0.0/16\nFLANNEL_SUBNET=10.246.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
const NETWORK: &str = "rpt";

fn node() -> FlannelNode {
    FlannelNode::new("rpt", NETWORK, SUBNET_ENV)
}

/// The kube-flannel config, with spoof checking on.
fn flannel_conf(node: &FlannelNode) -> Value {
    node.flannel_conf(json!({"macspoofchk": true}))
}

/// The delegate config flannel would build, for calling bridge directly.
fn bridge_conf(node: &FlannelNode) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bridge",
        "bridge": node.bridge,
        "isDefaultGateway": true,
        "ipMasq": true,
        "macspoofchk": true,
        "ipam": {"type": "host-local", "dataDir": node.ipam_dir(),
                 "ranges": [[{"subnet": "10.246.1.0/24"}]]},
    })
}

fn call(
    node: &FlannelNode,
    plugin: &str,
    conf: &Value,
    cmd: &str,
    cid: &str,
    pod: &TestNetns,
) -> Reply {
    Call::new(bin(plugin), cmd, conf.clone())
        .container(cid)
        .netns(pod)
        .in_node(&node.ns)
        .run()
}

/// host-local's reservations of the network: `(ip, owner)`.
fn owned_reservations(node: &FlannelNode) -> Vec<(String, String)> {
    let dir = node.ipam_dir().join(NETWORK);
    node.reservations()
        .into_iter()
        .map(|f| {
            let owner = fs::read_to_string(dir.join(&f)).expect("read reservation");
            (f, owner)
        })
        .collect()
}

/// Everything a running pod `cid` depends on, for before/after comparisons.
fn pod_state(node: &FlannelNode, cid: &str, pod: &TestNetns) -> Value {
    let eth0 = pod.link("eth0").expect("the pod has eth0");
    let addrs: Vec<String> = pod
        .addrs("eth0")
        .into_iter()
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    let ip = addrs
        .first()
        .and_then(|a| a.split('/').next())
        .expect("eth0 has an address")
        .to_owned();
    let saved = fs::read(node.flannel_dir().join(cid)).ok();
    let nft = node.ns.nft_ruleset();
    let ipt = node.ns.iptables_nat();
    let spoof_chain = format!("cni-br-iface-{cid}-eth0");
    json!({
        "eth0_index": eth0["ifindex"],
        "eth0_mac": eth0["address"],
        "addrs": addrs,
        "routes": pod.routes("-4"),
        "reservations": owned_reservations(node),
        "saved_config": saved.map(|b| String::from_utf8_lossy(&b).into_owned()),
        "veths": node.veths(),
        "masquerade_rule": nft.contains(&ip) || ipt.contains(&ip),
        "spoof_check_chain": nft.contains(&spoof_chain),
        "node_reaches_pod": node.ns.ping(&ip),
    })
}

fn assert_refused_as_existing(r: &Reply) {
    let e = r.expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("container veth name provided (eth0) already exists"),
        "{r:?}"
    );
}

/// The state a live pod needs, with the properties the comparisons rely on.
fn live_state(node: &FlannelNode, cid: &str, pod: &TestNetns, flannel: bool) -> Value {
    let st = pod_state(node, cid, pod);
    assert_eq!(st["masquerade_rule"], json!(true), "{st}");
    assert_eq!(st["spoof_check_chain"], json!(true), "{st}");
    assert_eq!(st["node_reaches_pod"], json!(true), "{st}");
    assert_eq!(st["saved_config"].is_string(), flannel, "{st}");
    st
}

#[test]
fn flannel_repeated_add_of_a_running_pod_leaves_it_untouched() {
    let node = node();
    let conf = flannel_conf(&node);
    let pod = TestNetns::new("rpa");
    call(&node, "flannel", &conf, "ADD", "live", &pod).expect_ok();
    let before = live_state(&node, "live", &pod, true);

    // A runtime retries the ADD after a timeout: same ID, same netns, same ifname.
    assert_refused_as_existing(&call(&node, "flannel", &conf, "ADD", "live", &pod));
    assert_eq!(pod_state(&node, "live", &pod), before, "same container ID");

    // A second container ID given the same netns and ifname.
    assert_refused_as_existing(&call(&node, "flannel", &conf, "ADD", "intruder", &pod));
    assert_eq!(
        pod_state(&node, "live", &pod),
        before,
        "another container ID"
    );
    assert!(
        !node.flannel_dir().join("intruder").exists(),
        "the failed ADD's own saved config must go"
    );

    // The running pod is still fully managed: its DEL removes everything.
    call(&node, "flannel", &conf, "DEL", "live", &pod).expect_ok();
    call(&node, "flannel", &conf, "DEL", "intruder", &pod).expect_ok();
    assert!(pod.link("eth0").is_none());
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(dir_entries(&node.flannel_dir()).is_empty());
    assert!(!node.ns.nft_ruleset().contains("cni-br-iface-live"));
}

/// A runtime that reuses a running pod's container ID for a new netns (against the spec):
/// the ADD fails in IPAM ("duplicate allocation") and must not take the running pod's
/// attachment-keyed state (spoof-check chains, rules, saved config) with it.
#[test]
fn flannel_add_of_a_running_container_id_in_another_netns_leaves_the_pod_untouched() {
    let node = node();
    let conf = flannel_conf(&node);
    let pod = TestNetns::new("rpa");
    call(&node, "flannel", &conf, "ADD", "reused", &pod).expect_ok();
    let before = live_state(&node, "reused", &pod, true);
    let other = TestNetns::new("rpo");
    let e = call(&node, "flannel", &conf, "ADD", "reused", &other).expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("duplicate allocation is not allowed"),
        "{e}"
    );
    assert!(other.link("eth0").is_none(), "the failed ADD's veth goes");
    assert_eq!(pod_state(&node, "reused", &pod), before);
}

#[test]
fn flannel_failed_repeated_add_keeps_the_config_an_earlier_add_saved() {
    let node = node();
    let conf = flannel_conf(&node);
    let pod = TestNetns::new("rpc");
    call(&node, "flannel", &conf, "ADD", "keep", &pod).expect_ok();
    let saved = fs::read(node.flannel_dir().join("keep")).expect("saved config");
    // flanneld got another lease since: the repeated ADD builds (and saves) another config.
    fs::write(
        node.subnet_env(),
        SUBNET_ENV.replace("10.246.1.1/24", "10.246.9.1/24"),
    )
    .expect("write subnet.env");
    call(&node, "flannel", &conf, "ADD", "keep", &pod).expect_err(999);
    assert_eq!(
        fs::read(node.flannel_dir().join("keep")).expect("saved config"),
        saved,
        "the running pod's saved config must be the one its ADD used"
    );
    // Its DEL therefore releases the right address.
    call(&node, "flannel", &conf, "DEL", "keep", &pod).expect_ok();
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}

#[test]
fn bridge_repeated_add_of_a_running_pod_leaves_it_untouched() {
    let node = node();
    let conf = bridge_conf(&node);
    let pod = TestNetns::new("rpb");
    call(&node, "bridge", &conf, "ADD", "live", &pod).expect_ok();
    let before = live_state(&node, "live", &pod, false);
    for cid in ["live", "intruder"] {
        assert_refused_as_existing(&call(&node, "bridge", &conf, "ADD", cid, &pod));
        assert_eq!(pod_state(&node, "live", &pod), before, "{cid}");
    }
    call(&node, "bridge", &conf, "DEL", "live", &pod).expect_ok();
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}

/// host-local alone: a repeated ADD of an attachment that already holds addresses fails
/// in its second range set; the undo releases what this ADD reserved (the requested v4
/// address), never the addresses the attachment already held.
#[test]
fn host_local_failed_repeated_add_keeps_the_addresses_held_before() {
    let data = temp_dir();
    let conf = json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.247.0.0/24"}], [{"subnet": "fd47::/64"}]]},
    });
    let call = |args: &str| {
        Call::new(bin("host-local"), "ADD", conf.clone())
            .container("held")
            .netns_path("/var/run/netns/rcni-unused")
            .args(args)
            .run()
    };
    let store = data.path().join(NETWORK);
    let held = |store: &Path| -> Vec<String> {
        dir_entries(store)
            .into_iter()
            .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
            .collect()
    };
    call("").expect_ok();
    assert_eq!(held(&store), ["10.247.0.2", "fd47::2"]);

    let e = call("IP=10.247.0.9").expect_err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("duplicate allocation is not allowed"),
        "{e}"
    );
    assert_eq!(
        held(&store),
        ["10.247.0.2", "fd47::2"],
        "only what the failed ADD reserved is released"
    );
}

/// loopback: ADD brings `lo` up and then refuses a non-loopback address on it. The refusal
/// leaves `lo` as it found it: down when it was down, up (never taken down) when it was up.
#[test]
fn loopback_failed_add_leaves_lo_as_it_was() {
    let conf = json!({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"});
    for initially_up in [false, true] {
        let pod = TestNetns::new("rpl");
        pod.exec_ok("ip", &["addr", "add", "10.9.9.9/32", "dev", "lo"]);
        if !initially_up {
            pod.exec_ok("ip", &["link", "set", "lo", "down"]);
        }
        let r = Call::new(bin("loopback"), "ADD", conf.clone())
            .container("lo1")
            .ifname("lo")
            .netns(&pod)
            .run();
        let e = r.expect_err(999);
        assert_eq!(
            e["msg"],
            json!("loopback interface found with non-loopback address \"10.9.9.9\"")
        );
        let lo = pod.link("lo").expect("lo");
        let up = lo["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        assert_eq!(
            up, initially_up,
            "lo must be as before the failed ADD: {lo}"
        );
    }
}
