//! VLANs on the bridge port of a pod (`vlan`, `vlanTrunk`, `preserveDefaultVlan`) and the
//! `<bridge>.<vlan>` gateway interface used with `isGateway`.
//!
//! The bridge only filters when `vlan_filtering` is on (set at bridge creation). An access
//! port gets the VLAN as PVID + untagged; a trunk port gets tagged VLANs. The bridge puts
//! every new port in its `default_pvid` (1): the reference removes it unless
//! `preserveDefaultVlan`, so that the pod is only in its own VLAN(s).

use netlink::{Link, Netlink, Netns};

use crate::config::{BridgeConf, DEFAULT_VLAN_ID};
use crate::error::{Context, Error, Result};

/// Programs the VLANs of the bridge port `port` (host veth) from the config.
pub fn setup_port(nl: &mut Netlink, port: &Link, conf: &BridgeConf) -> Result<()> {
    setup_port_vlans(
        nl,
        port,
        conf.vlan,
        &conf.vlan_trunk,
        conf.preserve_default_vlan,
    )
}

fn setup_port_vlans(
    nl: &mut Netlink,
    port: &Link,
    vlan: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Result<()> {
    if (vlan != 0 || !trunk.is_empty()) && !preserve_default {
        // A missing default VLAN (bridge default_pvid changed or 0) is fine.
        match nl.bridge_vlan_del(port.index, DEFAULT_VLAN_ID) {
            Err(e) if !e.is_not_found() && e.errno() != Some(EINVAL) => {
                return Err(Error::Netlink {
                    context: format!("failed to remove default vlan on interface {:?}", port.name),
                    source: e,
                });
            }
            _ => {}
        }
    }
    if vlan != 0 {
        nl.bridge_vlan_add(port.index, vlan, true, true)
            .context(format!(
                "failed to setup vlan tag on interface {:?}",
                port.name
            ))?;
    }
    for &v in trunk {
        nl.bridge_vlan_add(port.index, v, false, false)
            .context(format!(
                "failed to setup vlan tag on interface {:?}",
                port.name
            ))?;
    }
    Ok(())
}

/// EINVAL: what the kernel answers when deleting a VLAN the port does not have
/// (spelled out to avoid a libc dependency for one constant).
const EINVAL: i32 = 22;

/// The gateway interface for an access VLAN: a veth pair in the node, `<bridge>.<vlan>`
/// carrying the gateway address, its peer a bridge port in that VLAN. Created once and
/// shared by every pod of the VLAN (never deleted, like the bridge).
pub fn ensure_gateway_interface(
    nl: &mut Netlink,
    bridge: &Link,
    conf: &BridgeConf,
) -> Result<Link> {
    let name = format!("{}.{}", bridge.name, conf.vlan);
    if let Some(link) = nl
        .link_by_name(&name)
        .context(format!("failed to find interface {name:?}"))?
    {
        return Ok(link);
    }
    let here = Netns::current().context("failed to find host namespace")?;
    let mtu = Some(bridge.mtu).filter(|m| *m != 0);
    let mut port_name = String::new();
    for _ in 0..crate::add::VETH_NAME_ATTEMPTS {
        let candidate = netlink::random_veth_name();
        match nl.create_veth(&candidate, &name, &here, mtu, None) {
            Ok(()) => {
                port_name = candidate;
                break;
            }
            Err(e) if e.is_exists() => {
                if let Some(link) = nl.link_by_name(&name).context("lookup vlan interface")? {
                    // Created by a parallel ADD in the meantime.
                    return Ok(link);
                }
            }
            Err(e) => {
                return Err(Error::Netlink {
                    context: format!("failed to create vlan gateway {name:?}"),
                    source: e,
                });
            }
        }
    }
    if port_name.is_empty() {
        return Err(Error::State(format!(
            "failed to create vlan gateway {name:?}: no free veth name"
        )));
    }
    let port = lookup(nl, &port_name)?;
    nl.set_up(port.index)
        .context(format!("failed to set {port_name:?} up"))?;
    nl.set_master(port.index, bridge.index).context(format!(
        "failed to connect {port_name:?} to bridge {:?}",
        bridge.name
    ))?;
    setup_port_vlans(nl, &port, conf.vlan, &[], conf.preserve_default_vlan)?;
    let gw = lookup(nl, &name)?;
    nl.set_up(gw.index)
        .context(format!("failed to up {name:?}"))?;
    lookup(nl, &name)
}

fn lookup(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link_by_name(name)
        .context(format!("failed to lookup {name:?}"))?
        .ok_or_else(|| Error::State(format!("failed to lookup {name:?}: link not found")))
}
