//! rcni-doctor on a real node: a "node" netns set up as the demo's (a LAN uplink, flanneld's
//! lease and routes, the flannel conflist, pods added through the real plugins and cached as
//! libcni caches them). A healthy node gives no finding; then each fault is injected alone
//! and the doctor must report exactly its id; `--fix` repairs what it may, after which the
//! doctor is clean and pods can be added again. The doctor runs inside the node netns
//! (`ip netns exec`), never in the machine's own.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use cni::config::ConfList;
use firewall::portmap::{self, PortMapper};
use firewall::{Attachment, Iptables, Masquerade, Nftables, SystemRunner};
use rcni_integration::{
    Call, FlannelNode, Reply, TestNetns, bin, bin_dir, eventually, run_ok, temp_dir, unique,
    veth_between,
};
use serde_json::{Value, json};

const NETWORK: &str = "cbr0";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How flanneld connects the node to its peers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A route per peer subnet via the peer's LAN address; FLANNEL_MTU is the uplink's.
    HostGw,
    /// flannel.1 (MTU 1450) and a route per peer subnet over it.
    Vxlan,
}

/// Settings of a test node.
struct Setup {
    mode: Mode,
    subnet: &'static str,
    mtu: u32,
    /// FLANNEL_IPMASQ: true means flanneld masquerades, so the bridge does not (ipMasq off).
    flannel_ipmasq: bool,
    pods: usize,
    /// Chain portmap after flannel, as kube-flannel's conflist does.
    portmap: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mode: Mode::HostGw,
            subnet: "10.244.1.1/24",
            mtu: 1500,
            flannel_ipmasq: true,
            pods: 2,
            portmap: false,
        }
    }
}

struct Pod {
    ns: Option<TestNetns>,
    id: String,
    result: Value,
}

/// A flannel node (netns, lease, state dirs, its own bridge name) with its LAN, the CNI
/// config dir the runtime reads, libcni's cache and its pods.
struct Node {
    fl: FlannelNode,
    _lan: TestNetns,
    bin_dir: PathBuf,
    pods: Vec<Pod>,
}

/// What the doctor printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:#?}"))
    }

    /// The finding ids, in report order.
    fn ids(&self) -> Vec<String> {
        let v = self.json();
        for f in v["findings"].as_array().unwrap() {
            assert!(
                f["message"].as_str().is_some_and(|m| !m.is_empty()),
                "finding without a message: {f}"
            );
            assert!(
                f.get("fix").is_some_and(|x| x.is_null() || x.is_string()),
                "finding without a fix key: {f}"
            );
            assert!(
                matches!(f["severity"].as_str(), Some("error" | "warning")),
                "{f}"
            );
        }
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The message of finding `id`.
    fn message(&self, id: &str) -> String {
        self.finding(id)["message"].as_str().unwrap().to_owned()
    }

    fn finding(&self, id: &str) -> Value {
        self.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} finding: {self:#?}"))
    }
}

impl Node {
    fn new(s: Setup) -> Node {
        let fl = FlannelNode::new("drn", NETWORK, "");
        let lan = TestNetns::new("drl");
        let ns = &fl.ns;
        veth_between(ns, "eth0", &lan, "port1");
        ns.exec_ok("ip", &["addr", "add", "192.168.100.11/24", "dev", "eth0"]);
        ns.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        match s.mode {
            Mode::HostGw => {
                ns.exec_ok(
                    "ip",
                    &[
                        "route",
                        "add",
                        "10.244.2.0/24",
                        "via",
                        "192.168.100.12",
                        "dev",
                        "eth0",
                    ],
                );
            }
            Mode::Vxlan => {
                for args in [
                    &[
                        "link",
                        "add",
                        "flannel.1",
                        "type",
                        "vxlan",
                        "id",
                        "1",
                        "local",
                        "192.168.100.11",
                        "dev",
                        "eth0",
                        "dstport",
                        "8472",
                        "nolearning",
                    ][..],
                    &["link", "set", "flannel.1", "mtu", "1450"],
                    &["addr", "add", "10.244.1.0/32", "dev", "flannel.1"],
                    &["link", "set", "flannel.1", "up"],
                    &[
                        "route",
                        "add",
                        "10.244.2.0/24",
                        "via",
                        "10.244.2.0",
                        "dev",
                        "flannel.1",
                        "onlink",
                    ],
                ] {
                    ns.exec_ok("ip", args);
                }
            }
        }
        for d in ["net.d", "cache"] {
            fs::create_dir_all(fl.dir.path().join(d)).unwrap();
        }
        let mut node = Node {
            fl,
            _lan: lan,
            bin_dir: bin_dir(),
            pods: Vec::new(),
        };
        node.write_lease(s.subnet, s.mtu, s.flannel_ipmasq);
        // The conflist install-cni would install: the node's flannel plugin config, its
        // name and version at the list's level.
        let mut plugin = node.fl.flannel_conf(json!({"hairpinMode": true}));
        let obj = plugin.as_object_mut().unwrap();
        obj.remove("name");
        obj.remove("cniVersion");
        let mut plugins = vec![plugin];
        if s.portmap {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        }
        let list = json!({"name": NETWORK, "cniVersion": "1.0.0", "plugins": plugins});
        fs::write(node.conflist(), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        for _ in 0..s.pods {
            node.add_pod().expect_ok();
        }
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.fl.dir.path().join(rel)
    }

    fn conflist(&self) -> PathBuf {
        self.path("net.d/10-flannel.conflist")
    }

    fn bridge(&self) -> &str {
        &self.fl.bridge
    }

    fn write_lease(&self, subnet: &str, mtu: u32, ipmasq: bool) {
        fs::write(
            self.fl.subnet_env(),
            format!(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU={mtu}\n\
                 FLANNEL_IPMASQ={ipmasq}\n"
            ),
        )
        .unwrap();
    }

    /// The flannel plugin's config as the runtime derives it from the installed conflist.
    fn plugin_conf(&self) -> Value {
        ConfList::load(&self.conflist())
            .unwrap()
            .plugin_conf(0)
            .unwrap()
    }

    fn call(&self, cmd: &str, id: &str, netns: &str, conf: Value) -> Reply {
        Call::new(bin("flannel"), cmd, conf)
            .container(id)
            .netns_path(netns)
            .in_node(&self.fl.ns)
            .run()
    }

    fn cache_file(&self, id: &str) -> PathBuf {
        self.path(&format!("cache/results/{NETWORK}-{id}-eth0"))
    }

    /// ADD a new pod as a runtime does (libcni caches the result on success). Even pods
    /// get the libcni 1.2 cache layout (`netns` recorded), odd ones libcni 1.1's (only the
    /// result's `interfaces[].sandbox`).
    fn add_pod(&mut self) -> Reply {
        let ns = TestNetns::new("drp");
        let id = unique("pod");
        let reply = self.call("ADD", &id, ns.path_str(), self.plugin_conf());
        if reply.ok() {
            let result = reply.json();
            let mut entry = json!({"kind": "cniCacheV1", "containerId": id, "ifName": "eth0",
                "networkName": NETWORK, "result": result});
            if self.pods.len() % 2 == 1 {
                entry["netns"] = json!(ns.path_str());
            }
            fs::create_dir_all(self.path("cache/results")).unwrap();
            fs::write(self.cache_file(&id), entry.to_string()).unwrap();
            self.pods.push(Pod {
                ns: Some(ns),
                id,
                result,
            });
        }
        reply
    }

    /// DEL pod `i` as a runtime does (the libcni cache entry goes after a successful DEL).
    fn del_pod(&mut self, i: usize) {
        let pod = &self.pods[i];
        let mut conf = self.plugin_conf();
        conf["prevResult"] = pod.result.clone();
        let netns = pod.ns.as_ref().map_or("", |n| n.path_str());
        self.call("DEL", &pod.id, netns, conf).expect_ok();
        fs::remove_file(self.cache_file(&pod.id)).unwrap();
        self.pods.remove(i);
    }

    /// Pod `i` vanishes without a DEL (its netns deleted, as after a runtime crash); waits
    /// for the kernel to remove its host veth with the netns.
    fn lose_pod(&mut self, i: usize) {
        let ports = self.bridge_ports();
        self.pods[i].ns = None;
        eventually("the lost pod's veth to go", || {
            self.bridge_ports() == ports - 1
        });
    }

    fn bridge_ports(&self) -> usize {
        self.fl
            .ns
            .ip_json(&["link", "show", "master", self.bridge()])
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Runs the doctor in the node with our paths, `--json` unless `text`.
    fn doctor_with(&self, path: &str, args: &[&str]) -> Out {
        let exe = bin("rcni-doctor");
        let conf_dir = self.path("net.d");
        let cache_dir = self.path("cache");
        let mut full: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.fl.ns.name().into(),
            "env".into(),
            format!("PATH={path}"),
            exe.to_string_lossy().into_owned(),
            format!("--conf-dir={}", conf_dir.display()),
            format!("--bin-dir={}", self.bin_dir.display()),
            format!("--cache-dir={}", cache_dir.display()),
            // Also used when the config (which names it) is missing or broken.
            format!("--subnet-file={}", self.fl.subnet_env().display()),
        ];
        full.extend(args.iter().map(|s| (*s).to_owned()));
        let out = Command::new("ip").args(&full).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn doctor(&self, args: &[&str]) -> Out {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.doctor_with(PATH, &a)
    }

    /// Asserts that the doctor finds exactly `ids` (and exits as their severities say).
    fn expect(&self, ids: &[&str]) -> Out {
        let out = self.doctor(&[]);
        assert_eq!(out.ids(), ids, "{out:#?}");
        let errors = out.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "error");
        assert_eq!(out.json()["healthy"], json!(!errors), "{out:#?}");
        assert_eq!(out.code, i32::from(errors), "{out:#?}");
        out
    }

    /// `--fix`, then the doctor must be clean.
    fn fix_and_expect_clean(&self) -> Out {
        let out = self.doctor(&["--fix"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(out.ids(), Vec::<String>::new(), "{out:#?}");
        self.expect(&[]);
        out
    }

    fn reservations(&self) -> Vec<String> {
        self.fl.reservations()
    }

    fn saved_configs(&self) -> Vec<String> {
        rcni_integration::dir_entries(&self.fl.flannel_dir())
    }

    /// Every file of the node's state (config, lease, stores, cache), path → content.
    fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.fl.dir.path(), &mut out);
        out.sort();
        out
    }

    /// The node netns.
    fn ns(&self) -> &TestNetns {
        &self.fl.ns
    }
}

// ------------------------------------------------------------------ healthy nodes

#[test]
fn healthy_host_gw_node_has_no_findings() {
    let node = Node::new(Setup::default());
    let before = node.files();
    let out = node.expect(&[]);
    assert_eq!(out.json(), json!({"healthy": true, "findings": []}));
    assert_eq!(out.stderr, "", "{out:#?}");
    // The text report: one ✓ line per check, nothing else wrong.
    let text = node.doctor_with(PATH, &[]);
    assert_eq!(text.code, 0, "{text:#?}");
    let checks: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| !l.starts_with("rcni-doctor:"))
        .collect();
    assert_eq!(checks.len(), 13, "{}", text.stdout);
    assert!(
        checks[..12].iter().all(|l| l.starts_with("✓ ")),
        "{}",
        text.stdout
    );
    assert_eq!(checks[12], "no problem found");
    // Looking changes nothing: no store index, no swept file, no cache entry.
    assert_eq!(node.files(), before);
    assert!(
        text.stdout
            .contains("2 reserved addresses and 2 saved configs, all of the 2 live pods"),
        "{}",
        text.stdout
    );
}

#[test]
fn healthy_vxlan_node_with_masquerade_has_no_findings() {
    let node = Node::new(Setup {
        mode: Mode::Vxlan,
        mtu: 1450,
        flannel_ipmasq: false,
        ..Setup::default()
    });
    // The pods' masquerade rules are there, and they are the live pods'.
    assert!(node.ns().iptables_nat().contains("RCNI-"));
    let text = node.doctor_with(PATH, &[]);
    assert!(
        text.stdout
            .contains("✓ pod rules: 2 masquerade rule sets and 0 port-mapping rule sets"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("flannel.1 1450"), "{}", text.stdout);
    node.expect(&[]);
}

// ------------------------------------------------------------------ one fault each

#[test]
fn cni_config_missing() {
    let node = Node::new(Setup::default());
    let wrong = node.doctor(&["--network", "nope"]);
    assert_eq!(wrong.ids(), ["cni-config-missing"], "{wrong:#?}");
    assert!(
        wrong.message("cni-config-missing").contains("\"cbr0\""),
        "{wrong:#?}"
    );
    fs::remove_file(node.conflist()).unwrap();
    let out = node.expect(&["cni-config-missing"]);
    assert_eq!(out.finding("cni-config-missing")["fix"], Value::Null);
}

#[test]
fn cni_config_invalid() {
    let node = Node::new(Setup::default());
    // Sorts before the good file: the runtime would use it.
    fs::write(
        node.path("net.d/00-edited.conflist"),
        r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"delegate":{}}]}"#,
    )
    .unwrap();
    let out = node.expect(&["cni-config-invalid"]);
    let msg = out.message("cni-config-invalid");
    assert!(
        msg.contains("00-edited.conflist") && msg.contains("\"type\""),
        "{msg}"
    );
}

#[test]
fn plugin_missing() {
    let mut node = Node::new(Setup::default());
    let bins = temp_dir();
    for p in ["flannel", "bridge", "rcni-doctor"] {
        std::os::unix::fs::symlink(bin_dir().join(p), bins.path().join(p)).unwrap();
    }
    node.bin_dir = bins.path().to_owned();
    let out = node.expect(&["plugin-missing"]);
    let msg = out.message("plugin-missing");
    assert!(msg.contains("host-local (the IPAM of bridge)"), "{msg}");
}

#[test]
fn subnet_env_missing() {
    let node = Node::new(Setup::default());
    fs::remove_file(node.fl.subnet_env()).unwrap();
    node.expect(&["subnet-env-missing"]);
}

#[test]
fn subnet_env_invalid() {
    let node = Node::new(Setup::default());
    // flanneld never writes a subnet outside its network.
    node.write_lease("10.99.1.1/24", 1500, true);
    let out = node.expect(&["subnet-env-invalid"]);
    assert!(
        out.message("subnet-env-invalid")
            .contains("FLANNEL_SUBNET=10.99.1.0/24 is outside FLANNEL_NETWORK=10.244.0.0/16"),
        "{out:#?}"
    );
    fs::write(
        node.fl.subnet_env(),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=x\n",
    )
    .unwrap();
    node.expect(&["subnet-env-invalid"]);
}

#[test]
fn bridge_address_mismatch_is_fixed_and_the_add_then_works() {
    let mut node = Node::new(Setup::default());
    // The node's pods are drained, then it comes back with a new lease.
    node.del_pod(1);
    node.del_pod(0);
    node.write_lease("10.244.7.1/24", 1500, true);
    let failed = node.add_pod();
    let err = failed.expect_err(999);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("already has an IP address different from 10.244.7.1/24"),
        "{err}"
    );
    let out = node.expect(&["bridge-address-mismatch"]);
    assert!(
        out.finding("bridge-address-mismatch")["fix"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("delete {}", node.bridge()))),
        "{out:#?}"
    );
    node.fix_and_expect_clean();
    let r = node.add_pod().expect_ok();
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.244.7."),
        "{r}"
    );
    assert!(
        node.ns()
            .addrs(node.bridge())
            .contains(&"10.244.7.1/24".to_owned())
    );
    node.expect(&[]);
}

#[test]
fn bridge_with_ports_is_never_deleted() {
    let node = Node::new(Setup::default());
    node.write_lease("10.244.7.1/24", 1500, true);
    let out = node.expect(&["bridge-address-mismatch"]);
    assert_eq!(out.finding("bridge-address-mismatch")["fix"], Value::Null);
    let fixed = node.doctor(&["--fix"]);
    assert_eq!(fixed.code, 1, "{fixed:#?}");
    assert_eq!(fixed.ids(), ["bridge-address-mismatch"]);
    assert!(
        node.ns().link(node.bridge()).is_some(),
        "the bridge was deleted with its pods"
    );
    assert_eq!(node.bridge_ports(), 2);
}

#[test]
fn ip_forward_disabled_is_fixed() {
    let node = Node::new(Setup::default());
    node.ns()
        .exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
    node.expect(&["ip-forward-disabled"]);
    node.fix_and_expect_clean();
    assert_eq!(node.ns().sysctl("net.ipv4.ip_forward"), "1");
}

#[test]
fn forward_drop_iptables_policy() {
    let node = Node::new(Setup::default());
    node.ns().exec_ok("iptables", &["-P", "FORWARD", "DROP"]);
    let out = node.expect(&["forward-drop"]);
    assert_eq!(out.finding("forward-drop")["fix"], Value::Null);
    assert!(
        out.message("forward-drop")
            .contains("iptables -I FORWARD -s 10.244.0.0/16 -j ACCEPT"),
        "{out:#?}"
    );
    // What flanneld adds itself: an accept for the network, through its own chain.
    for args in [
        &["-N", "FLANNEL-FWD"][..],
        &["-A", "FORWARD", "-j", "FLANNEL-FWD"],
        &["-A", "FLANNEL-FWD", "-s", "10.244.0.0/16", "-j", "ACCEPT"],
        &["-A", "FLANNEL-FWD", "-d", "10.244.0.0/16", "-j", "ACCEPT"],
    ] {
        node.ns().exec_ok("iptables", args);
    }
    node.expect(&[]);
}

#[test]
fn forward_drop_nftables_chain() {
    let node = Node::new(Setup::default());
    node.ns().exec_ok("nft", &["add", "table", "inet", "fw"]);
    node.ns().exec_ok(
        "nft",
        &["add chain inet fw pods_fwd { type filter hook forward priority 0 ; policy drop ; }"],
    );
    node.expect(&["forward-drop"]);
    node.ns().exec_ok(
        "nft",
        &["add rule inet fw pods_fwd ip saddr 10.244.0.0/16 accept"],
    );
    node.expect(&[]);
}

#[test]
fn bridge_nf_call_disabled() {
    let node = Node::new(Setup::default());
    node.ns()
        .exec_ok("sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=0"]);
    let out = node.expect(&["bridge-nf-call-disabled"]);
    assert_eq!(out.json()["healthy"], json!(true));
}

#[test]
fn mtu_mismatch_pod_veth() {
    let node = Node::new(Setup::default());
    let veth = node
        .ns()
        .ip_json(&["link", "show", "master", node.bridge()])[0]["ifname"]
        .as_str()
        .unwrap()
        .to_owned();
    node.ns()
        .exec_ok("ip", &["link", "set", &veth, "mtu", "9000"]);
    let out = node.expect(&["mtu-mismatch"]);
    assert!(
        out.message("mtu-mismatch")
            .contains(&format!("{veth} (9000)")),
        "{out:#?}"
    );
}

#[test]
fn mtu_mismatch_lease_above_vxlan() {
    // flanneld's MTU left at the uplink's while flannel.1 has 50 bytes less.
    let node = Node::new(Setup {
        mode: Mode::Vxlan,
        mtu: 1500,
        ..Setup::default()
    });
    let out = node.expect(&["mtu-mismatch"]);
    assert!(
        out.message("mtu-mismatch")
            .contains("FLANNEL_MTU=1500 is above the MTU of flannel.1 (1450)"),
        "{out:#?}"
    );
}

#[test]
fn stale_reservation_is_released_by_gc() {
    let mut node = Node::new(Setup::default());
    let lost = node.pods[0].id.clone();
    // The pod with the libcni 1.1 cache entry (no `netns`, only the result's sandbox).
    node.lose_pod(0);
    assert_eq!(node.reservations().len(), 2);
    let before = node.files();
    let out = node.expect(&["stale-reservation"]);
    let msg = out.message("stale-reservation");
    assert!(msg.contains("no longer exists"), "{msg}");
    assert_eq!(node.files(), before, "changed without --fix");
    node.fix_and_expect_clean();
    assert_eq!(node.reservations().len(), 1);
    assert!(
        !node.saved_configs().contains(&lost),
        "{:?}",
        node.saved_configs()
    );
    assert!(node.saved_configs().contains(&node.pods[1].id));
    // The live pod keeps its address; new pods can be added.
    let live_ip = node.pods[1].result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(node.reservations(), [live_ip]);
    node.add_pod().expect_ok();
    node.expect(&[]);
}

#[test]
fn a_pod_deleted_a_moment_ago_is_gone_not_unknown() {
    let mut node = Node::new(Setup::default());
    // No wait for the kernel to remove its veth: the doctor must not take the veth that is
    // still going away for a pod its cache does not know.
    node.pods[0].ns = None;
    node.expect(&["stale-reservation"]);
}

#[test]
fn an_empty_reservation_file_is_stale() {
    let node = Node::new(Setup::default());
    // What a host-local killed between creating and writing the file leaves.
    fs::write(node.fl.ipam_dir().join(NETWORK).join("10.244.1.99"), "").unwrap();
    let out = node.expect(&["stale-reservation"]);
    assert!(
        out.message("stale-reservation")
            .contains("10.244.1.99 (the file names no pod"),
        "{out:#?}"
    );
    node.fix_and_expect_clean();
    assert_eq!(node.reservations().len(), 2);
}

/// Our rules (both backends) and the Go plugin's, for attachments that never existed here.
fn leave_rules(node: &TestNetns, network: &str, cid: &str, ip: &str) {
    let att = Attachment {
        network: network.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    };
    let ips = [format!("{ip}/24").parse().unwrap()];
    // nf_tables is spoken over netlink in the calling thread's netns: enter the node's.
    let ns = netlink::Netns::open(node.path()).unwrap();
    netlink::netns::run_in(&ns, || Nftables::new().setup(&att, &ips))
        .unwrap()
        .unwrap();
    Iptables::new(SystemRunner::in_named_netns(node.name()))
        .setup(&att, &ips)
        .unwrap();
    // The Go bridge plugin's chain: CNI-<sha512(network + containerID)[..24]>.
    let chain = firewall::naming::reference_chain(network, &format!("{cid}-go"));
    let c = format!("name: \\\"{network}\\\" id: \\\"{cid}-go\\\"");
    let restore = format!(
        "*nat\n:{chain} - [0:0]\n-A {chain} -d 10.244.1.0/24 -m comment --comment \"{c}\" -j ACCEPT\n\
         -A {chain} ! -d 224.0.0.0/4 -m comment --comment \"{c}\" -j MASQUERADE\n\
         -A POSTROUTING -s {ip}/32 -m comment --comment \"{c}\" -j {chain}\nCOMMIT\n"
    );
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.name(),
            "iptables-restore",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), restore.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn leftover_rules_are_removed_and_other_networks_left_alone() {
    let node = Node::new(Setup::default());
    leave_rules(node.ns(), NETWORK, "gone1", "10.244.1.50");
    leave_rules(node.ns(), "othernet", "gone2", "10.99.0.50");
    let out = node.expect(&["leftover-rules"]);
    let msg = out.message("leftover-rules");
    assert!(msg.contains("id: gone1"), "{msg}");
    assert!(!msg.contains("gone2"), "{msg}");
    node.fix_and_expect_clean();
    let (nat, nft) = (node.ns().iptables_nat(), node.ns().nft_ruleset());
    assert!(
        !nat.contains("gone1") && !nft.contains("gone1"),
        "{nat}\n{nft}"
    );
    // Rules of a network the doctor was not asked about stay.
    assert!(
        nat.contains("id: gone2") && nft.contains("id: gone2"),
        "{nat}\n{nft}"
    );
    assert!(nat.contains(&firewall::naming::reference_chain("othernet", "gone2-go")));
}

#[test]
fn leftover_port_mappings_are_removed_by_portmaps_gc() {
    let node = Node::new(Setup {
        portmap: true,
        ..Setup::default()
    });
    // The hostPort rules of a pod that is gone (its DEL never ran).
    let att = Attachment {
        network: NETWORK.into(),
        container_id: "gone-pm".into(),
        ifname: "eth0".into(),
    };
    let addrs = ["10.244.1.60/24".parse().unwrap()];
    let mappings = [portmap::PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: portmap::Protocol::Tcp,
        host_ip: None,
    }];
    let opts = portmap::Options::default();
    portmap::Iptables::new(SystemRunner::in_named_netns(node.ns().name()))
        .setup(&portmap::Request {
            att: &att,
            addrs: &addrs,
            mappings: &mappings,
            opts: &opts,
        })
        .unwrap();
    assert!(node.ns().iptables_nat().contains("CNI-DN-"));
    let out = node.expect(&["leftover-rules"]);
    let msg = out.message("leftover-rules");
    assert!(
        msg.contains("port mapping") && msg.contains("id: gone-pm"),
        "{msg}"
    );
    node.fix_and_expect_clean();
    assert!(
        !node.ns().iptables_nat().contains("CNI-DN-"),
        "{}",
        node.ns().iptables_nat()
    );
}

#[test]
fn a_lost_pod_with_masquerade_leaves_both_and_one_fix_cleans_both() {
    let mut node = Node::new(Setup {
        flannel_ipmasq: false,
        ..Setup::default()
    });
    // The pod with the libcni 1.2 cache entry (`netns` recorded).
    let lost = node.pods[1].id.clone();
    node.lose_pod(1);
    assert!(node.ns().nft_ruleset().contains(&lost) || node.ns().iptables_nat().contains(&lost));
    node.expect(&["stale-reservation", "leftover-rules"]);
    let out = node.fix_and_expect_clean();
    assert!(!node.ns().iptables_nat().contains(&lost));
    // The live pod's rules stay.
    assert!(
        node.ns().iptables_nat().contains(&node.pods[0].id),
        "{out:#?}"
    );
    node.add_pod().expect_ok();
    node.expect(&[]);
}

#[test]
fn pool_nearly_exhausted() {
    // A /29 holds 5 pods (.2 to .6; .1 is the gateway).
    let mut node = Node::new(Setup {
        subnet: "10.244.1.1/29",
        pods: 5,
        ..Setup::default()
    });
    let out = node.expect(&["pool-nearly-exhausted"]);
    assert!(
        out.message("pool-nearly-exhausted")
            .contains("5 of 5 addresses of 10.244.1.0/29 are reserved (100%)"),
        "{out:#?}"
    );
    node.del_pod(0);
    node.del_pod(0);
    node.expect(&[]);
}

#[test]
fn no_route_to_peers() {
    let node = Node::new(Setup::default());
    node.ns().exec_ok("ip", &["route", "del", "10.244.2.0/24"]);
    // A default route does not count.
    node.ns()
        .exec_ok("ip", &["route", "add", "default", "via", "192.168.100.1"]);
    node.expect(&["no-route-to-peers"]);
}

// ------------------------------------------------------------------ bad input

#[test]
fn a_config_dir_with_garbage() {
    let node = Node::new(Setup::default());
    let d = node.path("net.d");
    fs::write(d.join("00-junk.conflist"), [0xff_u8, 0x00, 0x13, 0x37]).unwrap();
    fs::write(d.join("README"), "not a config").unwrap();
    fs::create_dir(d.join("05-dir.conf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", d.join("07-dangling.json")).unwrap();
    let out = node.expect(&["cni-config-invalid"]);
    assert!(
        out.message("cni-config-invalid")
            .contains("00-junk.conflist"),
        "{out:#?}"
    );
    // Asked for by name, the good config is found among the garbage.
    let named = node.doctor(&["--network", NETWORK]);
    assert_eq!((named.code, named.ids()), (0, vec![]), "{named:#?}");
    fs::remove_file(d.join("00-junk.conflist")).unwrap();
    fs::rename(d.join("07-dangling.json"), d.join("00-dangling.json")).unwrap();
    let out = node.expect(&["cni-config-invalid"]);
    assert!(
        out.message("cni-config-invalid").contains("cannot read"),
        "{out:#?}"
    );
}

#[test]
fn unreadable_files() {
    let node = Node::new(Setup::default());
    // A lease that is a directory cannot be read.
    let lease = node.fl.subnet_env();
    fs::remove_file(&lease).unwrap();
    fs::create_dir(&lease).unwrap();
    let out = node.expect(&["subnet-env-invalid"]);
    assert!(
        out.message("subnet-env-invalid").contains("Is a directory"),
        "{out:#?}"
    );
    fs::remove_dir(&lease).unwrap();
    node.write_lease("10.244.1.1/24", 1500, true);
    // A libcni cache entry of this network that does not parse: its pod may be live, so
    // nothing can be called stale, and the doctor says it could not look.
    fs::write(
        node.path(&format!("cache/results/{NETWORK}-torn-eth0")),
        "{\"contai",
    )
    .unwrap();
    let out = node.doctor(&["--fix"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert_eq!(out.ids(), Vec::<String>::new());
    assert!(
        out.stderr.contains("could not check reservations")
            && out.stderr.contains(&format!("{NETWORK}-torn-eth0")),
        "{out:#?}"
    );
}

#[test]
fn a_missing_cache_dir_is_never_all_clear_and_never_fixed() {
    let mut node = Node::new(Setup::default());
    node.lose_pod(0);
    let reserved = node.reservations();
    fs::rename(node.path("cache"), node.path("cache.moved")).unwrap();
    for args in [&["--json"][..], &["--json", "--fix"]] {
        let out = node.doctor_with(PATH, args);
        assert_eq!(out.code, 2, "{out:#?}");
        assert_eq!(out.ids(), Vec::<String>::new());
        assert!(out.stderr.contains("no libcni results cache"), "{out:#?}");
    }
    assert_eq!(
        node.reservations(),
        reserved,
        "released without knowing the live pods"
    );
    let text = node.doctor_with(PATH, &[]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.contains("? reservations: could not check")
            && text.stdout.contains("this answer is incomplete"),
        "{}",
        text.stdout
    );
    // The pod whose cache entry is gone while it lives: the cache is incomplete, so nothing
    // is called stale either.
    fs::rename(node.path("cache.moved"), node.path("cache")).unwrap();
    fs::remove_file(node.cache_file(&node.pods[1].id)).unwrap();
    let out = node.doctor(&["--fix"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("does not know every pod"), "{out:#?}");
    assert_eq!(node.reservations(), reserved);
}

#[test]
fn a_fresh_node_without_a_cache_is_fine() {
    let node = Node::new(Setup {
        pods: 0,
        ..Setup::default()
    });
    fs::remove_dir_all(node.path("cache")).unwrap();
    node.expect(&[]);
}

#[test]
fn a_node_without_iptables_or_nft() {
    let node = Node::new(Setup::default());
    let empty = temp_dir();
    let out = node.doctor_with(empty.path().to_str().unwrap(), &["--json"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert_eq!(out.json(), json!({"healthy": true, "findings": []}));
    assert!(
        out.stderr.contains("could not check FORWARD chain")
            && out.stderr.contains("could not check pod rules")
            && out.stderr.contains("neither nft nor iptables"),
        "{out:#?}"
    );
    let text = node.doctor_with(empty.path().to_str().unwrap(), &[]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.contains("? FORWARD chain: could not check"),
        "{}",
        text.stdout
    );
}

#[test]
fn usage_errors_and_help() {
    let exe = bin("rcni-doctor");
    let out = Command::new(&exe).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument"));
    assert!(out.stdout.is_empty());
    let help = Command::new(&exe).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--subnet-file"));
    let v = run_ok(exe.to_str().unwrap(), &["--version"]);
    assert!(v.starts_with("rcni-doctor rcni v"), "{v}");
}
