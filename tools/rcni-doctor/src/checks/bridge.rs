//! The bridge and the MTUs along a pod's path: `bridge-address-mismatch`, `mtu-mismatch`.

use ipnetwork::IpNetwork;
use netlink::Link;

use super::{check, count, list};
use crate::Context;
use crate::finding::{CheckResult, Finding, Id, Outcome, Repair};
use crate::node::Kernel;

/// The gateway host-local gives pods of `subnet` (and the bridge gets): its first address.
pub fn gateway(subnet: IpNetwork) -> IpNetwork {
    let first = match subnet.network() {
        std::net::IpAddr::V4(a) => std::net::IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        std::net::IpAddr::V6(a) => std::net::IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    };
    IpNetwork::new(first, subnet.prefix()).unwrap_or(subnet)
}

/// RT_SCOPE_UNIVERSE: a global address (not link-local).
const SCOPE_UNIVERSE: u8 = 0;

pub fn address(ctx: &Context) -> CheckResult {
    check("bridge address", || {
        let Some(name) = &ctx.net.bridge else {
            return Err(Outcome::Skipped(
                "not checked: pods do not hang off a bridge".into(),
            ));
        };
        let env = ctx.env()?;
        let kernel = ctx.kernel()?;
        let gws: Vec<IpNetwork> = env
            .subnet
            .iter()
            .chain(&env.ipv6_subnet)
            .map(|s| gateway(*s))
            .collect();
        let gw_list: Vec<String> = gws.iter().map(ToString::to_string).collect();
        let Some(link) = kernel.link(name) else {
            return Ok(Outcome::Pass(format!(
                "{name} does not exist yet; the first ADD creates it with {}",
                gw_list.join(", ")
            )));
        };
        // What the bridge plugin refuses on ADD: any other IPv4 address, and an IPv6 one in
        // the gateway's subnet (plugins/bridge/src/add.rs, ensure_addr).
        let wrong: Vec<String> = kernel
            .addrs_of(link.index)
            .into_iter()
            .filter(|a| a.scope == SCOPE_UNIVERSE)
            .filter(|a| {
                gws.iter().any(|gw| {
                    gw.is_ipv4() == a.address.is_ipv4()
                        && a.address != *gw
                        && (gw.is_ipv4()
                            || a.address.contains(gw.ip())
                            || gw.contains(a.address.ip()))
                })
            })
            .map(|a| a.address.to_string())
            .collect();
        if wrong.is_empty() {
            return Ok(Outcome::Pass(format!(
                "{name} has the lease's gateway ({})",
                gw_list.join(", ")
            )));
        }
        let ports = kernel.ports(link);
        let message = format!(
            "{name} has {}, but the gateway of this node's lease is {}: the node got a new \
             lease (a new podCIDR) and every ADD fails with: {name:?} already has an IP \
             address different from {}",
            list(&wrong, 4),
            gw_list.join(", "),
            gw_list[0]
        );
        if ports.is_empty() {
            return Ok(Outcome::Found(
                Finding::new(Id::BridgeAddressMismatch, message).with_repair(
                    format!(
                        "delete {name} (it has no ports); the next ADD recreates it with {}",
                        gw_list.join(", ")
                    ),
                    Repair::DeleteBridge { name: name.clone() },
                ),
            ));
        }
        Ok(Outcome::Found(Finding::new(
            Id::BridgeAddressMismatch,
            format!(
                "{message}. {name} still has {} (pods of the old lease, with old \
                 addresses): delete those pods, then run rcni-doctor --fix (or ip link del \
                 {name}) so the next ADD recreates it",
                count(ports.len(), "port")
            ),
        )))
    })
}

pub fn mtu(ctx: &Context) -> CheckResult {
    check("MTU", || {
        let env = ctx.env()?;
        let kernel = ctx.kernel()?;
        let mtu = env.mtu;
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        if let Some(bridge) = ctx.net.bridge.as_deref().and_then(|b| kernel.link(b)) {
            seen.push(format!("{} {}", bridge.name, bridge.mtu));
            // Without ports the kernel resets a bridge's MTU to 1500 (unless a user set it);
            // the next port brings it down again, so only a bridge with ports counts.
            let has_ports = !kernel.ports(bridge).is_empty();
            if has_ports && bridge.mtu > mtu {
                problems.push(format!("{} has MTU {}", bridge.name, bridge.mtu));
            }
            let big: Vec<String> = kernel
                .ports(bridge)
                .into_iter()
                .filter(|p| p.kind.as_deref() == Some("veth") && p.mtu > mtu)
                .map(|p| format!("{} ({})", p.name, p.mtu))
                .collect();
            if !big.is_empty() {
                problems.push(format!("pod veths {}", list(&big, 4)));
            }
        }
        if let Some(up) = uplink(kernel, env) {
            seen.push(format!("{} {}", up.name, up.mtu));
            if mtu > up.mtu {
                problems.push(format!(
                    "FLANNEL_MTU={mtu} is above the MTU of {} ({}), the interface flannel \
                     sends through",
                    up.name, up.mtu
                ));
            }
        }
        if problems.is_empty() {
            return Ok(Outcome::Pass(format!(
                "FLANNEL_MTU={mtu}; {}",
                if seen.is_empty() {
                    "no bridge or uplink yet".to_owned()
                } else {
                    seen.join(", ")
                }
            )));
        }
        Ok(Outcome::Found(Finding::new(
            Id::MtuMismatch,
            format!(
                "{} (FLANNEL_MTU={mtu}): packets larger than the path between nodes carries are \
                 dropped, so pings work and large transfers stall. Make flanneld's MTU fit its \
                 interface (vxlan needs 50 bytes less than the uplink), then recreate the pods \
                 (and the bridge once it has no ports): they get their MTU at ADD",
                problems.join("; ")
            ),
        )))
    })
}

/// The interface flannel sends pod traffic through: its VXLAN device (`flannel.<vni>`), else
/// (host-gw) the interface of the routes to other nodes' subnets, else of the default route.
fn uplink<'a>(kernel: &'a Kernel, env: &flannel_state::SubnetEnv) -> Option<&'a Link> {
    if let Some(vtep) = kernel
        .links
        .iter()
        .find(|l| l.kind.as_deref() == Some("vxlan") && l.name.starts_with("flannel."))
    {
        return Some(vtep);
    }
    let peer = kernel.main_routes().find(|r| {
        r.gw.is_some()
            && r.dst.prefix() > 0
            && super::kernel::is_peer_route(r.dst, &env.networks, env.subnet)
    });
    let default = || {
        kernel
            .main_routes()
            .find(|r| r.dst.prefix() == 0 && r.dst.is_ipv4())
    };
    peer.or_else(default)
        .and_then(|r| r.oif)
        .and_then(|i| kernel.link_by_index(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(gateway(n("10.244.1.0/24")), n("10.244.1.1/24"));
        assert_eq!(gateway(n("fd00:10:244:1::/64")), n("fd00:10:244:1::1/64"));
    }
}
