//! Links: lookup, bridge and veth creation, and the usual setters.

use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};

use crate::{Netlink, Netns, Result};

/// A network interface as seen from the socket's netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` ("bridge", "veth", ...); `None` for `lo` and physical devices.
    pub kind: Option<String>,
    /// Hardware address, when it is a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Index of the master (bridge) this link is a port of.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operational state is UP (carrier and lower layers ready).
    pub oper_up: bool,
    /// Promiscuous mode requested by the user (IFF_PROMISC; a bridge port's implicit promiscuity
    /// is not reported here, the kernel only shows user-set flags).
    pub promisc: bool,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's netns, which may be another one).
    pub peer_index: Option<u32>,
    /// Bridge-port hairpin mode; `None` when the link is not a bridge port.
    pub hairpin: Option<bool>,
    /// Bridge-port isolation; `None` when the link is not a bridge port.
    pub isolated: Option<bool>,
    /// Bridge VLAN filtering; `None` when the link is not a bridge.
    pub vlan_filtering: Option<bool>,
}

impl Link {
    /// Decodes an RTM_NEWLINK message.
    ///
    /// Hairpin/isolated come from IFLA_LINKINFO → IFLA_INFO_SLAVE_DATA, which the kernel adds
    /// to every ordinary (AF_UNSPEC) link reply for a bridge port (`rtnl_link_slave_info_fill` →
    /// `br_port_fill_slave_info`), so no AF_BRIDGE dump and no sysfs read (sysfs would show
    /// the mount's netns, not the socket's) are needed.
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            peer_index: None,
            hairpin: None,
            isolated: None,
            vlan_filtering: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(idx) => link.master = Some(*idx),
                LinkAttribute::OperState(state) => link.oper_up = *state == State::Up,
                LinkAttribute::Link(idx) => link.peer_index = Some(*idx),
                LinkAttribute::LinkInfo(infos) => link.apply_link_info(infos),
                _ => {}
            }
        }
        link
    }

    fn apply_link_info(&mut self, infos: &[LinkInfo]) {
        for info in infos {
            match info {
                LinkInfo::Kind(kind) => self.kind = Some(kind.to_string()),
                LinkInfo::Data(InfoData::Bridge(opts)) => {
                    self.vlan_filtering = Some(false);
                    for opt in opts {
                        if let InfoBridge::VlanFiltering(on) = opt {
                            self.vlan_filtering = Some(*on);
                        }
                    }
                }
                LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                    for opt in opts {
                        match opt {
                            InfoBridgePort::HairpinMode(on) => self.hairpin = Some(*on),
                            InfoBridgePort::Isolated(on) => self.isolated = Some(*on),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// RTM_NEWLINK for a bridge. `vlan_filtering` is only sent when true, so that the request
/// is the same as the reference's for the common case.
pub(crate) fn bridge_message(name: &str, mtu: Option<u32>, vlan_filtering: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    if vlan_filtering {
        info.push(LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::VlanFiltering(true),
        ])));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    msg
}

/// RTM_NEWLINK for a veth pair whose peer is created directly in another netns.
///
/// The peer's attributes (nested under VETH_INFO_PEER) carry IFLA_NET_NS_FD, so the kernel
/// creates the peer in that netns under its final name: no rename, no move, no netns switch.
/// No IFLA_TXQLEN is sent: a zero txqueuelen disables the qdisc (reference bug 3a49cff1).
pub(crate) fn veth_message(
    host_name: &str,
    peer_name: &str,
    peer_ns_fd: i32,
    mtu: Option<u32>,
    peer_mac: Option<[u8; 6]>,
) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_string()));
    if let Some(mtu) = mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    peer.attributes.push(LinkAttribute::NetNsFd(peer_ns_fd));

    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(host_name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

/// How [`Netlink::wait_oper_up`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// Operationally up, after this many polls.
    Up { link: Link, polls: u32 },
    /// Still not up at the deadline: the link as last seen.
    TimedOut(Link),
    /// The link is gone.
    Gone,
}

/// An RTM_SETLINK skeleton for link `idx`.
fn set_message(idx: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = idx;
    msg
}

impl Netlink {
    /// Looks a link up by name; `Ok(None)` when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, || format!("get link {name:?}"))
    }

    /// Looks a link up by index; `Ok(None)` when there is none.
    pub fn link_by_index(&mut self, idx: u32) -> Result<Option<Link>> {
        self.get_link(set_message(idx), || format!("get link {idx}"))
    }

    fn get_link(&mut self, msg: LinkMessage, what: impl Fn() -> String) -> Result<Option<Link>> {
        match self.execute(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.context(what())),
        }
    }

    /// All links of the socket's netns.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|e| e.context("dump links"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge. An existing link of that name gives an error with
    /// [`Error::is_exists`] (the caller decides whether that is fine).
    pub fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<()> {
        // A kernel before 4.3 ignores IFLA_BR_VLAN_FILTERING (the test switch does the same):
        // callers that need filtering read `Link::vlan_filtering` back.
        let msg = bridge_message(
            name,
            mtu,
            vlan_filtering && !crate::compat::fallbacks_forced(),
        );
        self.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|e| e.context(format!("create bridge {name:?}")))
    }

    /// The bridge `name`, created (with `mtu` and VLAN filtering) when there is no link of
    /// that name; a link that exists is returned as it is, whatever its kind and settings
    /// (the caller checks them). Looked up first: the bridge exists on every ADD but a node's
    /// first, and a create that fails with EEXIST costs a round trip under the RTNL lock, which
    /// every parallel ADD contends for. A parallel create between our lookup and ours is fine.
    /// `Ok(None)`: created, but gone again before it could be read back.
    pub fn ensure_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<Option<Link>> {
        if let Some(link) = self.link_by_name(name)? {
            return Ok(Some(link));
        }
        match self.create_bridge(name, mtu, vlan_filtering) {
            Err(e) if !e.is_exists() => return Err(e),
            _ => {}
        }
        self.link_by_name(name)
    }

    /// Waits until link `idx` is operationally up, checking at once and then every `poll`
    /// until `timeout`; the link as last seen, and how many polls that took.
    ///
    /// Why a wait: with both ends of a veth admin-up it has carrier at once, but its operstate
    /// and, on a bridge, the port's move to forwarding are applied by the kernel's linkwatch
    /// work, asynchronously (a veth's event is urgent: normally within microseconds, later
    /// when the work queues behind other RTNL holders). Until then the bridge drops what the
    /// port sends.
    pub fn wait_oper_up(
        &mut self,
        idx: u32,
        timeout: std::time::Duration,
        poll: std::time::Duration,
    ) -> Result<Waited> {
        let deadline = std::time::Instant::now() + timeout;
        let mut polls = 0;
        loop {
            let Some(link) = self.link_by_index(idx)? else {
                return Ok(Waited::Gone);
            };
            if link.oper_up {
                return Ok(Waited::Up { link, polls });
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Waited::TimedOut(link));
            }
            polls += 1;
            std::thread::sleep(poll);
        }
    }

    /// Creates a veth pair from this socket's netns in one request: `host_name` here, the peer
    /// `peer_name` directly inside `peer_ns` with `peer_mac`; both ends get `mtu`.
    /// A name collision on either side gives [`Error::is_exists`] (retry with another name).
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &Netns,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let fd = peer_ns.as_fd().as_raw_fd();
        let msg = veth_message(host_name, peer_name, fd, mtu, peer_mac);
        self.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|e| e.context(format!("create veth {host_name:?} <-> {peer_name:?}")))
    }

    /// Deletes a link (a veth takes its peer with it).
    pub fn delete_link(&mut self, idx: u32) -> Result<()> {
        self.execute(RouteNetlinkMessage::DelLink(set_message(idx)), 0)
            .map(drop)
            .map_err(|e| e.context(format!("delete link {idx}")))
    }

    fn set_link(&mut self, msg: LinkMessage, what: impl Fn() -> String) -> Result<()> {
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| e.context(what()))
    }

    fn set_flag(&mut self, idx: u32, flag: LinkFlags, on: bool, what: &str) -> Result<()> {
        let mut msg = set_message(idx);
        msg.header.change_mask = flag;
        if on {
            msg.header.flags = flag;
        }
        self.set_link(msg, || format!("set link {idx} {what}"))
    }

    /// Sets IFF_UP.
    pub fn set_up(&mut self, idx: u32) -> Result<()> {
        self.set_flag(idx, LinkFlags::Up, true, "up")
    }

    /// Clears IFF_UP.
    pub fn set_down(&mut self, idx: u32) -> Result<()> {
        self.set_flag(idx, LinkFlags::Up, false, "down")
    }

    /// Sets or clears IFF_PROMISC.
    pub fn set_promisc(&mut self, idx: u32, on: bool) -> Result<()> {
        let what = if on { "promisc on" } else { "promisc off" };
        self.set_flag(idx, LinkFlags::Promisc, on, what)
    }

    /// Enslaves `idx` to the bridge `master`.
    pub fn set_master(&mut self, idx: u32, master: u32) -> Result<()> {
        let mut msg = set_message(idx);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.set_link(msg, || format!("set link {idx} master {master}"))
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, idx: u32, mtu: u32) -> Result<()> {
        let mut msg = set_message(idx);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg, || format!("set link {idx} mtu {mtu}"))
    }

    /// Turns the link's IPv4 `arp_notify` on (a gratuitous ARP when it comes up or changes its
    /// MAC), as `net/ipv4/conf/<link>/arp_notify` would, but over netlink (`IFLA_INET_CONF`,
    /// Linux 2.6.37): a `/proc/sys/net` lookup in a fresh pod netns costs a walk over one
    /// dentry per netns that ever looked the same name up, which grows with the pods a node
    /// ever ran (about 3 ms at 1000 pods), this message does not.
    pub fn enable_arp_notify(&mut self, idx: u32) -> Result<()> {
        // Only the attributes set to non-zero are sent: the others are left as they are.
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let mut msg = set_message(idx);
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.set_link(msg, || format!("set link {idx} arp_notify 1"))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, idx: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = set_message(idx);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(msg, || {
            format!("set link {idx} address {}", crate::format_mac(mac))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn round_trip(msg: &LinkMessage) -> LinkMessage {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        LinkMessage::parse(&buf[..]).expect("parse")
    }

    #[test]
    fn veth_request_nests_peer_with_netns_fd() {
        let msg = veth_message(
            "veth0123abcd",
            "eth0",
            7,
            Some(1400),
            Some([2, 0, 0, 0, 0, 1]),
        );
        let attrs = &msg.attributes;
        assert!(attrs.contains(&LinkAttribute::IfName("veth0123abcd".into())));
        assert!(attrs.contains(&LinkAttribute::Mtu(1400)));
        assert!(
            !attrs
                .iter()
                .any(|a| matches!(a, LinkAttribute::TxQueueLen(_)))
        );
        assert!(!attrs.iter().any(|a| matches!(a, LinkAttribute::NetNsFd(_))));
        let Some(LinkAttribute::LinkInfo(info)) = attrs.last() else {
            panic!("no linkinfo: {attrs:?}")
        };
        assert_eq!(info[0], LinkInfo::Kind(InfoKind::Veth));
        let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = &info[1] else {
            panic!("no peer: {info:?}")
        };
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
                LinkAttribute::NetNsFd(7),
            ]
        );
        // The encoding is well-formed (the outer message re-parses).
        let parsed = round_trip(&msg);
        assert!(
            parsed
                .attributes
                .contains(&LinkAttribute::IfName("veth0123abcd".into()))
        );
    }

    #[test]
    fn bridge_request_vlan_filtering_only_when_asked() {
        let plain = bridge_message("cni0", None, false);
        assert_eq!(
            plain.attributes,
            vec![
                LinkAttribute::IfName("cni0".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
            ]
        );
        let parsed = round_trip(&bridge_message("cni0", Some(1450), true));
        let link = Link::from_message(&parsed);
        assert_eq!(link.name, "cni0");
        assert_eq!(link.mtu, 1450);
        assert_eq!(link.kind.as_deref(), Some("bridge"));
        assert_eq!(link.vlan_filtering, Some(true));
        assert_eq!(link.hairpin, None);
    }

    #[test]
    fn link_decodes_port_flags_and_state() {
        let mut msg = LinkMessage::default();
        msg.header.index = 5;
        msg.header.flags = LinkFlags::Up | LinkFlags::Promisc;
        msg.attributes = vec![
            LinkAttribute::IfName("veth1".into()),
            LinkAttribute::Address(vec![1, 2, 3, 4, 5, 6]),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::LinkInfo(vec![LinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::HairpinMode(true),
                InfoBridgePort::Isolated(false),
            ]))]),
        ];
        let link = Link::from_message(&msg);
        assert_eq!(link.index, 5);
        assert!(link.up && link.oper_up && link.promisc);
        assert_eq!(link.mac, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!((link.master, link.peer_index), (Some(3), Some(9)));
        assert_eq!((link.hairpin, link.isolated), (Some(true), Some(false)));
    }
}
