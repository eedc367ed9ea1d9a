//! ADD, in the reference's order (features.md §2.2) except for the spoof check: bridge →
//! veth → host port → IPAM → spoof check → container addresses and routes → gateway on the
//! bridge → forwarding → masquerade → port state → result (the masquerade tool runs
//! concurrently with the container and gateway steps; errors keep that order). Every per-pod step is recorded
//! in an [`Undo`] list, so that a failure at any step leaves no veth, no allocation and no
//! rule behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cni::skel::CmdArgs;
use cni::{CniResult, Interface};
use ipnetwork::IpNetwork;
use netlink::{Ensured, Link, Netlink, Netns, RouteEntry, Settled, Waited, netns, sysctl};

use crate::config::BridgeConf;
use crate::error::{Context, Error, Result};
use crate::result::{Gateways, calc_gateways, host_interface};
use crate::undo::{Action, Undo};
use crate::vlan;

/// How many random host veth names we try before giving up (as the reference).
pub const VETH_NAME_ATTEMPTS: usize = 10;
/// Upper bound of the wait for the host veth to be operationally UP (the reference's
/// total sleep budget: 0+50+500+1000+1000 ms).
const PORT_UP_TIMEOUT: Duration = Duration::from_millis(2550);
/// Poll interval of that wait. Short, because the state normally flips within microseconds.
const PORT_UP_POLL: Duration = Duration::from_millis(2);
/// DAD wait bound for IPv6 addresses when `enabledad` (the reference's `SettleAddresses`).
const DAD_TIMEOUT: Duration = Duration::from_secs(5);
/// DAD poll interval (as the reference).
const DAD_POLL: Duration = Duration::from_millis(50);

/// Runs ADD; on any error, rolls back everything this call created and returns the error.
pub fn add(args: &CmdArgs) -> Result<CniResult> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    conf.validate_for_add()?;
    let mut undo = Undo::new(args);
    match add_steps(args, &conf, &mut undo) {
        Ok(result) => {
            undo.commit();
            Ok(result)
        }
        Err(e) => {
            log::debug!(
                "ADD failed ({e}); rolling back {} step(s)",
                undo.actions().len()
            );
            // Dropping the list runs it.
            drop(undo);
            Err(e)
        }
    }
}

/// The masquerade backend of this ADD, its address-independent work already running.
struct MasqPrep {
    att: firewall::Attachment,
    backend: Arc<dyn firewall::Masquerade + Send + Sync>,
    prefetch: std::thread::JoinHandle<()>,
}

/// Picks the masquerade backend and starts its prefetch (the iptables backend lists
/// `POSTROUTING`, one process) so that it overlaps the veth and the IPAM exec instead of
/// following them. None unless `ipMasq` with IPAM.
fn start_masquerade(conf: &BridgeConf, args: &CmdArgs) -> Result<Option<MasqPrep>> {
    if !(conf.ip_masq && conf.is_layer3()) {
        return Ok(None);
    }
    let backend = firewall::Backend::select(conf.ip_masq_backend.as_deref())
        .context("failed to select ipmasq backend")?;
    let backend: Arc<dyn firewall::Masquerade + Send + Sync> =
        Arc::from(firewall::backend(backend));
    let att = conf.attachment(&args.container_id, &args.ifname);
    let (b, a) = (Arc::clone(&backend), att.clone());
    // The thread inherits this thread's netns (the node's), where the rules belong.
    let prefetch = std::thread::spawn(move || {
        if let Err(e) = b.prefetch(&a) {
            log::debug!("masquerade prefetch failed, setup will list the rules: {e}");
        }
    });
    Ok(Some(MasqPrep {
        att,
        backend,
        prefetch,
    }))
}

fn add_steps(args: &CmdArgs, conf: &BridgeConf, undo: &mut Undo<'_>) -> Result<CniResult> {
    let netns_path = args
        .netns
        .as_ref()
        .ok_or_else(|| Error::Config("CNI_NETNS is required for ADD".into()))?;
    let masq = start_masquerade(conf, args)?;
    let mut host = Netlink::new().context("failed to open netlink socket")?;

    let bridge = ensure_bridge(&mut host, conf)
        .context(format!("failed to create bridge {:?}", conf.bridge))?;

    let ns = Netns::open(netns_path)
        .context(format!("failed to open netns {:?}", netns_path.display()))?;

    let (host_veth, mut cont) = create_veth(&mut host, &ns, args, conf, undo)?;
    let cont_link = lookup(&mut cont, &args.ifname)?;
    setup_host_port(&mut host, &host_veth, &bridge, conf)?;

    let sandbox = netns_path.to_string_lossy().into_owned();
    let mut result = CniResult {
        interfaces: vec![
            host_interface(&bridge.name, bridge.mac),
            host_interface(&host_veth.name, host_veth.mac),
            Interface {
                name: cont_link.name.clone(),
                mac: cont_link.mac.map(netlink::format_mac),
                sandbox: Some(sandbox),
                ..Interface::default()
            },
        ],
        ..CniResult::default()
    };

    // IPAM before the spoof check (the reference has them the other way round): the
    // spoof-check chains are named after the attachment, so they may be a running pod's
    // when a runtime reuses its container ID; IPAM refuses such an ADD ("duplicate
    // allocation") before anything named after the attachment is touched or undone.
    let ipam = if conf.is_layer3() {
        // The whole stdin goes to IPAM, as the reference (ipam.ExecAdd).
        let raw = cni::delegate::add(&conf.ipam_type, &args.stdin, args)?;
        undo.push(Action::IpamDel(conf.ipam_type.clone()));
        Some(raw)
    } else {
        None
    };

    if conf.mac_spoof_chk {
        let id = firewall::spoofcheck::unique_id(&args.container_id, &args.ifname);
        let mac = cont_link.mac.map(netlink::format_mac).unwrap_or_default();
        undo.push(Action::MacspoofTeardown(id.clone()));
        firewall::SpoofCheck::system()
            .setup(&host_veth.name, &mac, &id)
            .map_err(|e| Error::spoofcheck("setup", e))?;
    }

    if let Some(raw) = ipam {
        let ipam = CniResult::from_json(&raw, &args.version.as_str())?;
        if ipam.ips.is_empty() {
            return Err(Error::State(
                "IPAM plugin returned missing IP config".into(),
            ));
        }
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        result.dns = ipam.dns;

        let gateways = calc_gateways(&mut result, conf);
        let ips: Vec<IpNetwork> = result.ips.iter().map(|ip| ip.address).collect();
        std::thread::scope(|s| -> Result<()> {
            // The masquerade rules depend only on the attachment and the IPAM addresses,
            // so the firewall tool (a process of its own, ~3 ms) runs while we configure
            // the pod and the gateway. It is joined before the port wait, so errors keep
            // the reference's precedence: a container or gateway error is returned first
            // (the scope joins the thread; the rollback then removes whatever it added).
            let masq = masq.map(|m| {
                undo.push(Action::MasqTeardown(m.att.clone()));
                s.spawn(move || {
                    // Its result does not matter: without it, setup reads the rules itself.
                    let _ = m.prefetch.join();
                    m.backend
                        .setup(&m.att, &ips)
                        .context("failed to setup IP masquerade")
                })
            });
            configure_container(&mut cont, &ns, &cont_link, &result, conf, &args.ifname)?;
            if conf.is_gateway {
                setup_gateways(&mut host, &bridge, &gateways, conf, &mut result)?;
            }
            match masq.map(|h| h.join()) {
                None | Some(Ok(Ok(()))) => Ok(()),
                Some(Ok(Err(e))) => Err(e),
                Some(Err(panic)) => std::panic::resume_unwind(panic),
            }
        })?;
    } else if !conf.disable_container_interface {
        // Layer 2 only: the container end still has to be up.
        cont.set_up(cont_link.index)
            .context(format!("failed to set {:?} up", args.ifname))?;
    }

    let host_veth = if conf.disable_container_interface {
        // The container end stays down, so the port can never come up: nothing to wait for.
        refresh(&mut host, &host_veth)?
    } else {
        wait_port_up(&mut host, &host_veth)?
    };

    // Both MACs can change after ADD started: the host veth's when enslaved, the bridge's
    // when its first port or address arrives (plugins#805, fixed upstream in v1.2.0).
    result.interfaces[1].mac = host_veth.mac.map(netlink::format_mac);
    let bridge = refresh(&mut host, &bridge)?;
    result.interfaces[0].mac = bridge.mac.map(netlink::format_mac);

    // A conf `dns` overrides the IPAM one (HEAD behaviour).
    if conf.dns.is_set() {
        result.dns = conf.dns.to_result();
    }
    // Every step is on the undo list by now: a panic here must roll all of them back.
    cni::fault::point("bridge-add-end");
    Ok(result)
}

/// Creates the bridge if needed (an existing one is reused as is, MTU included), checks
/// that it is a bridge, sets promiscuous mode, `accept_ra=0` and brings it up.
fn ensure_bridge(nl: &mut Netlink, conf: &BridgeConf) -> Result<Link> {
    let br = nl
        .ensure_bridge(&conf.bridge, conf.mtu, conf.vlan_filtering())
        .context(format!("could not add {:?}", conf.bridge))?
        .ok_or_else(|| {
            Error::State(format!(
                "could not lookup {:?}: Link not found",
                conf.bridge
            ))
        })?;
    let br = check_bridge(br, &conf.bridge)?;
    // VLAN isolation needs a filtering bridge; a kernel before 4.3 creates it without
    // filtering (it ignores the attribute), and a bridge made by someone else may not filter.
    if conf.vlan_filtering() && br.vlan_filtering != Some(true) {
        return Err(Error::State(format!(
            "bridge {:?} does not filter VLANs, so \"vlan\"/\"vlanTrunk\" would not isolate pods (VLAN filtering at bridge creation needs Linux 4.3)",
            conf.bridge
        )));
    }
    if conf.promisc_mode {
        nl.set_promisc(br.index, true).context(format!(
            "could not set promiscuous mode on {:?}",
            conf.bridge
        ))?;
    }
    // We own the routes of this interface: no router advertisements. Best effort, as the
    // reference (IPv6 may be disabled on the node).
    if let Err(e) = sysctl::set(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0") {
        log::debug!("accept_ra on {}: {e}", conf.bridge);
    }
    if !br.up {
        nl.set_up(br.index)
            .context(format!("could not set {:?} up", conf.bridge))?;
    }
    Ok(br)
}

/// Looks a bridge up by name: missing → error, not a bridge → the reference's message.
pub fn bridge_by_name(nl: &mut Netlink, name: &str) -> Result<Link> {
    let link = nl
        .link_by_name(name)
        .context(format!("could not lookup {name:?}"))?
        .ok_or_else(|| Error::State(format!("could not lookup {name:?}: Link not found")))?;
    check_bridge(link, name)
}

/// The reference's error for a link of the bridge's name that is not a bridge.
fn check_bridge(link: Link, name: &str) -> Result<Link> {
    if link.kind.as_deref() != Some("bridge") {
        return Err(Error::State(format!(
            "{name:?} already exists but is not a bridge"
        )));
    }
    Ok(link)
}

/// Creates the veth pair from the node in one request, the container end placed straight
/// into the pod netns under CNI_IFNAME; the host end gets a random `vethXXXXXXXX` name,
/// retried when taken. Returns the host end and a netlink socket in the pod netns.
///
/// No lookup of CNI_IFNAME in the pod before creating: a taken name fails the create with
/// EEXIST, which is told apart from a taken host name below (same error as a lookup would
/// give), and the lookup cost a round trip plus a thread in the pod netns on every ADD.
fn create_veth(
    host: &mut Netlink,
    ns: &Netns,
    args: &CmdArgs,
    conf: &BridgeConf,
    undo: &mut Undo<'_>,
) -> Result<(Link, Netlink)> {
    let ifname = &args.ifname;
    let exists_err = || {
        Error::State(format!(
            "container veth name provided ({ifname}) already exists"
        ))
    };
    for _ in 0..VETH_NAME_ATTEMPTS {
        let host_name = netlink::random_veth_name();
        match host.create_veth(&host_name, ifname, ns, conf.mtu, conf.mac) {
            Ok(()) => {
                undo.push(Action::DeleteHostVeth(host_name.clone()));
                let host_link = lookup(host, &host_name)?;
                let cont = enter_pod(ns)?;
                return Ok((host_link, cont));
            }
            Err(e) if e.is_exists() => {
                // Either our random name is taken (retry) or the container name is.
                let taken = host
                    .link_by_name(&host_name)
                    .context("failed to lookup host veth name")?
                    .is_some();
                if !taken {
                    return Err(exists_err());
                }
            }
            Err(e) => {
                return Err(Error::Netlink {
                    context: format!("failed to create veth for {ifname:?}"),
                    source: e,
                });
            }
        }
    }
    Err(Error::State(format!(
        "failed to find a free host veth name in {VETH_NAME_ATTEMPTS} attempts"
    )))
}

/// Opens the pod's netlink socket, on a thread that enters the pod netns for it. Nothing
/// else is done there: the container side is set up over that socket. The sysctls the
/// reference writes in the pod are IPv6 ones, written only for a pod with an IPv6 address
/// ([`configure_container`]), and `arp_notify`, sent over netlink.
fn enter_pod(ns: &Netns) -> Result<Netlink> {
    netns::run_in(ns, || -> netlink::Result<Netlink> { Netlink::new() })
        .and_then(|r| r)
        .context(format!(
            "failed to open netlink in netns {:?}",
            ns.path().display()
        ))
}

fn best_effort_sysctl(key: &str, v: &str) {
    if let Err(e) = sysctl::set(key, v) {
        log::debug!("{key}: {e}");
    }
}

fn lookup(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link_by_name(name)
        .context(format!("failed to lookup {name:?}"))?
        .ok_or_else(|| Error::State(format!("failed to lookup {name:?}: link not found")))
}

fn refresh(nl: &mut Netlink, link: &Link) -> Result<Link> {
    nl.link_by_index(link.index)
        .context(format!("failed to lookup {:?}", link.name))?
        .ok_or_else(|| Error::State(format!("failed to lookup {:?}: link not found", link.name)))
}

/// Host end: up, no RAs, enslaved, hairpin/isolation, VLANs.
fn setup_host_port(
    host: &mut Netlink,
    veth: &Link,
    bridge: &Link,
    conf: &BridgeConf,
) -> Result<()> {
    host.set_up(veth.index)
        .context(format!("failed to set {:?} up", veth.name))?;
    if let Err(e) = sysctl::set(&format!("net/ipv6/conf/{}/accept_ra", veth.name), "0") {
        log::debug!("accept_ra on {}: {e}", veth.name);
    }
    host.set_master(veth.index, bridge.index).context(format!(
        "failed to connect {:?} to bridge {}",
        veth.name, bridge.name
    ))?;
    host.set_bridge_port(veth.index, conf.hairpin_mode, conf.port_isolation)
        .context(format!("failed to setup hairpin mode for {}", veth.name))?;
    vlan::setup_port(host, veth, conf)
}

/// Container side: DAD and ARP sysctls, addresses, then routes (an empty `gw` takes the
/// family's gateway), as the reference's `ConfigureIface`.
fn configure_container(
    cont: &mut Netlink,
    ns: &Netns,
    link: &Link,
    result: &CniResult,
    conf: &BridgeConf,
    ifname: &str,
) -> Result<()> {
    let has_v6 = result.ips.iter().any(|ip| ip.address.is_ipv6());
    let enable_dad = conf.enable_dad;
    // The IPv6 sysctls need a thread in the pod netns (/proc/sys/net is the opening
    // thread's netns), and are written for a pod with an IPv6 address only. The reference
    // writes the DAD ones for every pod; for a pod without IPv6 they only concern its
    // link-local address, and each first `/proc/sys/net` lookup in a pod netns costs a
    // walk over one dentry per netns that looked the same name up before (about 3 ms at
    // 1000 pods), so a node's 1000th pod would cost 2-3× its first. Only `disable_ipv6`
    // is fatal, as in the reference.
    if has_v6 {
        netns::run_in(ns, || -> Result<()> {
            if enable_dad {
                best_effort_sysctl(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                best_effort_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
            } else {
                best_effort_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
            }
            for iface in ["lo", ifname] {
                sysctl::ensure(&format!("net/ipv6/conf/{iface}/disable_ipv6"), "0")
                    .context(format!("failed to enable IPv6 for interface {iface:?}"))?;
            }
            // Keep the addresses if the runtime bounces the link (v1.7.0+).
            best_effort_sysctl(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1");
            Ok(())
        })
        .context("failed to enter the container netns")??;
    }

    // Best effort, as the reference's sysctl write.
    if let Err(e) = cont.enable_arp_notify(link.index) {
        log::debug!("arp_notify on {ifname}: {e}");
    }
    cont.set_up(link.index)
        .context(format!("failed to set {ifname:?} UP"))?;
    let (mut v4gw, mut v6gw) = (None, None);
    for ipc in &result.ips {
        cont.add_addr(link.index, ipc.address).context(format!(
            "failed to add IP addr {} to {ifname:?}",
            ipc.address
        ))?;
        let slot = if ipc.address.is_ipv4() {
            &mut v4gw
        } else {
            &mut v6gw
        };
        if slot.is_none() {
            *slot = ipc.gateway;
        }
    }
    if v6gw.is_some() && enable_dad {
        settle_addresses(cont, link, ifname)?;
    }
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.is_ipv4() { v4gw } else { v6gw });
        let entry = RouteEntry {
            gw,
            oif: Some(link.index),
            table: r.table,
            scope: r.scope,
            priority: r.priority,
            mtu: r.mtu,
            advmss: r.advmss,
            ..RouteEntry::new(r.dst)
        };
        match cont.add_route(&entry) {
            // The same route twice (e.g. an IPAM default route without gw plus ours).
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(Error::Netlink {
                    context: format!(
                        "failed to add route '{} via {} dev {ifname}'",
                        r.dst,
                        gw.map_or_else(|| "<nil>".to_owned(), |g| g.to_string())
                    ),
                    source: e,
                });
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Waits until no IPv6 address of the link is tentative (DAD done); DAD failure is an
/// error. Only reached with `enabledad`: with DAD off addresses are never tentative.
fn settle_addresses(cont: &mut Netlink, link: &Link, ifname: &str) -> Result<()> {
    match cont
        .settle_addresses(link.index, DAD_TIMEOUT, DAD_POLL)
        .context(format!("could not list addresses of {ifname}"))?
    {
        Settled::Done => Ok(()),
        Settled::DadFailed(a) => Err(Error::State(format!(
            "{a} could not complete DAD on {ifname}"
        ))),
        Settled::StillTentative => Err(Error::State(format!(
            "link {ifname} still has tentative addresses after {}s",
            DAD_TIMEOUT.as_secs()
        ))),
    }
}

/// Puts each gateway address on the bridge (or the VLAN gateway interface) and enables
/// forwarding for its family.
fn setup_gateways(
    host: &mut Netlink,
    bridge: &Link,
    gws: &Gateways,
    conf: &BridgeConf,
    result: &mut CniResult,
) -> Result<()> {
    let mut target = bridge.clone();
    if conf.vlan != 0 && !(gws.v4.is_empty() && gws.v6.is_empty()) {
        target = vlan::ensure_gateway_interface(host, bridge, conf)
            .context("failed to create vlan interface")?;
        result
            .interfaces
            .push(host_interface(&target.name, target.mac));
    }
    for (list, key) in [
        (&gws.v4, "net/ipv4/ip_forward"),
        (&gws.v6, "net/ipv6/conf/all/forwarding"),
    ] {
        for gw in list {
            ensure_addr(host, &target, *gw, conf.force_address).context(if conf.vlan != 0 {
                "failed to set vlan interface for bridge with addr"
            } else {
                "failed to set bridge addr"
            })?;
        }
        if !list.is_empty() {
            // Written only when not already 1: each write re-applies forwarding to every
            // interface of the node.
            sysctl::ensure(key, "1").context("failed to enable forwarding")?;
        }
    }
    Ok(())
}

/// Go's `ensureAddr`: the gateway address on the bridge ([`Netlink::ensure_addr`]), then
/// the bridge MAC pinned ([`pin_mac`]) when the address is new. An address already there
/// leaves the MAC alone, unless an ADD killed after adding the address but before pinning
/// left it floating (the reference never pins it then, plugins#1265).
fn ensure_addr(nl: &mut Netlink, link: &Link, gw: IpNetwork, force: bool) -> Result<()> {
    match nl
        .ensure_addr(link.index, gw, force)
        .context(format!("could not set IP address {gw} on {:?}", link.name))?
    {
        Ensured::Conflict(_) => Err(Error::State(format!(
            "{:?} already has an IP address different from {gw}",
            link.name
        ))),
        Ensured::Present if mac_pinned(&link.name) != Some(false) => Ok(()),
        Ensured::Present | Ensured::Added => pin_mac(nl, link),
    }
}

/// Pins the bridge's MAC to its current value: otherwise the bridge takes the lowest MAC of
/// its ports, and it changes as pods come and go (the gateway's MAC in every pod's ARP cache
/// goes stale; CHECK finds the bridge's MAC changed). A bridge without ports has no MAC
/// (all zeros) to pin.
fn pin_mac(nl: &mut Netlink, link: &Link) -> Result<()> {
    if let Some(mac) = refresh(nl, link)?.mac.filter(|m| *m != [0; 6]) {
        nl.set_mac(link.index, mac)
            .context(format!("could not set {:?} mac", link.name))?;
    }
    Ok(())
}

/// Whether `name`'s MAC was set explicitly (`NET_ADDR_SET`, 3, in sysfs' `addr_assign_type`,
/// Linux 3.9), so that the kernel keeps it. None when sysfs cannot tell (not mounted for this
/// netns): then it is left as it is, as the reference does. Not asked over netlink, which does
/// not report it; setting the MAC on every ADD instead would flush the node's neighbour
/// entries on the bridge each time (`NETDEV_CHANGEADDR`).
fn mac_pinned(name: &str) -> Option<bool> {
    let t = std::fs::read_to_string(format!("/sys/class/net/{name}/addr_assign_type")).ok()?;
    Some(t.trim() == "3")
}

/// Waits until the host veth is operationally UP, i.e. the bridge port forwards (see
/// [`Netlink::wait_oper_up`]).
///
/// Why wait at all: with both ends admin-up the veth has carrier at once, but the
/// operstate and the bridge port's transition to forwarding are applied by the kernel's
/// linkwatch work, asynchronously. Until then the bridge drops the pod's first frames
/// (its gratuitous ARP, the first DNS query). The reference sleeps 0, 50, 500, 1000,
/// 1000 ms between checks; a veth event is "urgent" for linkwatch, so the state flips
/// within microseconds and those sleeps cost up to 50 ms for nothing. We check at once
/// and then poll the netlink state every 2 ms, bounded by the reference's total budget,
/// failing with its message if the port never comes up.
fn wait_port_up(host: &mut Netlink, veth: &Link) -> Result<Link> {
    let start = Instant::now();
    let waited = host
        .wait_oper_up(veth.index, PORT_UP_TIMEOUT, PORT_UP_POLL)
        .context(format!("failed to lookup {:?}", veth.name))?;
    match waited {
        Waited::Up { link, polls } => {
            log::debug!(
                "{} up after {polls} waits ({:?})",
                veth.name,
                start.elapsed()
            );
            Ok(link)
        }
        Waited::TimedOut(link) => Err(Error::State(format!(
            "bridge port in error state: {}",
            if link.up { "down" } else { "admin down" }
        ))),
        Waited::Gone => Err(Error::State(format!(
            "failed to lookup {:?}: link not found",
            veth.name
        ))),
    }
}
