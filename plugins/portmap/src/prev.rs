//! The previous plugin's result: the pod's addresses, and passing it on.

use cni::CniResult;
use cni::skel::{AddOutput, CmdArgs};
use ipnetwork::IpNetwork;

/// The first address of each family that belongs to the pod: an `ips` entry whose
/// `interface` is the pod's (`CNI_IFNAME`, in a sandbox), or that names no interface
/// (as the reference; an index out of range also counts). At most one per family.
pub fn container_addrs(prev: &CniResult, ifname: &str) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for ip in &prev.ips {
        if out.iter().any(|a| a.is_ipv6() == ip.address.is_ipv6()) {
            continue;
        }
        let foreign = ip
            .interface
            .and_then(|i| prev.interfaces.get(i))
            .is_some_and(|i| i.name != ifname || i.sandbox.as_deref().unwrap_or("").is_empty());
        if !foreign {
            out.push(ip.address);
        }
    }
    out
}

/// The previous result as our result: untouched when it already has the config's version
/// (keys we do not know survive), else converted to it (the reference's `PrintResult`).
pub fn passthrough(args: &CmdArgs, prev: CniResult) -> AddOutput {
    let version = args.version.as_str();
    match args.conf.prev_result.clone() {
        Some(serde_json::Value::Object(mut raw)) => {
            let same = raw
                .get("cniVersion")
                .and_then(|v| v.as_str())
                .is_none_or(|v| v == version);
            if same {
                raw.insert("cniVersion".into(), version.into());
                AddOutput::Raw(serde_json::Value::Object(raw))
            } else {
                AddOutput::Result(prev)
            }
        }
        _ => AddOutput::Result(prev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(v: serde_json::Value) -> CniResult {
        CniResult::from_json(&v, "1.0.0").unwrap()
    }

    #[test]
    fn picks_the_pod_interface_addresses() {
        let r = result(json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/p"}, {"name": "net1", "sandbox": "/run/netns/p"}],
            "ips": [
                {"interface": 0, "address": "10.244.1.1/24"},
                {"interface": 3, "address": "10.9.0.2/24"},
                {"interface": 2, "address": "10.244.1.5/24"},
                {"interface": 2, "address": "10.244.1.6/24"},
                {"interface": 2, "address": "fd00::5/64"}]}));
        let a = container_addrs(&r, "eth0");
        assert_eq!(
            a,
            vec![
                "10.244.1.5/24".parse::<IpNetwork>().unwrap(),
                "fd00::5/64".parse().unwrap()
            ]
        );
        // No interface index, or one out of range: the address counts (the reference's rule).
        let r = result(
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/16"}, {"interface": 9, "address": "fd00::2/64"}]}),
        );
        assert_eq!(container_addrs(&r, "eth0").len(), 2);
        // A host-side interface of the right name is not the pod's.
        let r = result(
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"interface": 0, "address": "10.0.0.2/16"}]}),
        );
        assert!(container_addrs(&r, "eth0").is_empty());
    }
}
