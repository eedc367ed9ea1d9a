//! Node-side chores of an ADD, in the node's netns (where the plugin runs).

use std::net::IpAddr;

use firewall::portmap::{Protocol, Request};
use netlink::Netlink;
use netlink::conntrack::{self, Filter, proto};

use crate::error::{Context, Result};

/// Sets `net.ipv4.conf.<if>.route_localnet=1` on the interface that routes to the pod (the
/// bridge), so that a connection to `127.0.0.1:hostPort`, DNAT'ed to the pod, may leave
/// with its 127.0.0.1 source until the masquerade rewrites it. As the reference: no route to
/// the pod means nothing to do.
pub fn enable_route_localnet(pod: IpAddr) -> Result<()> {
    let mut nl = Netlink::new().context("unable to enable route_localnet")?;
    let oif = match nl.route_get(pod) {
        Ok(Some(r)) => r.oif,
        Ok(None) => None,
        Err(e) => {
            log::debug!("no route to {pod}: {e}");
            None
        }
    };
    let Some(oif) = oif else {
        return Ok(());
    };
    let Some(link) = nl
        .link_by_index(oif)
        .context("unable to enable route_localnet")?
    else {
        return Ok(());
    };
    netlink::sysctl::ensure(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")
        .context("unable to enable route_localnet")
}

/// Deletes the conntrack entries of the newly mapped UDP host ports, per family of the pod's
/// addresses: a client that sent there before the mapping existed would otherwise keep
/// following its old entry (UDP entries live as long as traffic flows). Failures are only
/// logged, as the reference does: the mapping itself is in place.
pub fn flush_stale_udp(req: &Request) {
    for v6 in [false, true] {
        if req.addr(v6).is_none() {
            continue;
        }
        let ports: Vec<u16> = req
            .mappings_for(v6)
            .filter(|m| m.protocol == Protocol::Udp)
            .map(|m| m.host_port)
            .collect();
        if ports.is_empty() {
            continue;
        }
        let filter = Filter {
            protocol: proto::UDP,
            dst_ports: ports,
        };
        match conntrack::delete(v6, &filter) {
            Ok(n) => log::debug!("deleted {n} stale UDP conntrack entries"),
            Err(e) => log::warn!(
                "failed to delete stale UDP conntrack entries for ports {:?}: {e}",
                filter.dst_ports
            ),
        }
    }
}
