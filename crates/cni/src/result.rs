//! ADD results (SPEC §5 "Success"), in one canonical shape, for every spec version.
//!
//! Plugins build a [`CniResult`] (shaped like a 1.1.0 result). The dispatcher renders it in the
//! configuration's `cniVersion` with [`CniResult::to_json`], converting exactly as libcni does
//! (`pkg/types/{020,040,100}`). A `prevResult` of any version is read with
//! [`CniResult::from_json`].

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::CniError;

mod parse;
mod render;

pub use parse::RawRoute;

/// Canonical (1.1.0-shaped) result; converted to any version on output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniResult {
    /// Interfaces created or touched (`interfaces`, 0.3.0+). IPAM plugins leave it empty.
    pub interfaces: Vec<Interface>,
    /// Assigned addresses (`ips`; `ip4`/`ip6` in 0.1.0/0.2.0).
    pub ips: Vec<IpConfig>,
    /// Routes (`routes`).
    pub routes: Vec<Route>,
    /// DNS settings (`dns`).
    pub dns: Dns,
}

/// An entry of `interfaces` (SPEC §5). `mtu`, `socketPath` and `pciID` exist from 1.1.0 on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, `"aa:bb:cc:dd:ee:ff"`.
    pub mac: Option<String>,
    /// MTU (1.1.0). Go omits 0, so `Some(0)` renders like `None`.
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; `None` for host interfaces.
    pub sandbox: Option<String>,
    /// vhost-user socket path (1.1.0).
    pub socket_path: Option<String>,
    /// PCI ID of a device (1.1.0).
    pub pci_id: Option<String>,
}

/// An entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces` of the interface holding the address.
    pub interface: Option<usize>,
    /// Address with its prefix length; host bits are kept (`"10.1.0.5/24"`).
    pub address: IpNetwork,
    /// Default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
}

impl IpConfig {
    /// An address without interface index or gateway.
    pub fn new(address: IpNetwork) -> Self {
        IpConfig {
            interface: None,
            address,
            gateway: None,
        }
    }

    /// `"4"` or `"6"`, the `ips[].version` of 0.3.x/0.4.0 results.
    pub fn family(&self) -> &'static str {
        if self.address.is_ipv4() { "4" } else { "6" }
    }
}

/// An entry of `routes`. `mtu`, `advmss`, `priority`, `table` and `scope` exist from 1.1.0 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination subnet.
    pub dst: IpNetwork,
    /// Next hop; `None` means the plugin's default gateway.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0). Go omits 0.
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0). Go omits 0.
    pub advmss: Option<u32>,
    /// Route priority/metric (1.1.0). Go omits 0.
    pub priority: Option<u32>,
    /// Routing table (1.1.0). 0 is kept (Go uses a pointer).
    pub table: Option<u32>,
    /// Route scope (1.1.0), e.g. 0 universe, 253 link. 0 is kept.
    pub scope: Option<u8>,
}

impl Route {
    /// A route with only a destination and an optional gateway.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings (`dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers, in order of priority.
    pub nameservers: Vec<String>,
    /// The local domain.
    pub domain: Option<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// resolver options.
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set (Go `types.DNS.IsEmpty`: an empty domain counts as unset).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().unwrap_or("").is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parse a result (or prevResult) of any version; `fallback_version` used when it has no
    /// `cniVersion` (Go `version.ParsePrevResult` fills it from the config).
    ///
    /// Errors: code 1 for a version we do not know, code 6 for a malformed result.
    pub fn from_json(v: &serde_json::Value, fallback_version: &str) -> Result<Self, CniError> {
        parse::from_json(v, fallback_version)
    }

    /// Render in `version` exactly as libcni would. Always includes `"cniVersion"`.
    ///
    /// * 0.1.0/0.2.0: `ip4`/`ip6` hold the **first** address of each family; routes go to the
    ///   entry of their destination's family (dropped when that family has no address);
    ///   interfaces are dropped. With no address at all, libcni fails with
    ///   `cannot convert: no valid IP addresses` (code 999 here, as a Go plugin reports it).
    /// * 0.3.0/0.3.1/0.4.0: `ips[].version` is added.
    /// * 1.0.0: no `ips[].version`.
    /// * 1.1.0: adds interface `mtu`/`socketPath`/`pciID` and route
    ///   `mtu`/`advmss`/`priority`/`table`/`scope`. Older versions drop them.
    ///
    /// Empty `interfaces`/`ips`/`routes` are omitted (Go `omitempty`). `dns` is omitted when
    /// empty for 1.x (100/types.go `MarshalJSON`) and printed as `{}` for 0.x, as libcni does.
    pub fn to_json(&self, version: &str) -> Result<serde_json::Value, CniError> {
        render::to_json(self, version)
    }
}

#[cfg(test)]
mod tests;
