//! Reading a result of any spec version into the canonical [`CniResult`].
//!
//! Like Go's typed unmarshalling: unknown keys are ignored, `null` reads as "absent", addresses
//! must be CIDRs (`net.ParseCIDR`) and gateways plain IPs (`net.ParseIP`, `""` = none).

use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer};

use super::{CniResult, Dns, Interface, IpConfig, Route};
use crate::error::{CniError, code};
use crate::version::DEFAULT_CONFIG_VERSION;

/// `null` deserializes as the default value, as Go leaves the zero value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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

#[derive(Deserialize, Default)]
struct WireRoute {
    #[serde(default, deserialize_with = "nullable")]
    dst: String,
    #[serde(default, deserialize_with = "nullable")]
    gw: String,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
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
    routes: Vec<WireRoute>,
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
    routes: Vec<WireRoute>,
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
pub(crate) fn parse_cidr(s: &str) -> Result<IpNetwork, CniError> {
    if !s.contains('/') {
        return Err(decode_err(format!("invalid CIDR address: {s}")));
    }
    IpNetwork::from_str(s).map_err(|_| decode_err(format!("invalid CIDR address: {s}")))
}

/// `""` is no IP (Go `net.IP.UnmarshalText`).
fn parse_opt_ip(s: &str) -> Result<Option<IpAddr>, CniError> {
    if s.is_empty() {
        return Ok(None);
    }
    IpAddr::from_str(s)
        .map(Some)
        .map_err(|_| decode_err(format!("invalid IP address: {s}")))
}

fn opt_string(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Go's `int` fields with `omitempty`: 0 is "not set".
fn nonzero(v: Option<u32>) -> Option<u32> {
    v.filter(|&x| x != 0)
}

fn route(w: WireRoute) -> Result<Route, CniError> {
    Ok(Route {
        dst: parse_cidr(&w.dst)?,
        gw: parse_opt_ip(&w.gw)?,
        mtu: nonzero(w.mtu),
        advmss: nonzero(w.advmss),
        priority: nonzero(w.priority),
        table: w.table,
        scope: w.scope,
    })
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
