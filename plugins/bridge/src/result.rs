//! Shaping the ADD result as the reference does: interfaces `[bridge, host veth,
//! container]`, every IP on interface 2, the gateway filled in, and one default route per
//! family appended after the IPAM routes when `isDefaultGateway` is set.

use std::net::IpAddr;

use cni::{CniResult, Interface, Route};
use ipnetwork::IpNetwork;

use crate::config::BridgeConf;

/// Index of the container interface in `interfaces`.
pub const CONTAINER_IF_INDEX: usize = 2;

/// The gateway addresses (with the container's prefix length) to put on the bridge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gateways {
    /// IPv4 gateways, e.g. `10.244.1.1/24`.
    pub v4: Vec<IpNetwork>,
    /// IPv6 gateways.
    pub v6: Vec<IpNetwork>,
}

/// An interface entry with only a name and MAC (host side).
pub fn host_interface(name: &str, mac: Option<[u8; 6]>) -> Interface {
    Interface {
        name: name.to_owned(),
        mac: mac.map(netlink::format_mac),
        ..Interface::default()
    }
}

/// The first address of the subnet of `net` (network + 1): Go's `calcGatewayIP`.
pub fn subnet_gateway(net: IpNetwork) -> IpAddr {
    match net {
        IpNetwork::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(1)).into()),
        IpNetwork::V6(n) => IpAddr::V6((u128::from(n.network()).wrapping_add(1)).into()),
    }
}

/// Go's `calcGateways`: points every IP at the container interface, fills missing
/// gateways when `isGateway`, appends default routes when `isDefaultGateway`, and
/// returns the gateway addresses for the bridge.
pub fn calc_gateways(result: &mut CniResult, conf: &BridgeConf) -> Gateways {
    let mut gws = Gateways::default();
    let (mut v4_default, mut v6_default) = (false, false);
    for ipc in &mut result.ips {
        ipc.interface = Some(CONTAINER_IF_INDEX);
        if ipc.gateway.is_none() && conf.is_gateway {
            ipc.gateway = Some(subnet_gateway(ipc.address));
        }
        let is_v4 = ipc.address.is_ipv4();
        let default_net: IpNetwork = if is_v4 {
            IpNetwork::V4(ipnetwork::Ipv4Network::from(
                std::net::Ipv4Addr::UNSPECIFIED,
            ))
        } else {
            IpNetwork::V6(ipnetwork::Ipv6Network::from(
                std::net::Ipv6Addr::UNSPECIFIED,
            ))
        };
        // `from(addr)` gives a /32 or /128: make it the /0 default destination.
        let default_net = IpNetwork::new(default_net.ip(), 0).unwrap_or(default_net);
        let found = if is_v4 {
            &mut v4_default
        } else {
            &mut v6_default
        };
        if conf.is_default_gateway {
            // Only an IPAM default route *with a gateway* suppresses ours (as the reference).
            if !*found {
                *found = result
                    .routes
                    .iter()
                    .any(|r| r.gw.is_some() && r.dst == default_net);
            }
            if !*found {
                result.routes.push(Route::new(default_net, ipc.gateway));
                *found = true;
            }
        }
        if conf.is_gateway
            && let Some(gw) = ipc.gateway
            && let Ok(net) = IpNetwork::new(gw, ipc.address.prefix())
        {
            if is_v4 {
                gws.v4.push(net);
            } else {
                gws.v6.push(net);
            }
        }
    }
    gws
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::IpConfig;

    fn conf(json: &str) -> BridgeConf {
        BridgeConf::load(
            json.as_bytes(),
            &cni::args::CniArgs::parse("").expect("args"),
        )
        .expect("conf")
    }

    fn ip(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            interface: None,
            address: addr.parse().expect("addr"),
            gateway: gw.map(|g| g.parse().expect("gw")),
        }
    }

    #[test]
    fn gateway_and_default_routes() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None), ip("fd00::5/64", Some("fd00::9"))],
            routes: vec![Route::new("10.0.0.0/8".parse().expect("dst"), None)],
            ..CniResult::default()
        };
        let gws = calc_gateways(&mut r, &conf(r#"{"name":"n","isDefaultGateway":true}"#));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().expect("ip")));
        assert_eq!(gws.v4, vec!["10.1.2.1/24".parse::<IpNetwork>().expect("n")]);
        assert_eq!(gws.v6, vec!["fd00::9/64".parse::<IpNetwork>().expect("n")]);
        let dsts: Vec<String> = r.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.0.0.0/8", "0.0.0.0/0", "::/0"]);
        assert_eq!(r.routes[1].gw, Some("10.1.2.1".parse().expect("ip")));
    }

    #[test]
    fn ipam_default_route_with_gw_wins() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            routes: vec![Route::new(
                "0.0.0.0/0".parse().expect("dst"),
                Some("10.1.2.254".parse().expect("gw")),
            )],
            ..CniResult::default()
        };
        calc_gateways(&mut r, &conf(r#"{"name":"n","isDefaultGateway":true}"#));
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn no_gateway_without_is_gateway() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            ..CniResult::default()
        };
        let gws = calc_gateways(&mut r, &conf(r#"{"name":"n"}"#));
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(gws, Gateways::default());
    }
}
