//! Synchronous rtnetlink for the rcni plugins.
//!
//! Design (after netavark's `netlink.rs`): one blocking `NETLINK_ROUTE` socket per network
//! namespace, a sequence-checked request/ACK/dump loop ([`socket`]) and thin typed operations
//! ([`link`], [`addr`], [`route`], [`bridge_port`]). [`conntrack`] speaks ctnetlink
//! (`NETLINK_NETFILTER`) on a socket of its own. No async runtime: a CNI plugin does a handful
//! of requests per exec, and blocking IO keeps the binary small.
//!
//! The public API uses only std, `ipnetwork` and this crate's own types; the
//! `netlink-packet-*` types stay inside.
//!
//! Namespaces: a netlink socket belongs to the netns of the thread that created it, for its
//! whole life. [`Netlink::new`] uses the calling thread's netns; [`Netlink::in_netns`] creates the
//! socket on a short-lived thread inside the target netns ([`netns::run_in`]) and hands it back,
//! so every container-side request is then sent from the host thread.
//!
//! Kernels: everything works from Linux 3.10 on; newer features are used when present, with
//! the fallbacks listed in [`compat`].

pub mod addr;
pub mod bridge_port;
pub mod compat;
pub mod conntrack;
pub mod error;
pub mod link;
pub mod netns;
pub mod nfnetlink;
pub mod route;
pub mod socket;
pub mod sysctl;
mod util;

pub use addr::{Addr, Ensured, Settled};
pub use error::{Error, Result};
pub use link::{Link, Waited};
pub use netns::Netns;
pub use nfnetlink::NfNetlink;
pub use route::{Family, RouteEntry};
pub use socket::Netlink;
pub use util::{format_mac, parse_mac, random_veth_name};
