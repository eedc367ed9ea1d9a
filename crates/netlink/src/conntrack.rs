//! Conntrack entries over ctnetlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`):
//! list one family's table and delete the entries a [`Filter`] selects, in the calling
//! thread's netns, without spawning `conntrack`.
//!
//! The portmap plugin uses it after mapping a UDP host port: a client that sent to that port
//! before the mapping existed has a conntrack entry without the DNAT, and as long as it keeps
//! sending (UDP entries live as long as traffic flows) its packets follow the old entry, not
//! the new rule. The reference (`netlink.ConntrackDeleteFilters`) dumps and deletes the same way.
//!
//! Kernel compatibility: the dump carries no kernel-side filter (`CTA_FILTER` needs 5.8; older
//! kernels ignore what they do not know) and the socket does not ask for
//! `NETLINK_GET_STRICT_CHK` (4.20+): every entry of the family is dumped and filtered here.
//! Entries are deleted after the dump, one request each, by their original tuple and zone;
//! an entry that expired meanwhile (ENOENT) is not an error.

use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::{Error, Result};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NFNETLINK_V0: u8 = 0;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// nlmsghdr (16) + nfgenmsg (4).
const HEADER_LEN: usize = 20;
/// See [`crate::socket`]: dump datagrams are at most 32 KiB.
const RECV_BUF_SIZE: usize = 64 * 1024;

/// IP protocol numbers the filter is usually given.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// The original-direction tuple of a conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// IP protocol number.
    pub protocol: u8,
    /// Original source address.
    pub src: IpAddr,
    /// Original destination address.
    pub dst: IpAddr,
    /// Original source port (0 for protocols without ports).
    pub src_port: u16,
    /// Original destination port.
    pub dst_port: u16,
    /// The raw CTA_TUPLE_ORIG and CTA_ZONE attributes, what a delete request names.
    key: Vec<u8>,
}

/// Which entries to delete: protocol, and original destination port in `dst_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// IP protocol number ([`proto`]).
    pub protocol: u8,
    /// Original destination ports (any, when empty).
    pub dst_ports: Vec<u16>,
}

impl Filter {
    fn matches(&self, e: &Entry) -> bool {
        e.protocol == self.protocol
            && (self.dst_ports.is_empty() || self.dst_ports.contains(&e.dst_port))
    }
}

/// A ctnetlink socket in the calling thread's netns.
struct Ctnetlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Ctnetlink {
    fn new() -> Result<Self> {
        let op = "open ctnetlink socket";
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| Error::io(op, e))?;
        sock.bind_auto().map_err(|e| Error::io(op, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(op, e))?;
        Ok(Ctnetlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_SIZE),
        })
    }

    fn send(&mut self, msg_type: u16, flags: u16, family: u8, attrs: &[u8]) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = HEADER_LEN + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
        m.extend_from_slice(attrs);
        self.sock
            .send(&m, 0)
            .map_err(|e| Error::io("ctnetlink send", e))?;
        Ok(self.seq)
    }

    /// Reads until the DONE (dump) or ACK of request `seq`, handing every data message's
    /// payload (after the nfgenmsg) to `each`.
    fn receive(&mut self, seq: u32, op: &str, mut each: impl FnMut(&[u8])) -> Result<()> {
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|e| Error::io("ctnetlink receive", e))?;
            if n > self.buf.len() {
                return Err(Error::Protocol(format!("{op}: reply truncated")));
            }
            let mut data = &self.buf[..n];
            while data.len() >= 16 {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if len < 16 || len > data.len() {
                    return Err(Error::Protocol(format!("{op}: bad message length {len}")));
                }
                let msg_type = u16::from_ne_bytes([data[4], data[5]]);
                let msg_seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                let body = &data[16..len];
                data = data.get(align4(len)..).unwrap_or_default();
                if msg_seq != seq {
                    continue;
                }
                match msg_type {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EPROTO);
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(Error::Kernel {
                            op: op.to_string(),
                            errno: code.saturating_abs(),
                            detail: None,
                        });
                    }
                    t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                        each(body.get(4..).unwrap_or_default());
                    }
                    _ => {}
                }
            }
        }
    }

    fn dump(&mut self, family: u8) -> Result<Vec<Entry>> {
        let seq = self.send(IPCTNL_MSG_CT_GET, NLM_F_DUMP, family, &[])?;
        let mut out = Vec::new();
        let mut bad = None;
        self.receive(seq, "dump conntrack", |payload| {
            match parse_entry(payload) {
                Some(e) => out.push(e),
                None => bad = Some(payload.len()),
            }
        })?;
        if let Some(len) = bad {
            log::debug!("skipped an undecodable conntrack entry ({len} bytes)");
        }
        Ok(out)
    }

    fn delete(&mut self, family: u8, e: &Entry) -> Result<()> {
        let seq = self.send(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, family, &e.key)?;
        match self.receive(seq, "delete conntrack entry", |_| {}) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

fn family_of(v6: bool) -> u8 {
    if v6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    }
}

/// The conntrack entries of one family (`v6`), in the calling thread's netns.
pub fn list(v6: bool) -> Result<Vec<Entry>> {
    Ctnetlink::new()?.dump(family_of(v6))
}

/// Deletes the entries of one family that `filter` selects; returns how many were deleted.
pub fn delete(v6: bool, filter: &Filter) -> Result<usize> {
    let family = family_of(v6);
    let mut ct = Ctnetlink::new()?;
    let doomed: Vec<Entry> = ct
        .dump(family)?
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    for e in &doomed {
        ct.delete(family, e)?;
    }
    Ok(doomed.len())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// (type without flags, payload, whole attribute) of each attribute in `data`.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let whole = &data[..len];
        data = data.get(align4(len)..).unwrap_or_default();
        Some((kind, &whole[4..], whole))
    })
}

fn find(data: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(data).find(|(k, _, _)| *k == kind).map(|(_, p, _)| p)
}

fn be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))
}

fn ip(p: &[u8]) -> Option<IpAddr> {
    match p.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(p).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(p).ok()?)),
        _ => None,
    }
}

/// Decodes an IPCTNL_MSG_CT_NEW payload (attributes after the nfgenmsg).
fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let mut key = Vec::new();
    let mut orig = None;
    for (kind, p, whole) in attrs(payload) {
        match kind {
            CTA_TUPLE_ORIG => {
                orig = Some(p);
                key.extend_from_slice(whole);
                key.resize(align4(key.len()), 0);
            }
            CTA_ZONE => {
                key.extend_from_slice(whole);
                key.resize(align4(key.len()), 0);
            }
            _ => {}
        }
    }
    let orig = orig?;
    let ips = find(orig, CTA_TUPLE_IP)?;
    let (src, dst) = match (find(ips, CTA_IP_V4_SRC), find(ips, CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (ip(s)?, ip(d)?),
        _ => (
            ip(find(ips, CTA_IP_V6_SRC)?)?,
            ip(find(ips, CTA_IP_V6_DST)?)?,
        ),
    };
    let ports = find(orig, CTA_TUPLE_PROTO)?;
    Some(Entry {
        protocol: *find(ports, CTA_PROTO_NUM)?.first()?,
        src,
        dst,
        src_port: find(ports, CTA_PROTO_SRC_PORT).and_then(be16).unwrap_or(0),
        dst_port: find(ports, CTA_PROTO_DST_PORT).and_then(be16).unwrap_or(0),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLA_F_NESTED: u16 = 0x8000;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let ips = [nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)].concat();
        let ports = [
            nla(CTA_PROTO_NUM, &[proto]),
            nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
        ]
        .concat();
        [
            nla(CTA_TUPLE_IP | NLA_F_NESTED, &ips),
            nla(CTA_TUPLE_PROTO | NLA_F_NESTED, &ports),
        ]
        .concat()
    }

    #[test]
    fn parses_an_entry_and_keeps_its_key() {
        let orig = nla(
            CTA_TUPLE_ORIG | NLA_F_NESTED,
            &tuple([10, 0, 0, 1], [10, 0, 0, 2], proto::UDP, 40000, 5353),
        );
        let reply = nla(
            2 | NLA_F_NESTED,
            &tuple([10, 0, 0, 9], [10, 0, 0, 1], proto::UDP, 53, 40000),
        );
        let zone = nla(CTA_ZONE, &7u16.to_be_bytes());
        let status = nla(3, &0u32.to_be_bytes());
        let payload = [orig.clone(), reply, status, zone.clone()].concat();
        let e = parse_entry(&payload).expect("entry");
        assert_eq!(e.protocol, proto::UDP);
        assert_eq!(e.src, "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(e.dst, "10.0.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!((e.src_port, e.dst_port), (40000, 5353));
        // The delete request names the original tuple and the zone, nothing else.
        assert_eq!(e.key, [orig, zone].concat());
        let f = Filter {
            protocol: proto::UDP,
            dst_ports: vec![1, 5353],
        };
        assert!(f.matches(&e));
        assert!(
            !Filter {
                protocol: proto::TCP,
                ..f.clone()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                dst_ports: vec![53],
                ..f
            }
            .matches(&e)
        );
        assert!(parse_entry(&[]).is_none());
        assert!(parse_entry(&[1, 2, 3]).is_none());
    }
}
