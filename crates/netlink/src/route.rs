//! Routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::{Netlink, Result};

/// RT_TABLE_MAIN.
pub const TABLE_MAIN: u32 = 254;
/// RT_SCOPE_UNIVERSE.
pub const SCOPE_UNIVERSE: u8 = 0;
/// RT_SCOPE_LINK.
pub const SCOPE_LINK: u8 = 253;

/// Which address family to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6.
    All,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    fn address_family(self) -> AddressFamily {
        match self {
            Family::All => AddressFamily::Unspec,
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

/// A unicast route. On read every field the kernel reports is filled; on add `None` means
/// "kernel default" except where noted on [`Netlink::add_route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (host bits are masked off when sending).
    pub dst: IpNetwork,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Routing table; `None` on add means main.
    pub table: Option<u32>,
    /// RT_SCOPE_* value; `None` on add means link without a gateway, universe with one.
    pub scope: Option<u8>,
    /// Metric (RTA_PRIORITY).
    pub priority: Option<u32>,
    /// Path MTU (RTAX_MTU).
    pub mtu: Option<u32>,
    /// Advertised MSS (RTAX_ADVMSS).
    pub advmss: Option<u32>,
}

impl RouteEntry {
    /// A route to `dst` with every other field unset.
    pub fn new(dst: IpNetwork) -> Self {
        RouteEntry {
            dst,
            gw: None,
            oif: None,
            table: None,
            scope: None,
            priority: None,
            mtu: None,
            advmss: None,
        }
    }

    /// Decodes an RTM_NEWROUTE message; `None` for non-IP families.
    fn from_message(msg: &RouteMessage) -> Option<RouteEntry> {
        let h = &msg.header;
        let mut dst = None;
        let mut r = RouteEntry::new(unspecified(h.address_family)?);
        r.table = Some(u32::from(h.table));
        r.scope = Some(h.scope.into());
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip_of(a),
                RouteAttribute::Gateway(a) => r.gw = ip_of(a),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Table(t) => r.table = Some(*t),
                RouteAttribute::Priority(p) => r.priority = Some(*p),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        match m {
                            RouteMetric::Mtu(v) => r.mtu = Some(*v),
                            RouteMetric::Advmss(v) => r.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(ip) = dst {
            r.dst = IpNetwork::new(ip, h.destination_prefix_length).ok()?;
        }
        Some(r)
    }
}

/// `0.0.0.0/0` or `::/0` for the family: what a route without RTA_DST covers.
fn unspecified(family: AddressFamily) -> Option<IpNetwork> {
    let ip = match family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNetwork::new(ip, 0).ok()
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The header and attributes common to add and delete.
fn base_message(r: &RouteEntry) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = match r.dst {
        IpNetwork::V4(_) => AddressFamily::Inet,
        IpNetwork::V6(_) => AddressFamily::Inet6,
    };
    h.destination_prefix_length = r.dst.prefix();
    // The kernel rejects a destination with host bits set ("Invalid prefix for given prefix
    // length"); CNI results may carry them (10.1.2.3/24), so send the network address.
    if r.dst.prefix() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(r.dst.network().into()));
    }
    if let Some(gw) = r.gw {
        msg.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    if let Some(oif) = r.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        msg.attributes.push(RouteAttribute::Priority(p));
    }
    msg
}

/// Puts `table` in the header when it fits in a u8 (and always in RTA_TABLE, which the kernel
/// prefers), as `ip route` does.
fn set_table(msg: &mut RouteMessage, table: u32) {
    msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RouteAttribute::Table(table));
}

/// RTM_NEWROUTE as `ip route add` builds it: protocol boot, type unicast, table main unless
/// given, scope link for a route without gateway (a directly connected prefix) and universe
/// otherwise, unless given; mtu/advmss in RTA_METRICS.
pub(crate) fn add_message(r: &RouteEntry) -> RouteMessage {
    let mut msg = base_message(r);
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    let default_scope = if r.gw.is_some() {
        SCOPE_UNIVERSE
    } else {
        SCOPE_LINK
    };
    msg.header.scope = RouteScope::from(r.scope.unwrap_or(default_scope));
    set_table(&mut msg, r.table.unwrap_or(TABLE_MAIN));
    let mut metrics = Vec::new();
    if let Some(mtu) = r.mtu {
        metrics.push(RouteMetric::Mtu(mtu));
    }
    if let Some(advmss) = r.advmss {
        metrics.push(RouteMetric::Advmss(advmss));
    }
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    msg
}

/// RTM_DELROUTE as `ip route del` builds it: protocol and type unspecified and scope
/// RT_SCOPE_NOWHERE, which the kernel treats as wildcards; only the given fields must match.
pub(crate) fn del_message(r: &RouteEntry) -> RouteMessage {
    let mut msg = base_message(r);
    msg.header.scope = RouteScope::from(r.scope.unwrap_or(u8::from(RouteScope::NoWhere)));
    set_table(&mut msg, r.table.unwrap_or(TABLE_MAIN));
    msg
}

impl Netlink {
    /// Routes of every table for `family` (unicast, local, broadcast ... as the kernel lists
    /// them; filter on `table` for main-table routes).
    pub fn routes(&mut self, family: Family) -> Result<Vec<RouteEntry>> {
        let mut req = RouteMessage::default();
        req.header.address_family = family.address_family();
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(req))
            .map_err(|e| e.context("dump routes"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => RouteEntry::from_message(r),
                _ => None,
            })
            .collect())
    }

    /// The route the kernel would use to reach `dst` (`ip route get`): its `oif` is the
    /// interface traffic to `dst` leaves by.
    pub fn route_get(&mut self, dst: IpAddr) -> Result<Option<RouteEntry>> {
        let mut req = RouteMessage::default();
        let (family, len) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        req.header.address_family = family;
        req.header.destination_prefix_length = len;
        req.attributes.push(RouteAttribute::Destination(dst.into()));
        let replies = self
            .execute(RouteNetlinkMessage::GetRoute(req), 0)
            .map_err(|e| e.context(format!("get route to {dst}")))?;
        Ok(replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => RouteEntry::from_message(r),
            _ => None,
        }))
    }

    /// Adds a route (NLM_F_CREATE without NLM_F_EXCL, as the reference's `ConfigureIface`);
    /// an identical route gives [`crate::Error::is_exists`].
    pub fn add_route(&mut self, r: &RouteEntry) -> Result<()> {
        self.execute(RouteNetlinkMessage::NewRoute(add_message(r)), NLM_F_CREATE)
            .map(drop)
            .map_err(|e| e.context(format!("add route {}", describe(r))))
    }

    /// Deletes a route (ESRCH, i.e. [`crate::Error::is_not_found`], when there is none).
    pub fn del_route(&mut self, r: &RouteEntry) -> Result<()> {
        self.execute(RouteNetlinkMessage::DelRoute(del_message(r)), 0)
            .map(drop)
            .map_err(|e| e.context(format!("delete route {}", describe(r))))
    }
}

fn describe(r: &RouteEntry) -> String {
    match r.gw {
        Some(gw) => format!("{} via {gw}", r.dst),
        None => r.dst.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn add_defaults_like_ip_route() {
        let mut r = RouteEntry::new(net("10.1.2.3/24"));
        r.oif = Some(2);
        let msg = add_message(&r);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(msg.header.protocol, RouteProtocol::Boot);
        assert_eq!(msg.header.kind, RouteType::Unicast);
        assert_eq!(msg.header.table, 254);
        assert!(msg.attributes.contains(&RouteAttribute::Destination(
            "10.1.2.0".parse::<IpAddr>().expect("ip").into()
        )));
        assert!(msg.attributes.contains(&RouteAttribute::Table(254)));

        let mut d = RouteEntry::new(net("0.0.0.0/0"));
        d.gw = Some("10.1.2.1".parse().expect("ip"));
        d.mtu = Some(1400);
        d.advmss = Some(1360);
        d.table = Some(1000);
        let msg = add_message(&d);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(msg.header.table, 0);
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(msg.attributes.contains(&RouteAttribute::Metrics(vec![
            RouteMetric::Mtu(1400),
            RouteMetric::Advmss(1360)
        ])));
    }

    #[test]
    fn decode_round_trip() {
        let mut r = RouteEntry::new(net("fd00::/64"));
        r.gw = Some("fd00::1".parse().expect("ip"));
        r.oif = Some(3);
        r.priority = Some(100);
        r.mtu = Some(1280);
        let decoded = RouteEntry::from_message(&add_message(&r)).expect("decode");
        assert_eq!(decoded.dst, r.dst);
        assert_eq!(decoded.gw, r.gw);
        assert_eq!(
            (decoded.oif, decoded.priority, decoded.mtu),
            (Some(3), Some(100), Some(1280))
        );
        assert_eq!((decoded.table, decoded.scope), (Some(254), Some(0)));
        // No RTA_DST means the default route of the family.
        let def = RouteEntry::from_message(&add_message(&RouteEntry::new(net("::/0"))));
        assert_eq!(def.expect("decode").dst, net("::/0"));
    }

    #[test]
    fn delete_uses_wildcards() {
        let msg = del_message(&RouteEntry::new(net("10.0.0.0/8")));
        assert_eq!(msg.header.scope, RouteScope::NoWhere);
        assert_eq!(msg.header.protocol, RouteProtocol::Unspec);
        assert_eq!(msg.header.kind, RouteType::Unspec);
    }
}
