//! What flanneld and the flannel CNI plugin keep on a node, shared by the `flannel` plugin and
//! `rcni-doctor` (which must read it exactly as the plugin does):
//!
//! * [`subnet_env`]: flanneld's lease file, `/run/flannel/subnet.env`;
//! * [`saved_configs`]: the delegate configs the plugin saves per container in its `dataDir`,
//!   `/var/lib/cni/flannel/<containerID>`, so that DEL undoes what ADD did.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod saved_configs;
pub mod subnet_env;

pub use subnet_env::{SubnetEnv, SubnetEnvError};

/// Where flanneld writes its lease (`flannel-cni: flannel.go defaultSubnetFile`).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Where the rendered delegate configs are kept between ADD and DEL (`defaultDataDir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";
