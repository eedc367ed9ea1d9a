//! CHECK: compares the kernel state with `prevResult`, as the reference's `cmdCheck`
//! (same order and error strings): IPAM CHECK, then the bridge, the container veth, the
//! host veth that is its peer and a port of the bridge, the addresses and the routes.

use cni::skel::CmdArgs;
use cni::{CniResult, Interface, IpConfig, Route};
use ipnetwork::IpNetwork;
use netlink::{Family, Link, Netlink, Netns, RouteEntry};

use crate::config::BridgeConf;
use crate::error::{Context, Error, Result};

/// The main routing table (RT_TABLE_MAIN).
const TABLE_MAIN: u32 = 254;

/// Runs CHECK.
pub fn check(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    let netns_path = args
        .netns
        .as_ref()
        .ok_or_else(|| Error::Config("CNI_NETNS is required for CHECK".into()))?;
    let netns_str = netns_path.to_string_lossy().into_owned();
    let ns = Netns::open(netns_path).context(format!("failed to open netns {netns_str:?}"))?;

    if conf.is_layer3() {
        cni::delegate::check(&conf.ipam_type, &args.stdin, args)?;
    }

    let prev = args
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::State("Required prevResult missing".into()))?;
    let result = CniResult::from_json(prev, &args.version.as_str())?;

    let empty = Interface::default();
    let br_entry = result
        .interfaces
        .iter()
        .find(|i| i.name == conf.bridge)
        .unwrap_or(&empty);
    let cont_entry = result
        .interfaces
        .iter()
        .find(|i| i.name == args.ifname && i.sandbox.as_deref() == Some(netns_str.as_str()))
        .unwrap_or(&empty);

    let mut host = Netlink::new().context("failed to open netlink socket")?;
    let br = validate_bridge(&mut host, br_entry, &conf)?;

    let sandbox = cont_entry.sandbox.clone().unwrap_or_default();
    if sandbox != netns_str {
        return Err(Error::State(format!(
            "Sandbox in prevResult {sandbox} doesn't match configured netns: {netns_str}"
        )));
    }

    let mut cont =
        Netlink::in_netns(&ns).context("failed to open netlink in the container netns")?;
    let cont_link = validate_container(&mut cont, cont_entry)?;

    let mut veth_found = false;
    for intf in &result.interfaces {
        if intf.name == br_entry.name || intf.name == cont_entry.name {
            continue;
        }
        if validate_host_veth(&mut host, intf, &br, &cont_link)? {
            veth_found = true;
            break;
        }
    }
    if !veth_found {
        return Err(Error::State(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }

    validate_ips(&mut cont, &args.ifname, &result.ips)?;
    validate_routes(&mut cont, &result.routes)
}

fn mac_str(l: &Link) -> String {
    l.mac.map(netlink::format_mac).unwrap_or_default()
}

/// Go's `validateInterface`: name present, link present, sandbox as expected.
fn validate_interface(nl: &mut Netlink, intf: &Interface, in_sandbox: bool) -> Result<Link> {
    if intf.name.is_empty() {
        return Err(Error::State("Interface name missing ".into()));
    }
    let link = nl
        .link_by_name(&intf.name)
        .context(format!("Interface name {} not found", intf.name))?
        .ok_or_else(|| Error::State(format!("Interface name {} not found", intf.name)))?;
    let has_sandbox = intf.sandbox.as_deref().is_some_and(|s| !s.is_empty());
    if in_sandbox && !has_sandbox {
        return Err(Error::State(format!(
            "Interface {} is expected to be in a sandbox",
            intf.name
        )));
    }
    if !in_sandbox && has_sandbox {
        return Err(Error::State(format!(
            "Interface {} should not be in sandbox",
            intf.name
        )));
    }
    Ok(link)
}

fn validate_bridge(nl: &mut Netlink, intf: &Interface, conf: &BridgeConf) -> Result<Link> {
    let link = validate_interface(nl, intf, false)?;
    if link.kind.as_deref() != Some("bridge") {
        return Err(Error::State(format!(
            "Interface {} does not have link type of bridge",
            intf.name
        )));
    }
    if let Some(mac) = intf.mac.as_deref().filter(|m| !m.is_empty())
        && mac != mac_str(&link)
    {
        return Err(Error::State(format!(
            "Bridge interface {} Mac doesn't match: {mac}",
            intf.name
        )));
    }
    if link.promisc != conf.promisc_mode {
        return Err(Error::State(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
            intf.name, conf.promisc_mode, link.promisc
        )));
    }
    Ok(link)
}

fn validate_container(nl: &mut Netlink, intf: &Interface) -> Result<Link> {
    let link = validate_interface(nl, intf, true)?;
    if link.kind.as_deref() != Some("veth") {
        return Err(Error::State(format!(
            "Error: Container interface {} not of type veth",
            link.name
        )));
    }
    if link.peer_index.is_none() {
        return Err(Error::State(format!(
            "Unable to obtain veth peer index for veth {}",
            link.name
        )));
    }
    if let Some(mac) = intf.mac.as_deref().filter(|m| !m.is_empty())
        && mac != mac_str(&link)
    {
        return Err(Error::State(format!(
            "Interface {} Mac {mac} doesn't match container Mac: {}",
            intf.name,
            mac_str(&link)
        )));
    }
    Ok(link)
}

/// True when `intf` is the host veth of the container link, enslaved to `br`.
/// Interfaces that are not veths are skipped (not ours), as the reference.
fn validate_host_veth(nl: &mut Netlink, intf: &Interface, br: &Link, cont: &Link) -> Result<bool> {
    let link = validate_interface(nl, intf, false)?;
    if link.kind.as_deref() != Some("veth") {
        return Ok(false);
    }
    let Some(peer) = link.peer_index else {
        return Err(Error::State(format!(
            "Unable to obtain veth peer index for veth {}",
            link.name
        )));
    };
    if cont.peer_index != Some(link.index) || peer != cont.index || link.master != Some(br.index) {
        return Ok(false);
    }
    if let Some(mac) = intf.mac.as_deref().filter(|m| !m.is_empty())
        && mac != mac_str(&link)
    {
        return Err(Error::State(format!(
            "Interface {} Mac doesn't match: {mac} not found",
            intf.name
        )));
    }
    Ok(true)
}

fn family_of(net: &IpNetwork) -> Family {
    if net.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Go's `ValidateExpectedInterfaceIPs`: each address is on the link and its prefix has a
/// route.
fn validate_ips(nl: &mut Netlink, ifname: &str, ips: &[IpConfig]) -> Result<()> {
    for ipc in ips {
        let link = nl
            .link_by_name(ifname)
            .ok()
            .flatten()
            .ok_or_else(|| Error::State(format!("Cannot find container link {ifname}")))?;
        let addrs = nl
            .addrs(Some(link.index))
            .map_err(|_| Error::State("Cannot obtain List of IP Addresses".into()))?;
        if !addrs.iter().any(|a| a.address == ipc.address) {
            return Err(Error::State(format!(
                "Failed to match addr {} on interface {ifname}",
                ipc.address
            )));
        }
        let prefix =
            IpNetwork::new(ipc.address.network(), ipc.address.prefix()).unwrap_or(ipc.address);
        let routes = nl
            .routes(family_of(&ipc.address))
            .context(format!("trying to find Gateway for interface {ifname}"))?;
        if !routes
            .iter()
            .any(|r| r.dst == prefix && r.table.unwrap_or(TABLE_MAIN) == TABLE_MAIN)
        {
            return Err(Error::State(format!(
                "Failed to find Gateway {} for interface {ifname}",
                ipc.gateway
                    .map_or_else(|| "<nil>".to_owned(), |g| g.to_string())
            )));
        }
    }
    Ok(())
}

fn route_text(r: &Route) -> String {
    format!(
        "{{Dst:{} GW:{}}}",
        r.dst,
        r.gw.map_or_else(|| "<nil>".to_owned(), |g| g.to_string())
    )
}

/// Go's `ValidateExpectedRoute`: every result route is in the table (a default route
/// matches on destination only).
fn validate_routes(nl: &mut Netlink, routes: &[Route]) -> Result<()> {
    for r in routes {
        let dst = IpNetwork::new(r.dst.network(), r.dst.prefix()).unwrap_or(r.dst);
        let table = r.table.unwrap_or(TABLE_MAIN);
        let found = nl
            .routes(family_of(&dst))
            .context(format!(
                "Expected Route {} not route table lookup error",
                route_text(r)
            ))?
            .iter()
            .any(|k: &RouteEntry| {
                k.dst == dst
                    && k.table.unwrap_or(TABLE_MAIN) == table
                    && (dst.prefix() == 0 || r.gw.is_none() || k.gw == r.gw)
            });
        if !found {
            return Err(Error::State(format!(
                "Expected Route {} not found in routing table",
                route_text(r)
            )));
        }
    }
    Ok(())
}
