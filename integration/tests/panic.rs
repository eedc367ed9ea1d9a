//! What a runtime sees when a plugin panics (issue 10, point 8): a CNI error object on stdout
//! (code 999, `plugin panicked`, the panic message in `details`) and exit status 1, never an
//! abort with empty stdout; and the failed ADD is rolled back while the panic unwinds.
//!
//! The panics are injected at named points (`cni::fault`) that exist only in the test
//! binaries `scripts/build-fault-injection.sh` builds into `target/bin-faults`, with the
//! release profile's panic strategy. Root only (network namespaces).

use std::path::{Path, PathBuf};

use rcni_integration::{Call, FlannelNode, Reply, TestNetns, dir_entries};
use serde_json::{Value, json};

const PANIC_AT: &str = "RCNI_TEST_PANIC_AT";

/// `RCNI_FAULT_BIN_DIR`, else `<repo>/target/bin-faults`.
fn fault_bin_dir() -> PathBuf {
    let dir = std::env::var_os("RCNI_FAULT_BIN_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bin-faults"),
        PathBuf::from,
    );
    assert!(
        dir.join("bridge").exists(),
        "panic-injection binaries not found in {}: run scripts/build-fault-injection.sh",
        dir.display()
    );
    dir
}

fn node() -> FlannelNode {
    FlannelNode::new(
        "pnc",
        "pnc",
        "FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
}

/// An ADD of a panic-injection binary, told to panic at `panic_at`.
fn add(node: &FlannelNode, plugin: &str, conf: &Value, pod: &TestNetns, panic_at: &str) -> Reply {
    let dir = fault_bin_dir();
    Call::new(dir.join(plugin), "ADD", conf.clone())
        .container("panicky")
        .netns(pod)
        .path(&dir.to_string_lossy())
        .in_node(&node.ns)
        .env(PANIC_AT, panic_at)
        .run()
}

fn assert_nothing_left(node: &FlannelNode, pod: &TestNetns) {
    assert!(node.veths().is_empty(), "veth left: {:?}", node.veths());
    assert!(pod.link("eth0").is_none(), "pod interface left");
    assert!(
        node.reservations().is_empty(),
        "IP left reserved: {:?}",
        node.reservations()
    );
    assert!(
        dir_entries(&node.flannel_dir()).is_empty(),
        "saved config left"
    );
    let rules = format!("{}{}", node.ns.nft_ruleset(), node.ns.iptables_nat());
    assert!(
        !rules.contains("10.250.1."),
        "masquerade rule left:\n{rules}"
    );
    assert!(
        !rules.contains("panicky"),
        "spoof-check rules left:\n{rules}"
    );
}

fn assert_panic_error(r: &Reply, point: &str) {
    assert_eq!(r.code, 1, "exit status, not a signal: {r:?}");
    let e = r.expect_err(999);
    assert_eq!(e["msg"], json!("plugin panicked"), "{r:?}");
    assert_eq!(e["details"], json!(format!("injected panic at {point}")));
}

/// A panic in bridge ADD after every step (veth, IPAM, spoof check, masquerade, addresses)
/// is a CNI error object, and the undo list removes all of it.
#[test]
fn a_panicking_bridge_add_is_an_error_object_and_rolled_back() {
    let node = node();
    let mut conf = node.flannel_conf(json!({"macspoofchk": true}))["delegate"].clone();
    conf["cniVersion"] = json!("1.0.0");
    conf["name"] = json!("pnc");
    conf["type"] = json!("bridge");
    conf["ipMasq"] = json!(true);
    conf["ipam"] = json!({"type": "host-local", "dataDir": node.ipam_dir(),
                          "ranges": [[{"subnet": "10.250.1.0/24"}]]});
    let pod = TestNetns::new("pnp");
    let r = add(&node, "bridge", &conf, &pod, "bridge-add-end");
    assert_panic_error(&r, "bridge-add-end");
    assert_nothing_left(&node, &pod);
    // Without the injected panic the same ADD works (the point was really reached).
    let ok = add(&node, "bridge", &conf, &pod, "");
    ok.expect_ok();
    assert!(pod.link("eth0").is_some());
}

/// flannel panicking after its delegate's ADD succeeded: that attachment is this ADD's, so
/// its undo runs the delegate's DEL and removes the saved config.
#[test]
fn a_panicking_flannel_add_is_an_error_object_and_rolled_back() {
    let node = node();
    let pod = TestNetns::new("pnf");
    let r = add(
        &node,
        "flannel",
        &node.flannel_conf(json!({"macspoofchk": true})),
        &pod,
        "flannel-add-after-delegate",
    );
    assert_panic_error(&r, "flannel-add-after-delegate");
    assert_nothing_left(&node, &pod);
}

/// bridge panicking while flannel runs it in-process (the fault-injection binary is one
/// build, so flannel → bridge → host-local is one process): the panic is caught at the
/// delegate's own dispatcher, bridge's undo list rolls its ADD back while it unwinds, and
/// flannel answers with the delegate's error object and undoes its saved config, exactly as
/// with an exec'd bridge.
#[test]
fn a_panicking_in_process_delegate_is_its_error_object() {
    let node = node();
    let pod = TestNetns::new("pni");
    let conf = node.flannel_conf(json!({"macspoofchk": true, "ipMasq": true}));
    let r = Call::new(fault_bin_dir().join("flannel"), "ADD", conf)
        .container("panicky")
        .netns(&pod)
        .path(&fault_bin_dir().to_string_lossy())
        .in_node(&node.ns)
        .env(PANIC_AT, "bridge-add-end")
        .env("CNI_LOG_LEVEL", "debug")
        .run();
    assert!(
        r.stderr.contains("delegating ADD to bridge in-process"),
        "{}",
        r.stderr
    );
    assert_eq!(r.code, 1, "{r:?}");
    let e = r.expect_err(999);
    assert_eq!(
        e["msg"],
        json!("failed to delegate add: plugin panicked"),
        "{r:?}"
    );
    assert_eq!(e["details"], json!("injected panic at bridge-add-end"));
    assert_nothing_left(&node, &pod);
}
