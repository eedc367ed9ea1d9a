//! Bridge-port settings sent with family AF_BRIDGE: port flags (hairpin, isolation) and VLANs.
//!
//! The kernel routes AF_BRIDGE RTM_SETLINK/RTM_DELLINK of a port to its master's
//! `br_setlink`/`br_dellink`, which read IFLA_PROTINFO (port flags) and IFLA_AF_SPEC
//! (VLAN entries) — the same requests `bridge link set` and `bridge vlan add/del` send.

use netlink_packet_core::DefaultNla;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, LinkAttribute, LinkMessage,
    LinkProtoInfoBridge,
};

use crate::{Error, Netlink, Result, compat};

/// IFLA_BRPORT_MODE: hairpin mode (u8), from `linux/if_link.h`.
const IFLA_BRPORT_MODE: u16 = 4;
/// IFLA_BRPORT_ISOLATED: port isolation (u8), from `linux/if_link.h`.
const IFLA_BRPORT_ISOLATED: u16 = 33;

fn bridge_message(idx: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = idx;
    msg
}

/// AF_BRIDGE RTM_SETLINK setting hairpin mode and isolation of port `idx`. netlink-packet-route
/// 0.34 has no typed IFLA_PROTINFO entries for these two, so they go as raw u8 attributes;
/// `ProtoInfoBridge` sets NLA_F_NESTED, which `br_setlink` requires to parse them as a list.
/// Without `send_isolated` the isolation attribute is left out, as a kernel before 4.18
/// ignores it.
pub(crate) fn port_flags_message(
    idx: u32,
    hairpin: bool,
    isolated: bool,
    send_isolated: bool,
) -> LinkMessage {
    let mut msg = bridge_message(idx);
    let mut flags = vec![LinkProtoInfoBridge::Other(DefaultNla::new(
        IFLA_BRPORT_MODE,
        vec![hairpin.into()],
    ))];
    if send_isolated {
        flags.push(LinkProtoInfoBridge::Other(DefaultNla::new(
            IFLA_BRPORT_ISOLATED,
            vec![isolated.into()],
        )));
    }
    msg.attributes.push(LinkAttribute::ProtoInfoBridge(flags));
    msg
}

/// AF_BRIDGE message carrying one IFLA_BRIDGE_VLAN_INFO entry.
pub(crate) fn vlan_message(idx: u32, vid: u16, pvid: bool, untagged: bool) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut msg = bridge_message(idx);
    msg.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { flags, vid },
        )]));
    msg
}

impl Netlink {
    /// Sets hairpin mode and isolation on bridge port `idx` (it must already have a master).
    ///
    /// A kernel before 4.18 ignores the isolation attribute without an error, so a port asked
    /// to be isolated is read back: not isolated is [`Error::Unsupported`].
    pub fn set_bridge_port(&mut self, idx: u32, hairpin: bool, isolated: bool) -> Result<()> {
        let what = || format!("set bridge port {idx} hairpin {hairpin} isolated {isolated}");
        let msg = port_flags_message(idx, hairpin, isolated, !compat::fallbacks_forced());
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| e.context(what()))?;
        if isolated {
            let port = self.link_by_index(idx)?;
            if port.and_then(|l| l.isolated) != Some(true) {
                return Err(Error::Unsupported(format!(
                    "{}: the kernel ignored port isolation (IFLA_BRPORT_ISOLATED needs Linux 4.18)",
                    what()
                )));
            }
        }
        Ok(())
    }

    /// Adds VLAN `vid` to bridge port `idx`, optionally as PVID and/or egress-untagged.
    pub fn bridge_vlan_add(
        &mut self,
        idx: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
    ) -> Result<()> {
        let msg = vlan_message(idx, vid, pvid, untagged);
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| e.context(format!("add vlan {vid} to bridge port {idx}")))
    }

    /// Removes VLAN `vid` from bridge port `idx`.
    pub fn bridge_vlan_del(&mut self, idx: u32, vid: u16) -> Result<()> {
        let msg = vlan_message(idx, vid, false, false);
        self.execute(RouteNetlinkMessage::DelLink(msg), 0)
            .map(drop)
            .map_err(|e| e.context(format!("delete vlan {vid} from bridge port {idx}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn port_flags_wire_format() {
        let msg = port_flags_message(4, true, false, true);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // ifinfomsg: family AF_BRIDGE (7), index 4.
        assert_eq!(buf[0], libc::AF_BRIDGE as u8);
        assert_eq!(u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]), 4);
        // IFLA_PROTINFO (12) | NLA_F_NESTED, containing MODE=1 and ISOLATED=0.
        let nla = &buf[16..];
        assert_eq!(u16::from_ne_bytes([nla[2], nla[3]]), 12 | 0x8000);
        assert_eq!(&nla[4..10], &[5, 0, 4, 0, 1, 0]);
        assert_eq!(&nla[12..18], &[5, 0, 33, 0, 0, 0]);
        // What a kernel before 4.18 sees of it: hairpin only.
        let old = port_flags_message(4, true, true, false);
        let mut buf = vec![0u8; old.buffer_len()];
        old.emit(&mut buf);
        assert_eq!(
            u16::from_ne_bytes([buf[16], buf[17]]),
            4 + 8,
            "one u8 attribute"
        );
    }

    #[test]
    fn vlan_wire_format() {
        let msg = vlan_message(4, 100, true, true);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let nla = &buf[16..];
        // IFLA_AF_SPEC (26) { IFLA_BRIDGE_VLAN_INFO (2) { flags PVID|UNTAGGED = 6, vid 100 } }.
        assert_eq!(u16::from_ne_bytes([nla[2], nla[3]]) & 0x3fff, 26);
        assert_eq!(&nla[4..8], &[8, 0, 2, 0]);
        assert_eq!(u16::from_ne_bytes([nla[8], nla[9]]), 6);
        assert_eq!(u16::from_ne_bytes([nla[10], nla[11]]), 100);
    }
}
