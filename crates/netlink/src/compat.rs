//! Kernel features used only when the running kernel has them, and the test switch that makes
//! every plugin behave as on a kernel without them.
//!
//! | feature | since | without it |
//! |---|---|---|
//! | `NETLINK_GET_STRICT_CHK` | 4.20 | the kernel ignores the filters in dump requests and dumps everything; every dump is filtered here too ([`crate::Netlink::addrs`]) |
//! | `NETLINK_EXT_ACK` | 4.12 | errors carry the errno only, not the kernel's text |
//! | `NETLINK_CAP_ACK` | 4.3 | error ACKs echo the whole request; the parser skips it |
//! | `IFLA_BRPORT_ISOLATED` | 4.18 | the kernel ignores it: `portIsolation` is read back and refused ([`crate::Netlink::set_bridge_port`]) |
//! | `IFLA_BR_VLAN_FILTERING` | 4.3 | the kernel ignores it when creating a bridge: the caller reads [`crate::Link::vlan_filtering`] back |
//! | `/proc/thread-self` | 3.17 | not used: [`crate::Netns::current`] names `/proc/self/task/<tid>` |
//!
//! [`FALLBACKS_ENV`] set to `1` forces every fallback on any kernel, so that tests run them
//! through the real binaries: the socket options are not asked for, and the attributes an old
//! kernel ignores are not sent (what such a kernel does with them). The `cni` crate honours the
//! same variable for its own fallback.

use std::sync::OnceLock;

/// The test switch: `RCNI_TEST_KERNEL_FALLBACKS=1` makes this process (and the plugins it
/// runs, which inherit the environment) take every old-kernel path.
pub const FALLBACKS_ENV: &str = "RCNI_TEST_KERNEL_FALLBACKS";

/// Whether [`FALLBACKS_ENV`] forces the old-kernel paths (read once per process).
pub fn fallbacks_forced() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os(FALLBACKS_ENV).is_some_and(|v| v == "1"))
}
