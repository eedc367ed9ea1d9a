//! A flannel node: a "node" netns, flanneld's `subnet.env` and the state dirs (flannel's
//! saved configs, host-local's store) in a temp dir, and a bridge name unique to the test.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{TestNetns, dir_entries, temp_dir, unique};

/// One node of a flannel network `network` whose lease is `subnet_env`.
pub struct FlannelNode {
    pub ns: TestNetns,
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub network: String,
}

impl FlannelNode {
    /// A node netns named after `prefix`, with `subnet_env` written.
    pub fn new(prefix: &str, network: &str, subnet_env: &str) -> Self {
        let dir = temp_dir();
        std::fs::write(dir.path().join("subnet.env"), subnet_env)
            .unwrap_or_else(|e| panic!("write subnet.env: {e}"));
        FlannelNode {
            ns: TestNetns::new(prefix),
            dir,
            bridge: unique(&format!("{prefix}b")),
            network: network.to_owned(),
        }
    }

    pub fn subnet_env(&self) -> PathBuf {
        self.dir.path().join("subnet.env")
    }

    /// host-local's `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// flannel's `dataDir` (saved delegate configs).
    pub fn flannel_dir(&self) -> PathBuf {
        self.dir.path().join("flannel")
    }

    /// A flannel config (spec 1.0.0) pointed at this node's files; its delegate uses this
    /// node's bridge as the default gateway, plus the keys of `delegate`.
    pub fn flannel_conf(&self, delegate: Value) -> Value {
        let mut d = json!({"isDefaultGateway": true, "bridge": self.bridge});
        if let (Some(d), Some(extra)) = (d.as_object_mut(), delegate.as_object()) {
            d.extend(extra.clone());
        }
        json!({
            "cniVersion": "1.0.0",
            "name": self.network,
            "type": "flannel",
            "subnetFile": self.subnet_env(),
            "dataDir": self.flannel_dir(),
            "ipam": {"dataDir": self.ipam_dir()},
            "delegate": d,
        })
    }

    /// host-local's reservation files of the network (named by an IP address).
    pub fn reservations(&self) -> Vec<String> {
        dir_entries(&self.ipam_dir().join(&self.network))
            .into_iter()
            .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Host-side veths in the node.
    pub fn veths(&self) -> Vec<String> {
        self.ns
            .link_names()
            .into_iter()
            .filter(|n| n.starts_with("veth"))
            .collect()
    }
}
