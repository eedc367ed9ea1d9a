//! The `host-local` configuration, merged as the reference
//! `LoadIPAMConfig` does.
//!
//! Range sets come from, in order: the legacy top-level
//! `ipam.subnet/rangeStart/rangeEnd/gateway` (prepended), then
//! `runtimeConfig.ipRanges` (prepended before that), then `ipam.ranges`.
//! Requested addresses come from `CNI_ARGS` `IP=`, `args.cni.ips` and
//! `runtimeConfig.ips`, all merged.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::args::CniArgs;
use cni::{CniError, code};
use ipam_store::ip;
use ipam_store::{ConfigError, RangeSet, RawRange};
use serde::Deserialize;

use crate::error::PluginError;

/// `CNI_ARGS` keys host-local understands (Go's `IPAMEnvArgs` fields).
const KNOWN_ARGS: &[&str] = &["IP", "IgnoreUnknown"];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Network name (the store directory under `dataDir`).
    pub name: String,
    /// Range sets; one address is taken from each.
    pub ranges: Vec<RangeSet>,
    /// `ipam.routes`, returned as they are.
    pub routes: Vec<cni::Route>,
    /// `ipam.dataDir`.
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`.
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses, in order, without duplicates.
    pub requested: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNet {
    #[serde(default)]
    name: String,
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    ipam: Option<WireIpam>,
    #[serde(default)]
    runtime_config: Option<WireRuntime>,
    #[serde(default)]
    args: Option<WireArgs>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIpam {
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    routes: Option<Vec<cni::RawRoute>>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRuntime {
    #[serde(default)]
    ip_ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct WireArgs {
    #[serde(default)]
    cni: Option<WireCniArgs>,
}

#[derive(Debug, Deserialize)]
struct WireCniArgs {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// An `ipam.routes` entry, parsed by the cni crate (Go's `types.Route` rules); its errors
/// are config errors here, with the same message. The gateway is canonical (an IPv4-mapped
/// IPv6 gateway is IPv4) as every address host-local reads.
fn parse_route(raw: &cni::RawRoute) -> Result<cni::Route, ConfigError> {
    let mut route = raw.parse().map_err(|e| ConfigError(e.msg))?;
    route.gw = route.gw.map(ip::canonical);
    Ok(route)
}

/// `IP=` from `CNI_ARGS`, with Go's `LoadArgs` checks: value errors first,
/// then unknown keys (unless `IgnoreUnknown`).
fn env_requested(args: &CniArgs) -> Result<Option<IpAddr>, PluginError> {
    let requested = match args.get("IP") {
        None | Some("") => None,
        Some(v) => Some(ip::parse_ip_maybe_prefix(v).map_err(|e| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("ARGS: error parsing value of pair \"IP={v}\": {e}"),
            )
        })?),
    };
    args.check_known(KNOWN_ARGS)?;
    Ok(requested)
}

fn parse_sets(
    sets: &[Vec<RawRange>],
) -> Result<Vec<Vec<ipam_store::range::RangeConf>>, ConfigError> {
    sets.iter()
        .map(|set| set.iter().map(RawRange::parse).collect())
        .collect()
}

/// Loads and validates the config from the plugin's stdin and `CNI_ARGS`.
pub fn load(stdin: &[u8], args: &CniArgs) -> Result<IpamConfig, PluginError> {
    let net: WireNet = serde_json::from_slice(stdin)
        .map_err(|e| ConfigError(format!("error parsing ipam configuration: {e}")))?;
    let ipam = net
        .ipam
        .ok_or_else(|| ConfigError::new("IPAM config missing 'ipam' key"))?;
    let runtime = net.runtime_config.unwrap_or_default();

    // Requested addresses: CNI_ARGS, then args.cni.ips, then runtimeConfig.ips.
    let mut requested: Vec<IpAddr> = env_requested(args)?.into_iter().collect();
    let from_args = net.args.and_then(|a| a.cni).and_then(|c| c.ips);
    for text in from_args
        .iter()
        .flatten()
        .chain(runtime.ips.iter().flatten())
    {
        requested.push(ip::parse_ip_maybe_prefix(text)?);
    }
    let mut seen = std::collections::HashSet::new();
    requested.retain(|ip| seen.insert(*ip));

    // Range sets: runtimeConfig.ipRanges, legacy single range, ipam.ranges.
    let mut raw_sets = Vec::new();
    raw_sets.extend(runtime.ip_ranges.unwrap_or_default());
    if ipam.legacy.subnet.is_some() {
        raw_sets.push(vec![ipam.legacy.clone()]);
    }
    raw_sets.extend(ipam.ranges.unwrap_or_default());
    let conf_sets = parse_sets(&raw_sets)?;
    if conf_sets.is_empty() {
        return Err(ConfigError::new("no IP ranges specified").into());
    }
    let mut ranges = Vec::with_capacity(conf_sets.len());
    for (i, set) in conf_sets.iter().enumerate() {
        ranges.push(
            RangeSet::canonicalize(set)
                .map_err(|e| ConfigError(format!("invalid range set {i}: {e}")))?,
        );
    }

    // CNI 0.2.0 and older results hold one address per family.
    let v4 = ranges.iter().filter(|s| s.is_ipv4()).count();
    if v4 > 1 || ranges.len() - v4 > 1 {
        let modern = cni::version::SpecVersion::parse(&net.cni_version).is_ok_and(|v| {
            v >= cni::version::SpecVersion {
                major: 0,
                minor: 3,
                patch: 0,
            }
        });
        if !modern {
            return Err(ConfigError(format!(
                "CNI version {} does not support more than 1 address per family",
                net.cni_version
            ))
            .into());
        }
    }

    for (i, a) in ranges.iter().enumerate() {
        for (j, b) in ranges.iter().enumerate().skip(i + 1) {
            if a.overlaps(b) {
                return Err(ConfigError(format!("range set {i} overlaps with {j}")).into());
            }
        }
    }

    let routes = ipam
        .routes
        .iter()
        .flatten()
        .map(parse_route)
        .collect::<Result<Vec<_>, _>>()?;

    Ok(IpamConfig {
        name: net.name,
        ranges,
        routes,
        data_dir: PathBuf::from(
            ipam.data_dir
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| ipam_store::disk::DEFAULT_DATA_DIR.to_owned()),
        ),
        resolv_conf: ipam
            .resolv_conf
            .filter(|r| !r.is_empty())
            .map(PathBuf::from),
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load_json(v: serde_json::Value, env: &str) -> Result<IpamConfig, String> {
        let args = CniArgs::parse(env).map_err(|e| e.to_string())?;
        load(v.to_string().as_bytes(), &args).map_err(|e| e.to_string())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn merges_ranges_in_reference_order() {
        let c = load_json(
            json!({
                "cniVersion": "1.0.0", "name": "n",
                "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
                "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
                         "ranges": [[{"subnet": "fd00::/64"}]],
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.1.0.1"}]}
            }),
            "",
        )
        .expect("valid");
        let sets: Vec<String> = c.ranges.iter().map(ToString::to_string).collect();
        assert_eq!(
            sets,
            vec![
                "10.9.0.1-10.9.0.254",
                "10.1.0.1-10.1.0.254",
                "fd00::1-fd00::ffff:ffff:ffff:ffff"
            ]
        );
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/networks"));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("10.1.0.1")));
        assert_eq!(c.name, "n");
    }

    #[test]
    fn requested_ips_are_merged() {
        let c = load_json(
            json!({
                "cniVersion": "1.0.0", "name": "n",
                "args": {"cni": {"ips": ["10.1.0.7", "10.1.0.5"]}},
                "runtimeConfig": {"ips": ["fd00::9/64"]},
                "ipam": {"subnet": "10.1.0.0/24", "dataDir": "/tmp/x"}
            }),
            "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.5",
        )
        .expect("valid");
        assert_eq!(
            c.requested,
            vec![ip("10.1.0.5"), ip("10.1.0.7"), ip("fd00::9")]
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors() {
        let e = |v, env| load_json(v, env).expect_err("must fail");
        assert_eq!(
            e(json!({"cniVersion": "1.0.0", "name": "n"}), ""),
            "IPAM config missing 'ipam' key"
        );
        assert_eq!(
            e(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}}), ""),
            "no IP ranges specified"
        );
        assert_eq!(
            e(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.1.0.5/24"}}),
                ""
            ),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0"
        );
        assert_eq!(
            e(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]}}),
                ""
            ),
            "range set 0 overlaps with 1"
        );
        assert_eq!(
            e(
                json!({"cniVersion": "0.2.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}}),
                ""
            ),
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        assert_eq!(
            e(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}}),
                ""
            ),
            "invalid range set 0: mixed address families"
        );
        assert_eq!(
            e(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.1.0.0/24"}}),
                "IP=10.1.0.x"
            ),
            "ARGS: error parsing value of pair \"IP=10.1.0.x\": invalid IP address: 10.1.0.x"
        );
        assert!(
            e(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.1.0.0/24"}}),
                "FOO=bar"
            )
            .contains("unknown args")
        );
    }

    #[test]
    fn routes() {
        let conf = |routes| {
            json!({"cniVersion": "1.0.0", "name": "n",
                   "ipam": {"subnet": "10.1.0.0/24", "routes": routes}})
        };
        let c = load_json(
            conf(
                json!([{"dst": "10.0.0.0/8", "gw": "::ffff:10.1.0.1", "table": 0, "scope": 253},
                        {"dst": "fd00::/64", "gw": ""}]),
            ),
            "",
        )
        .expect("valid");
        assert_eq!(c.routes[0].gw, Some(ip("10.1.0.1")));
        assert_eq!((c.routes[0].table, c.routes[0].scope), (Some(0), Some(253)));
        assert_eq!(c.routes[1].gw, None);
        let e = |routes| load_json(conf(routes), "").expect_err("must fail");
        assert_eq!(
            e(json!([{"dst": "10.0.0.1"}])),
            "invalid CIDR address: 10.0.0.1"
        );
        assert_eq!(
            e(json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.x"}])),
            "invalid IP address: 10.1.0.x"
        );
        assert!(
            e(json!([{"dst": "0.0.0.0/0", "mtu": "x"}]))
                .starts_with("error parsing ipam configuration: invalid type")
        );
        let args = CniArgs::parse("").expect("args");
        let err: CniError = load(conf(json!([{"dst": "x"}])).to_string().as_bytes(), &args)
            .expect_err("must fail")
            .into();
        assert_eq!(err.code, code::INVALID_NETWORK_CONFIG);
    }
}
