//! `flannel`: the CNI meta-plugin of flannel networks.
//!
//! It reads its own network config, combines it with the node's lease that flanneld writes to
//! `subnet.env`, and delegates the real work to another plugin (`bridge` by default, which runs
//! `host-local` for addresses). The rendered delegate config is saved per container so that DEL
//! undoes exactly what ADD did. Drop-in for `flannel-io/cni-plugin`: same config keys, same
//! saved-file layout (`<dataDir>/<containerID>`), same messages where operators rely on them.

mod config;
mod delegate;
mod error;
mod plugin;
mod store;

pub use plugin::Flannel;
