//! A node switching from the reference plugins to ours: pods made by the Go bridge and
//! host-local (Debian's containernetworking-plugins) are deleted by our binaries, and
//! nothing of theirs is left: no veth, no reservation, no `CNI-<hash>` masquerade chain.

use std::path::{Path, PathBuf};

use rcni_integration::{Call, TestNetns, bin, bin_dir, dir_entries, reference_bin, temp_dir};
use serde_json::{Value, json};

const NET: &str = "upgrade-net";

/// The reference plugins, as a CNI_PATH of their own.
fn reference_path(dir: &Path) -> String {
    for p in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(reference_bin(p), dir.join(p)).expect("symlink");
    }
    dir.to_string_lossy().into_owned()
}

fn conf(data: &Path) -> Value {
    // 0.4.0: the newest version both the reference v1.1.1 and ours take with CHECK.
    json!({
        "cniVersion": "0.4.0",
        "name": NET,
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": data},
    })
}

fn call(bin: PathBuf, path: &str, cmd: &str, conf: &Value, id: &str, node: &TestNetns) -> Call {
    Call::new(bin, cmd, conf.clone())
        .container(id)
        .path(path)
        .in_node(node)
}

fn reservations(data: &Path) -> Vec<String> {
    dir_entries(&data.join(NET))
        .into_iter()
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// The reference's masquerade chains (`CNI-` + 24 hex) in the node's nat table.
fn reference_chains(node: &TestNetns) -> Vec<String> {
    node.iptables_nat()
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("CNI-") && c.len() == 28)
        .map(str::to_owned)
        .collect()
}

#[test]
fn our_del_cleans_pods_the_reference_made() {
    let node = TestNetns::new("upg");
    let data = temp_dir();
    let theirs = temp_dir();
    let theirs_path = reference_path(theirs.path());
    let ours_path = bin_dir().to_string_lossy().into_owned();
    let conf = conf(data.path());

    // Two pods made by the Go plugins.
    let alive = TestNetns::new("upa");
    let gone = TestNetns::new("upg");
    for (id, pod) in [("go-alive", &alive), ("go-gone", &gone)] {
        call(
            reference_bin("bridge"),
            &theirs_path,
            "ADD",
            &conf,
            id,
            &node,
        )
        .netns(pod)
        .run()
        .expect_ok();
    }
    assert_eq!(reservations(data.path()).len(), 2);
    assert_eq!(
        reference_chains(&node).len(),
        2,
        "the Go bridge made one chain per pod"
    );

    // Our binaries take over the node.
    // DEL of a pod whose netns still exists.
    call(bin("bridge"), &ours_path, "DEL", &conf, "go-alive", &node)
        .netns(&alive)
        .run()
        .expect_ok();
    assert!(alive.link("eth0").is_none(), "pod interface left");
    // DEL of a pod whose netns is already gone (the reference itself leaks its chain here).
    let gone_path = gone.path_str().to_owned();
    drop(gone);
    call(bin("bridge"), &ours_path, "DEL", &conf, "go-gone", &node)
        .netns_path(&gone_path)
        .run()
        .expect_ok();

    assert!(
        reservations(data.path()).is_empty(),
        "Go reservations not released"
    );
    assert!(
        reference_chains(&node).is_empty(),
        "Go masquerade chains left:\n{}",
        node.iptables_nat()
    );
    assert!(
        !node.iptables_nat().contains("10.88.0."),
        "Go POSTROUTING jumps left:\n{}",
        node.iptables_nat()
    );
}

/// And the other way: what ours allocated, the Go host-local releases (the store is
/// shared), and a pod made by ours is deleted by the Go bridge without error.
#[test]
fn the_reference_del_works_on_pods_we_made() {
    let node = TestNetns::new("dng");
    let data = temp_dir();
    let theirs = temp_dir();
    let theirs_path = reference_path(theirs.path());
    let ours_path = bin_dir().to_string_lossy().into_owned();
    let mut conf = conf(data.path());
    conf["ipMasq"] = json!(false);
    let pod = TestNetns::new("dnp");
    call(bin("bridge"), &ours_path, "ADD", &conf, "rcni-pod", &node)
        .netns(&pod)
        .run()
        .expect_ok();
    assert_eq!(reservations(data.path()).len(), 1);
    call(
        reference_bin("bridge"),
        &theirs_path,
        "DEL",
        &conf,
        "rcni-pod",
        &node,
    )
    .netns(&pod)
    .run()
    .expect_ok();
    assert!(reservations(data.path()).is_empty());
    assert!(pod.link("eth0").is_none());
}
