//! Reading a result of any spec version into the canonical [`CniResult`].
//!
//! Like Go's typed unmarshalling: unknown keys are ignored, `null` reads as "absent", addresses
//! must be CIDRs (`net.ParseCIDR`) and gateways plain IPs (`net.ParseIP`, `""` = none).

use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::{CniResult, Dns, Interface, IpConfig, Route};
use crate::config::nullable;
use crate::error::{CniError, code};
use crate::version::DEFAULT_CONFIG_VERSION;

#[derive(Deserialize, Default)]
struct WireDns {
    #[serde(default, deserialize_with = "nullable")]
    nameservers: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    domain: String,
    #[serde(default, deserialize_with = "nullable")]
    search: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
}

/// A `routes` entry as written (Go's `types.Route` JSON shape), before its addresses are
/// parsed: the form shared by results and configs (e.g. host-local's `ipam.routes`).
/// Deserialize it inside a larger config to keep serde's error positions, then
/// [`RawRoute::parse`] it; or use [`Route::from_json`] for a lone value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawRoute {
    /// Destination CIDR (`null`/absent reads as `""`, which is invalid).
    #[serde(default, deserialize_with = "nullable")]
    pub dst: String,
    /// Gateway IP; `""`, `null` and absent mean none.
    #[serde(default, deserialize_with = "nullable")]
    pub gw: String,
    /// Route MTU (0 is "not set").
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Advertised MSS (0 is "not set").
    #[serde(default)]
    pub advmss: Option<u32>,
    /// Priority/metric (0 is "not set").
    #[serde(default)]
    pub priority: Option<u32>,
    /// Routing table (0 is kept).
    #[serde(default)]
    pub table: Option<u32>,
    /// Scope (0 is kept).
    #[serde(default)]
    pub scope: Option<u8>,
}

impl RawRoute {
    /// Parses the addresses as Go does: `dst` with `net.ParseCIDR` (host bits kept, a bare
    /// IP rejected), `gw` with `net.ParseIP`; 0 `mtu`/`advmss`/`priority` are dropped.
    ///
    /// Errors have code 6 (decoding failure) and the bare reason as message
    /// (`invalid CIDR address: <dst>`, `invalid IP address: <gw>`), so callers add their own
    /// context (a result says `failed to parse result: ...`).
    pub fn parse(&self) -> Result<Route, CniError> {
        self.parse_reason()
            .map_err(|reason| CniError::new(code::DECODING_FAILURE, reason))
    }

    fn parse_reason(&self) -> Result<Route, String> {
        Ok(Route {
            dst: cidr(&self.dst)?,
            gw: opt_ip(&self.gw)?,
            mtu: nonzero(self.mtu),
            advmss: nonzero(self.advmss),
            priority: nonzero(self.priority),
            table: self.table,
            scope: self.scope,
        })
    }
}

impl Route {
    /// Parses one `routes` entry ([`RawRoute`] rules). Errors have code 6 and the bare
    /// reason as message: serde's for a wrong shape, else as [`RawRoute::parse`].
    pub fn from_json(v: &serde_json::Value) -> Result<Route, CniError> {
        RawRoute::deserialize(v)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, e.to_string()))?
            .parse()
    }
}

#[derive(Deserialize, Default)]
struct WireInterface {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    mac: String,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    sandbox: String,
    #[serde(default, rename = "socketPath", deserialize_with = "nullable")]
    socket_path: String,
    #[serde(default, rename = "pciID", deserialize_with = "nullable")]
    pci_id: String,
}

#[derive(Deserialize, Default)]
struct WireIp {
    #[serde(default)]
    interface: Option<usize>,
    #[serde(default, deserialize_with = "nullable")]
    address: String,
    #[serde(default, deserialize_with = "nullable")]
    gateway: String,
}

/// 0.3.0 to 1.1.0: the rich layout (`ips[].version`, if any, is recomputed on output).
#[derive(Deserialize, Default)]
struct WireRich {
    #[serde(default, deserialize_with = "nullable")]
    interfaces: Vec<WireInterface>,
    #[serde(default, deserialize_with = "nullable")]
    ips: Vec<WireIp>,
    #[serde(default, deserialize_with = "nullable")]
    routes: Vec<RawRoute>,
    #[serde(default, deserialize_with = "nullable")]
    dns: WireDns,
}

#[derive(Deserialize, Default)]
struct WireLegacyIp {
    #[serde(default, deserialize_with = "nullable")]
    ip: String,
    #[serde(default, deserialize_with = "nullable")]
    gateway: String,
    #[serde(default, deserialize_with = "nullable")]
    routes: Vec<RawRoute>,
}

/// 0.1.0/0.2.0: `ip4`, `ip6`, `dns`.
#[derive(Deserialize, Default)]
struct WireLegacy {
    #[serde(default)]
    ip4: Option<WireLegacyIp>,
    #[serde(default)]
    ip6: Option<WireLegacyIp>,
    #[serde(default, deserialize_with = "nullable")]
    dns: WireDns,
}

fn decode_err(e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::DECODING_FAILURE,
        format!("failed to parse result: {e}"),
    )
}

/// A CIDR with host bits kept; a bare IP is rejected as Go's `net.ParseCIDR` does.
fn cidr(s: &str) -> Result<IpNetwork, String> {
    if !s.contains('/') {
        return Err(format!("invalid CIDR address: {s}"));
    }
    IpNetwork::from_str(s).map_err(|_| format!("invalid CIDR address: {s}"))
}

/// `""` is no IP (Go `net.IP.UnmarshalText`).
fn opt_ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    IpAddr::from_str(s)
        .map(Some)
        .map_err(|_| format!("invalid IP address: {s}"))
}

/// [`cidr`] with a result's error.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNetwork, CniError> {
    cidr(s).map_err(decode_err)
}

/// [`opt_ip`] with a result's error.
fn parse_opt_ip(s: &str) -> Result<Option<IpAddr>, CniError> {
    opt_ip(s).map_err(decode_err)
}

fn opt_string(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Go's `int` fields with `omitempty`: 0 is "not set".
fn nonzero(v: Option<u32>) -> Option<u32> {
    v.filter(|&x| x != 0)
}

fn route(w: RawRoute) -> Result<Route, CniError> {
    w.parse_reason().map_err(decode_err)
}

fn dns(w: WireDns) -> Dns {
    Dns {
        nameservers: w.nameservers,
        domain: opt_string(w.domain),
        search: w.search,
        options: w.options,
    }
}

pub(super) fn from_json(v: &serde_json::Value, fallback: &str) -> Result<CniResult, CniError> {
    let version = match v.get("cniVersion") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(serde_json::Value::String(_)) | Some(serde_json::Value::Null) | None => fallback,
        Some(other) => return Err(decode_err(format!("invalid cniVersion {other}"))),
    };
    let version = if version.is_empty() {
        DEFAULT_CONFIG_VERSION
    } else {
        version
    };
    match version {
        "0.1.0" | "0.2.0" => legacy(v),
        "0.3.0" | "0.3.1" | "0.4.0" | "1.0.0" | "1.1.0" => rich(v),
        other => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported CNI result version {other:?}"),
        )),
    }
}

fn rich(v: &serde_json::Value) -> Result<CniResult, CniError> {
    let w = WireRich::deserialize(v).map_err(decode_err)?;
    let interfaces = w
        .interfaces
        .into_iter()
        .map(|i| Interface {
            name: i.name,
            mac: opt_string(i.mac),
            mtu: nonzero(i.mtu),
            sandbox: opt_string(i.sandbox),
            socket_path: opt_string(i.socket_path),
            pci_id: opt_string(i.pci_id),
        })
        .collect();
    let ips = w
        .ips
        .into_iter()
        .map(|ip| {
            Ok(IpConfig {
                interface: ip.interface,
                address: parse_cidr(&ip.address)?,
                gateway: parse_opt_ip(&ip.gateway)?,
            })
        })
        .collect::<Result<_, CniError>>()?;
    let routes = w.routes.into_iter().map(route).collect::<Result<_, _>>()?;
    Ok(CniResult {
        interfaces,
        ips,
        routes,
        dns: dns(w.dns),
    })
}

/// Up-conversion as Go `types040.convertFrom02x`: ip4 (and its routes) first, then ip6.
fn legacy(v: &serde_json::Value) -> Result<CniResult, CniError> {
    let w = WireLegacy::deserialize(v).map_err(decode_err)?;
    let mut out = CniResult {
        dns: dns(w.dns),
        ..CniResult::default()
    };
    for fam in [w.ip4, w.ip6].into_iter().flatten() {
        out.ips.push(IpConfig {
            interface: None,
            address: parse_cidr(&fam.ip)?,
            gateway: parse_opt_ip(&fam.gateway)?,
        });
        for r in fam.routes {
            out.routes.push(route(r)?);
        }
    }
    Ok(out)
}
