//! Sysctls and routes of the node: `ip-forward-disabled`, `bridge-nf-call-disabled`,
//! `no-route-to-peers`.

use ipnetwork::IpNetwork;

use super::{check, list};
use crate::Context;
use crate::finding::{CheckResult, Finding, Id, Outcome, Repair};

/// `key` in dotted form, as `sysctl` and operators write it.
fn dotted(key: &str) -> String {
    key.replace('/', ".")
}

/// Reads the boolean sysctls `keys`: `Ok(Err(pass))` when all are 1, `Ok(Ok(off))` with the
/// ones that are not ("net.ipv4.ip_forward is 0").
fn not_on(keys: &[&str]) -> Result<Result<Vec<String>, Outcome>, Outcome> {
    let mut off = Vec::new();
    for key in keys {
        let v = netlink::sysctl::get(key).map_err(|e| Outcome::Unchecked(e.to_string()))?;
        if v.trim() != "1" {
            off.push(format!("{} is {}", dotted(key), v.trim()));
        }
    }
    if off.is_empty() {
        let on: Vec<String> = keys.iter().map(|k| format!("{} = 1", dotted(k))).collect();
        return Ok(Err(Outcome::Pass(on.join(", "))));
    }
    Ok(Ok(off))
}

pub fn ip_forward(ctx: &Context) -> CheckResult {
    check("IP forwarding", || {
        let env = ctx.env()?;
        let mut keys = Vec::new();
        if env.subnet.is_some() || !env.networks.is_empty() {
            keys.push("net/ipv4/ip_forward");
        }
        if env.ipv6_subnet.is_some() || !env.ipv6_networks.is_empty() {
            keys.push("net/ipv6/conf/all/forwarding");
        }
        let off = not_on(&keys)??;
        let settings: Vec<(String, String)> = keys
            .iter()
            .map(|k| ((*k).to_owned(), "1".to_owned()))
            .collect();
        let set: Vec<String> = keys.iter().map(|k| format!("{}=1", dotted(k))).collect();
        Ok(Outcome::Found(
            Finding::new(
                Id::IpForwardDisabled,
                format!(
                    "{}: the node does not route pod traffic, so pods reach neither other nodes \
                     nor anything outside it (the bridge plugin turns forwarding on at each ADD; \
                     something turned it off since: a sysctl.d file, a network manager). Make it \
                     stick in /etc/sysctl.d",
                    off.join(", ")
                ),
            )
            .with_repair(
                format!("set {}", set.join(" and ")),
                Repair::Sysctl { settings },
            ),
        ))
    })
}

pub fn bridge_nf_call(ctx: &Context) -> CheckResult {
    check("bridge netfilter", || {
        let Some(bridge) = &ctx.net.bridge else {
            return Err(Outcome::Skipped(
                "not checked: pods do not hang off a bridge".into(),
            ));
        };
        let mut keys = vec!["net/bridge/bridge-nf-call-iptables"];
        if let Ok(env) = ctx.env()
            && env.ipv6_subnet.is_some()
        {
            keys.push("net/bridge/bridge-nf-call-ip6tables");
        }
        // Per network namespace since Linux 5.3; absent while br_netfilter is not loaded.
        if !std::path::Path::new("/proc/sys/net/bridge").is_dir() {
            return Ok(Outcome::Found(Finding::new(
                Id::BridgeNfCallDisabled,
                format!(
                    "br_netfilter is not loaded (no /proc/sys/net/bridge): traffic between pods \
                     on {bridge} bypasses iptables, so kube-proxy's service rules miss it (a pod \
                     cannot reach a service whose endpoint is on this node). Load it (modprobe \
                     br_netfilter, and in /etc/modules-load.d)"
                ),
            )));
        }
        let off = not_on(&keys)??;
        Ok(Outcome::Found(Finding::new(
            Id::BridgeNfCallDisabled,
            format!(
                "{}: traffic between pods on {bridge} bypasses iptables, so kube-proxy's service \
                 rules miss it (a pod cannot reach a service whose endpoint is on this node). Set \
                 it to 1, and in /etc/sysctl.d (kubeadm's preflight requires it)",
                off.join(", ")
            ),
        )))
    })
}

/// Whether `dst` routes some part of `networks` other than the node's own `subnet` (a
/// default route does not count: it covers everything, not the peers).
pub fn is_peer_route(dst: IpNetwork, networks: &[IpNetwork], subnet: Option<IpNetwork>) -> bool {
    let own = subnet.is_some_and(|s| {
        s.is_ipv4() == dst.is_ipv4() && s.prefix() <= dst.prefix() && s.contains(dst.network())
    });
    dst.prefix() > 0
        && !own
        && networks.iter().any(|n| {
            n.is_ipv4() == dst.is_ipv4() && (n.contains(dst.network()) || dst.contains(n.network()))
        })
}

pub fn routes_to_peers(ctx: &Context) -> CheckResult {
    check("routes to peers", || {
        let env = ctx.env()?;
        let kernel = ctx.kernel()?;
        let mut missing = Vec::new();
        let mut found = Vec::new();
        for (networks, subnet) in [
            (&env.networks, env.subnet),
            (&env.ipv6_networks, env.ipv6_subnet),
        ] {
            if networks.is_empty() {
                continue;
            }
            // The bridge's own route is the node's subnet (an old one after a new lease).
            let bridge = ctx.net.bridge.as_deref().and_then(|b| kernel.link(b));
            let routes: Vec<String> = kernel
                .main_routes()
                .filter(|r| is_peer_route(r.dst, networks, subnet))
                .filter(|r| bridge.is_none_or(|b| r.oif != Some(b.index)))
                .map(|r| {
                    let dev = r
                        .oif
                        .and_then(|i| kernel.link_by_index(i))
                        .map_or_else(String::new, |l| format!(" dev {}", l.name));
                    match r.gw {
                        Some(gw) => format!("{} via {gw}{dev}", r.dst),
                        None => format!("{}{dev}", r.dst),
                    }
                })
                .collect();
            let nets: Vec<String> = networks.iter().map(ToString::to_string).collect();
            if routes.is_empty() {
                let own = subnet.map_or_else(String::new, |s| format!(" outside this node's {s}"));
                missing.push(format!("no route to any part of {}{own}", nets.join(",")));
            } else {
                found.push(list(&routes, 3));
            }
        }
        if missing.is_empty() {
            return Ok(Outcome::Pass(found.join("; ")));
        }
        Ok(Outcome::Found(Finding::new(
            Id::NoRouteToPeers,
            format!(
                "{}: pods cannot reach pods on other nodes. flanneld installs these routes \
                 (vxlan: over flannel.1; host-gw: via each node's address): is it running, and \
                 do the nodes share a network? On a one-node cluster this is expected",
                missing.join("; ")
            ),
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_routes() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        let nets = [n("10.244.0.0/16")];
        let own = Some(n("10.244.1.0/24"));
        assert!(is_peer_route(n("10.244.2.0/24"), &nets, own));
        assert!(is_peer_route(n("10.244.0.0/16"), &nets, own)); // flannel.1 for all
        assert!(is_peer_route(n("10.0.0.0/8"), &nets, own));
        assert!(!is_peer_route(n("10.244.1.0/24"), &nets, own));
        assert!(!is_peer_route(n("10.244.1.128/25"), &nets, own));
        assert!(!is_peer_route(n("0.0.0.0/0"), &nets, own));
        assert!(!is_peer_route(n("192.168.0.0/24"), &nets, own));
        assert!(!is_peer_route(n("fd00::/64"), &nets, own));
    }
}
