//! Every file in `conf-examples/` parses, and every example network works: it is run through
//! ADD, CHECK and DEL the way libcni runs a plugin list (ADD forward, each plugin getting the
//! previous result as `prevResult`; CHECK forward and DEL in reverse with the final result),
//! with our binaries, inside a "node" netns, for real pods (netns).
//!
//! The examples name the real paths (`/run/flannel/subnet.env`, `/var/lib/cni/...`). The
//! runner rewrites them to a temporary directory before each call: flannel's `subnetFile`
//! and `dataDir`, a top-level `ipam.dataDir` (flannel builds the delegate's ipam on top of
//! it) and host-local's `ipam.dataDir`. Nothing is written outside the test's temp dir.
//!
//! A plugin that declares the `portMappings` capability (`portmap` in kube-flannel's
//! `10-flannel.conflist`) gets a host port per pod in `runtimeConfig`, as kubelet passes a
//! pod's `hostPort`s.

use std::fs;
use std::path::{Path, PathBuf};

use cni::config::ConfList;
use rcni_integration::{Call, Reply, TestNetns, bin, dir_entries, temp_dir};
use serde_json::{Value, json};

/// What kubelet passes in CNI_ARGS (the plugins must accept it thanks to IgnoreUnknown).
const KUBELET_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                            K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=1234";

/// Plugins the examples mention that rcni does not ship.
const NOT_SHIPPED: &[&str] = &[];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf-examples")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A config file as libcni reads it (a `.conf` becomes a list of one), with the runtime's
/// loader.
fn load(path: &Path) -> ConfList {
    ConfList::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The subnet.env file (from conf-examples) that goes with an example.
fn subnet_env_for(example: &str) -> &'static str {
    if example.contains("dualstack") {
        "subnet.env.dual-stack"
    } else if example.contains("host-gw") {
        "subnet.env.host-gw"
    } else {
        "subnet.env.vxlan"
    }
}

fn parse_subnet_env(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// `cniVersion` ≥ 0.4.0: libcni refuses CHECK below that.
fn has_check(version: &str) -> bool {
    !matches!(version, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1")
}

/// One attachment: a pod netns, its container ID and interface name.
struct Att<'a> {
    pod: &'a TestNetns,
    id: &'a str,
    ifname: &'a str,
}

/// One node with its temp state dir, running example networks like a runtime would.
struct Runner {
    node: TestNetns,
    state: tempfile::TempDir,
}

impl Runner {
    fn new(subnet_env: &str) -> Self {
        let state = temp_dir();
        fs::copy(
            examples_dir().join(subnet_env),
            state.path().join("subnet.env"),
        )
        .expect("copy subnet.env");
        Runner {
            node: TestNetns::new("exn"),
            state,
        }
    }

    fn flannel_dir(&self) -> PathBuf {
        self.state.path().join("flannel")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.state.path().join("ipam")
    }

    /// The config libcni would send to plugin `p` of `list`, with our temp paths.
    fn plugin_conf(&self, list: &ConfList, p: &Value, at: &Att, prev: Option<&Value>) -> Value {
        let mut c = p.clone();
        // The runtime turns capabilities into runtimeConfig and removes them.
        if c["capabilities"]["portMappings"] == json!(true) {
            c["runtimeConfig"] = json!({"portMappings": [
                {"hostPort": host_port(at.id), "containerPort": 80, "protocol": "tcp"}
            ]});
        }
        if let Some(o) = c.as_object_mut() {
            o.remove("capabilities");
        }
        c["name"] = json!(list.name);
        c["cniVersion"] = json!(list.effective_version());
        let ipam_dir = self.ipam_dir().to_string_lossy().into_owned();
        match c["type"].as_str() {
            Some("flannel") => {
                c["subnetFile"] = json!(self.state.path().join("subnet.env"));
                c["dataDir"] = json!(self.flannel_dir());
                if !c["ipam"].is_object() {
                    c["ipam"] = json!({});
                }
                c["ipam"]["dataDir"] = json!(ipam_dir);
            }
            _ => {
                if c["ipam"].is_object() {
                    c["ipam"]["dataDir"] = json!(ipam_dir);
                }
            }
        }
        if let Some(prev) = prev {
            c["prevResult"] = prev.clone();
        }
        c
    }

    fn call(&self, list: &ConfList, p: &Value, cmd: &str, at: &Att, prev: Option<&Value>) -> Reply {
        let ty = p["type"].as_str().expect("type");
        Call::new(bin(ty), cmd, self.plugin_conf(list, p, at, prev))
            .container(at.id)
            .netns(at.pod)
            .ifname(at.ifname)
            .args(KUBELET_ARGS)
            .in_node(&self.node)
            .run()
    }

    fn shipped<'a>(&self, list: &'a ConfList) -> Vec<&'a Value> {
        list.plugins
            .iter()
            .filter(|p| {
                let ty = p["type"].as_str().expect("type");
                if NOT_SHIPPED.contains(&ty) {
                    eprintln!("skipping {ty:?}: the reference plugin, not part of rcni");
                    false
                } else {
                    true
                }
            })
            .collect()
    }

    /// ADD every plugin in order, chaining prevResult; returns the final result.
    fn add(&self, list: &ConfList, at: &Att) -> Value {
        let mut prev: Option<Value> = None;
        for p in self.shipped(list) {
            let r = self.call(list, p, "ADD", at, prev.as_ref());
            let result = r.expect_ok();
            assert!(
                result.is_object(),
                "ADD of {} printed no result: {r:?}",
                p["type"]
            );
            prev = Some(result);
        }
        prev.expect("at least one plugin")
    }

    fn check(&self, list: &ConfList, at: &Att, result: &Value) {
        if !has_check(&list.effective_version()) {
            return;
        }
        for p in self.shipped(list) {
            self.call(list, p, "CHECK", at, Some(result)).expect_ok();
        }
    }

    fn del(&self, list: &ConfList, at: &Att, result: &Value) {
        for p in self.shipped(list).into_iter().rev() {
            self.call(list, p, "DEL", at, Some(result)).expect_ok();
        }
    }

    /// The node's NAT rules of both backends, as text.
    fn masquerade_rules(&self) -> String {
        // Port mappings name the pod's address too (their DNAT target): not masquerade rules.
        format!("{}{}", self.node.nft_ruleset(), self.node.iptables_nat())
            .lines()
            .filter(|l| !l.contains("CNI-DN-") && !l.contains("dnat to"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// host-local's files for `network` that are reservations (IP addresses).
    fn reservations(&self, network: &str) -> Vec<String> {
        dir_entries(&self.ipam_dir().join(network))
            .into_iter()
            .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

/// The host port an example pod maps (distinct per pod).
fn host_port(id: &str) -> u16 {
    18000 + id.bytes().map(u16::from).sum::<u16>() % 1000
}

/// The addresses (without prefix) of a result's `ips`.
fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// ADD two pods, check addresses, MTU, routes and traffic, CHECK, DEL twice, state empty.
fn run_flannel_example(file: &str) {
    let list = load(&examples_dir().join(file));
    let env_file = subnet_env_for(file);
    let env = parse_subnet_env(&examples_dir().join(env_file));
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let mtu = get("FLANNEL_MTU").expect("FLANNEL_MTU");
    let v4_prefix = get("FLANNEL_SUBNET")
        .and_then(|s| s.rsplit_once('.').map(|(net, _)| format!("{net}.")))
        .expect("FLANNEL_SUBNET");
    let v6 = get("FLANNEL_IPV6_SUBNET");

    // Who masquerades: the delegate's `ipMasq` if set, else the plugin when flanneld does not.
    let flannel = list
        .plugins
        .iter()
        .find(|p| p["type"] == json!("flannel"))
        .expect("a flannel plugin");
    let masquerade = flannel["delegate"]["ipMasq"]
        .as_bool()
        .unwrap_or(get("FLANNEL_IPMASQ").as_deref() != Some("true"));

    let rn = Runner::new(env_file);
    let maps_ports = list
        .plugins
        .iter()
        .any(|p| p["capabilities"]["portMappings"] == json!(true));
    let pods = [TestNetns::new("exp"), TestNetns::new("exp")];
    let ids = ["example-pod-a", "example-pod-b"];
    let mut results = Vec::new();
    for (pod, id) in pods.iter().zip(ids) {
        let at = Att {
            pod,
            id,
            ifname: "eth0",
        };
        let result = rn.add(&list, &at);
        let ips = result_ips(&result);
        assert!(
            ips.iter().any(|ip| ip.starts_with(&v4_prefix)),
            "{file}: no address in {v4_prefix}0/24: {result}"
        );
        if v6.is_some() {
            assert!(
                ips.iter().any(|ip| ip.starts_with("fd00:10:244:1:")),
                "{file}: no IPv6 address from FLANNEL_IPV6_SUBNET: {result}"
            );
        }
        let eth0 = pod.link("eth0").expect("pod eth0");
        assert_eq!(
            eth0["mtu"].to_string(),
            mtu,
            "{file}: pod MTU must be FLANNEL_MTU"
        );
        let addrs = pod.addrs("eth0");
        for ip in &ips {
            assert!(
                addrs.iter().any(|a| a.starts_with(&format!("{ip}/"))),
                "{file}: {ip} not on eth0: {addrs:?}"
            );
        }
        // The route to the whole flannel network (plus the default route: isDefaultGateway).
        let routes = pod.routes("-4");
        let dsts: Vec<&str> = routes.iter().filter_map(|r| r["dst"].as_str()).collect();
        assert!(
            dsts.contains(&"10.244.0.0/16"),
            "{file}: no flannel route: {dsts:?}"
        );
        assert!(
            dsts.contains(&"default"),
            "{file}: no default route: {dsts:?}"
        );
        assert!(
            rn.flannel_dir().join(id).is_file(),
            "{file}: flannel must save the delegate config as <dataDir>/<containerID>"
        );
        rn.check(&list, &at, &result);
        // The pod's masquerade rule is there exactly when this network masquerades.
        let rules = rn.masquerade_rules();
        assert_eq!(
            rules.contains(&ips[0]),
            masquerade,
            "{file}: masquerade rule for {} (expected: {masquerade}):\n{rules}",
            ips[0]
        );
        if maps_ports {
            let nat = rn.node.iptables_nat();
            assert!(
                nat.contains(&format!("--dports {}", host_port(id))),
                "{file}: no host port rule for {id}:\n{nat}"
            );
        }
        results.push(result);
    }
    // The node reaches its pods through cni0; the pods reach each other.
    let gw = format!("{v4_prefix}1");
    assert!(
        rn.node.addrs("cni0").contains(&format!("{gw}/24")),
        "{file}: cni0 lacks {gw}/24"
    );
    let ip_a = result_ips(&results[0])
        .into_iter()
        .find(|i| i.starts_with(&v4_prefix))
        .expect("ip a");
    let ip_b = result_ips(&results[1])
        .into_iter()
        .find(|i| i.starts_with(&v4_prefix))
        .expect("ip b");
    assert!(rn.node.ping(&ip_a), "{file}: node cannot ping pod {ip_a}");
    assert!(
        pods[0].ping(&ip_b),
        "{file}: pod {ip_a} cannot ping pod {ip_b}"
    );
    assert!(
        pods[1].ping(&gw),
        "{file}: pod {ip_b} cannot ping its gateway {gw}"
    );
    assert_eq!(
        rn.reservations(&list.name).len(),
        if v6.is_some() { 4 } else { 2 }
    );

    for ((pod, id), result) in pods.iter().zip(ids).zip(&results) {
        let at = Att {
            pod,
            id,
            ifname: "eth0",
        };
        rn.del(&list, &at, result);
        assert!(pod.link("eth0").is_none(), "{file}: eth0 left after DEL");
        assert!(
            !rn.flannel_dir().join(id).exists(),
            "{file}: saved config left after DEL"
        );
        // A runtime may repeat DEL: it must succeed.
        rn.del(&list, &at, result);
    }
    assert_eq!(
        rn.reservations(&list.name),
        Vec::<String>::new(),
        "{file}: IPs left reserved"
    );
    let rules = rn.masquerade_rules();
    for result in &results {
        for ip in result_ips(result) {
            assert!(!rules.contains(&ip), "{file}: rule left for {ip}:\n{rules}");
        }
    }
    let nat = rn.node.iptables_nat();
    assert!(
        !nat.contains("CNI-DN-"),
        "{file}: port mappings left:\n{nat}"
    );
}

#[test]
fn kube_flannel_conflist_with_portmap() {
    run_flannel_example("10-flannel.conflist");
}

#[test]
fn rcni_conflist() {
    run_flannel_example("10-flannel-rcni.conflist");
}

#[test]
fn single_conf_with_ipmasq() {
    run_flannel_example("10-flannel.conf");
}

#[test]
fn host_gw_conflist() {
    run_flannel_example("10-flannel-host-gw.conflist");
}

#[test]
fn dual_stack_conflist() {
    run_flannel_example("10-flannel-dualstack.conflist");
}

#[test]
fn plain_bridge_conflist() {
    let list = load(&examples_dir().join("20-bridge.conflist"));
    let rn = Runner::new("subnet.env.vxlan");
    let pod = TestNetns::new("exp");
    let at = Att {
        pod: &pod,
        id: "bridge-pod",
        ifname: "eth0",
    };
    let result = rn.add(&list, &at);
    let ips = result_ips(&result);
    assert!(ips.iter().any(|ip| ip.starts_with("10.88.")), "{result}");
    assert!(
        rn.node.link("rcni0").is_some(),
        "bridge rcni0 missing in the node"
    );
    assert!(rn.node.ping(&ips[0]), "node cannot ping the pod");
    rn.check(&list, &at, &result);
    assert_eq!(rn.reservations("rcni-bridge").len(), 1);
    rn.del(&list, &at, &result);
    assert!(pod.link("eth0").is_none());
    assert_eq!(rn.reservations("rcni-bridge"), Vec::<String>::new());
}

#[test]
fn loopback_conf() {
    let list = load(&examples_dir().join("99-loopback.conf"));
    let rn = Runner::new("subnet.env.vxlan");
    let pod = TestNetns::new("exp");
    pod.exec_ok("ip", &["link", "set", "lo", "down"]);
    let at = Att {
        pod: &pod,
        id: "lo-pod",
        ifname: "lo",
    };
    let result = rn.add(&list, &at);
    assert!(
        result_ips(&result).contains(&"127.0.0.1".to_owned()),
        "{result}"
    );
    let lo = pod.link("lo").expect("lo");
    assert!(
        lo["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "lo not up: {lo}"
    );
    rn.del(&list, &at, &result);
}

/// No root needed: every example parses and has the shape its extension promises, the
/// subnet.env samples have the keys the flannel plugin requires, and the DaemonSet's
/// ConfigMap carries exactly `10-flannel.conflist`.
#[test]
fn every_example_parses() {
    let dir = examples_dir();
    let mut seen = 0;
    for f in dir_entries(&dir) {
        let path = dir.join(&f);
        if f.ends_with(".conflist") || f.ends_with(".conf") {
            let list = load(&path);
            assert!(!list.name.is_empty(), "{f}: name");
            assert!(!list.plugins.is_empty(), "{f}");
            assert_eq!(
                list.plugin_types().len(),
                list.plugins.len(),
                "{f}: each plugin needs a type"
            );
            if f.ends_with(".conf") {
                assert!(
                    read_json(&path).get("plugins").is_none(),
                    "{f}: a .conf is a single plugin"
                );
            }
            seen += 1;
        } else if f.starts_with("subnet.env.") {
            let keys: Vec<String> = parse_subnet_env(&path)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            for k in [
                "FLANNEL_NETWORK",
                "FLANNEL_SUBNET",
                "FLANNEL_MTU",
                "FLANNEL_IPMASQ",
            ] {
                assert!(keys.iter().any(|x| x == k), "{f}: {k} missing");
            }
        }
    }
    assert!(seen >= 7, "expected the 7 example configs, saw {seen}");

    let yml = fs::read_to_string(dir.join("kube-flannel-rcni.yml")).expect("kube-flannel-rcni.yml");
    let cni_conf: Value = serde_json::from_str(&configmap_block(&yml, "cni-conf.json"))
        .expect("cni-conf.json is JSON");
    assert_eq!(cni_conf, read_json(&dir.join("10-flannel.conflist")));
    let net_conf: Value = serde_json::from_str(&configmap_block(&yml, "net-conf.json"))
        .expect("net-conf.json is JSON");
    assert_eq!(net_conf["Network"], "10.244.0.0/16");
    assert!(yml.contains("image: rcni:latest") && yml.contains("install-cni"));
}

/// The text of a `key: |` block scalar in a YAML file (enough YAML for one ConfigMap).
fn configmap_block(yml: &str, key: &str) -> String {
    let mut lines = yml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().unwrap_or_else(|| panic!("{key} not found"));
    let key_indent = head.len() - head.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}
