//! The CNI protocol for rcni plugins.
//!
//! This crate holds everything a CNI plugin shares with the container runtime, as described by the
//! CNI specification (SPEC.md, versions 0.1.0 to 1.1.0) and implemented by the Go reference
//! library (`github.com/containernetworking/cni`):
//!
//! * [`version`]: spec versions and their ordering;
//! * [`error`]: the CNI error object and the spec's error codes;
//! * [`result`]: the ADD result in its canonical (1.1.0) shape, parsed from and rendered to every
//!   spec version exactly as libcni converts them;
//! * [`config`]: the network configuration keys shared by every plugin, conflists and GC input;
//! * [`args`]: `CNI_ARGS` parsing with Go `types.LoadArgs` semantics;
//! * [`skel`]: the dispatcher that validates the environment and calls a [`skel::Plugin`];
//! * [`delegate`]: running another plugin found on `CNI_PATH` (chaining and IPAM);
//! * [`init_logging`]: a tiny stderr logger (stdout belongs to the protocol);
//! * [`fault`]: panic injection points, compiled in only for tests (`fault-injection`).
//!
//! # Where we differ from the Go reference, on purpose
//!
//! * `VERSION` prints our own [`version::CURRENT`] as `cniVersion`, like Go's
//!   `PluginInfo.Encode`, not the version given on stdin as the spec text says: runtimes only
//!   read `supportedVersions`, and matching Go keeps tools that compare outputs happy.
//! * The `CNI_NETNS`-is-our-own-netns check (code 8) runs **before** the plugin is called;
//!   Go runs it after ADD/DEL already changed things.
//! * Results rendered below 1.1.0 drop the 1.1-only route fields (`mtu`, `advmss`, `priority`,
//!   `table`, `scope`); libcni copies them into 0.3.x-1.0.0 routes.
//! * `CNI_ARGS` errors (`ARGS: invalid pair`, `ARGS: unknown args`) are code 4, not Go's
//!   untyped 999, and are raised only when the plugin calls [`args::CniArgs::check_known`].
//! * A delegate that fails without output is code 999 (libcni leaves the code 0); a delegate
//!   that cannot be found is code 7; one that cannot be executed is code 5. `text file busy` is
//!   retried 5 times with a 50 ms doubling backoff instead of 1 s sleeps.
//! * Errors and results are printed with Go's 4-space indentation but in spec key order
//!   (Go sorts 1.x result keys alphabetically); parsers do not care about either.

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod args;
pub mod config;
pub mod delegate;
pub mod error;
pub mod fault;
mod logging;
pub mod result;
pub mod skel;
pub mod version;

pub use error::{CniError, code};
pub use logging::init_logging;
pub use result::*;
