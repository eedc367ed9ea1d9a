//! Interface addresses.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::{Netlink, Result};

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Interface index.
    pub index: u32,
    /// Address with its prefix length (host bits kept, as `ip addr` shows it).
    pub address: IpNetwork,
    /// RT_SCOPE_* value (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// IPv6 duplicate address detection failed (IFA_F_DADFAILED).
    pub dadfailed: bool,
    /// IPv6 DAD still running (IFA_F_TENTATIVE).
    pub tentative: bool,
}

impl Addr {
    /// Decodes an RTM_NEWADDR message; `None` for families other than IPv4/IPv6.
    fn from_message(msg: &AddressMessage) -> Option<Addr> {
        let mut local = None;
        let mut address = None;
        // The header has only the low 8 flag bits; IFA_FLAGS (u32) supersedes it when present.
        let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        // IPv4: IFA_LOCAL is the interface's own address and IFA_ADDRESS the peer (they differ
        // only on point-to-point links). IPv6 sends IFA_LOCAL only for such peers too.
        let ip = local.or(address)?;
        Some(Addr {
            index: msg.header.index,
            address: IpNetwork::new(ip, msg.header.prefix_len).ok()?,
            scope: msg.header.scope.into(),
            dadfailed: flags.contains(AddressFlags::Dadfailed),
            tentative: flags.contains(AddressFlags::Tentative),
        })
    }
}

/// RTM_NEWADDR/RTM_DELADDR body for `addr` on link `idx`, shaped like vishvananda/netlink's
/// `AddrAdd` (what the reference plugins send): IPv4 gets IFA_LOCAL + IFA_ADDRESS and, below
/// /31, the computed IFA_BROADCAST; IPv6 gets IFA_ADDRESS only.
pub(crate) fn addr_message(idx: u32, addr: IpNetwork) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = idx;
    msg.header.prefix_len = addr.prefix();
    msg.header.flags = AddressHeaderFlags::empty();
    match addr {
        IpNetwork::V4(net) => {
            msg.header.family = AddressFamily::Inet;
            msg.attributes
                .push(AddressAttribute::Local(IpAddr::V4(net.ip())));
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V4(net.ip())));
            if net.prefix() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(net.broadcast()));
            }
        }
        IpNetwork::V6(net) => {
            msg.header.family = AddressFamily::Inet6;
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V6(net.ip())));
        }
    }
    msg
}

/// What [`Netlink::ensure_addr`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The address was there already.
    Present,
    /// It was added (conflicting ones removed first, with `force`).
    Added,
    /// This address conflicts, and `force` was not given: nothing changed.
    Conflict(IpNetwork),
}

/// How [`Netlink::settle_addresses`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No address is tentative any more.
    Done,
    /// Duplicate address detection failed for this address.
    DadFailed(IpNetwork),
    /// Addresses were still tentative at the deadline.
    StillTentative,
}

impl Netlink {
    /// Addresses of link `idx`, or of every link when `None`.
    pub fn addrs(&mut self, idx: Option<u32>) -> Result<Vec<Addr>> {
        let mut req = AddressMessage::default();
        // With strict checking (4.20) the kernel filters the dump by ifa_index itself; an
        // older one dumps every address, hence the filter below.
        req.header.index = idx.unwrap_or(0);
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(req))
            .map_err(|e| e.context("dump addresses"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Addr::from_message(a),
                _ => None,
            })
            .filter(|a| idx.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Adds `addr` to link `idx`. An identical address gives [`crate::Error::is_exists`].
    pub fn add_addr(&mut self, idx: u32, addr: IpNetwork) -> Result<()> {
        let msg = addr_message(idx, addr);
        self.execute(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| e.context(format!("add address {addr} to link {idx}")))
    }

    /// Makes `addr` an address of link `idx`, as the reference's `ensureAddr` does for a
    /// gateway: done when present; another address of the family that conflicts (any other
    /// IPv4 address; an IPv6 one that overlaps, since unrelated IPv6 addresses may coexist)
    /// is removed when `force`, reported otherwise, and nothing is added.
    pub fn ensure_addr(&mut self, idx: u32, addr: IpNetwork, force: bool) -> Result<Ensured> {
        let present = self.addrs(Some(idx))?;
        for a in present
            .iter()
            .filter(|a| a.address.is_ipv4() == addr.is_ipv4())
        {
            if a.address == addr {
                return Ok(Ensured::Present);
            }
            let overlaps = a.address.contains(addr.ip()) || addr.contains(a.address.ip());
            if addr.is_ipv4() || overlaps {
                if !force {
                    return Ok(Ensured::Conflict(a.address));
                }
                self.del_addr(idx, a.address)?;
            }
        }
        match self.add_addr(idx, addr) {
            Err(e) if !e.is_exists() => Err(e),
            _ => Ok(Ensured::Added),
        }
    }

    /// Waits until no IPv6 address of link `idx` is tentative (duplicate address detection
    /// done), checking at once and then every `poll` until `timeout`.
    pub fn settle_addresses(
        &mut self,
        idx: u32,
        timeout: std::time::Duration,
        poll: std::time::Duration,
    ) -> Result<Settled> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let addrs = self.addrs(Some(idx))?;
            if let Some(a) = addrs.iter().find(|a| a.dadfailed) {
                return Ok(Settled::DadFailed(a.address));
            }
            if !addrs.iter().any(|a| a.tentative && a.address.is_ipv6()) {
                return Ok(Settled::Done);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Settled::StillTentative);
            }
            std::thread::sleep(poll);
        }
    }

    /// Removes `addr` from link `idx` (EADDRNOTAVAIL when it is not there).
    pub fn del_addr(&mut self, idx: u32, addr: IpNetwork) -> Result<()> {
        let msg = addr_message(idx, addr);
        self.execute(RouteNetlinkMessage::DelAddress(msg), 0)
            .map(drop)
            .map_err(|e| e.context(format!("delete address {addr} from link {idx}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn v4_message_has_local_address_broadcast() {
        let msg = addr_message(3, net("10.1.2.3/24"));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.prefix_len, 24);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(
            msg.attributes,
            vec![
                AddressAttribute::Local(ip),
                AddressAttribute::Address(ip),
                AddressAttribute::Broadcast(Ipv4Addr::new(10, 1, 2, 255)),
            ]
        );
        let p2p = addr_message(3, net("10.1.2.3/31"));
        assert_eq!(p2p.attributes.len(), 2);
    }

    #[test]
    fn v6_message_and_decode_flags() {
        let mut msg = addr_message(4, net("fd00::5/64"));
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Tentative | AddressFlags::Permanent,
        ));
        let a = Addr::from_message(&msg).expect("decode");
        assert_eq!(a.address, net("fd00::5/64"));
        assert_eq!(a.index, 4);
        assert!(a.tentative && !a.dadfailed);
    }
}
