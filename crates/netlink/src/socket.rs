//! The request/ACK/dump loop over one blocking `NETLINK_ROUTE` socket.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::compat;
use crate::netns::{self, Netns};
use crate::{Error, Result};

/// Receive buffer size. The kernel sizes dump datagrams to what the reader asked for, capped at
/// 32 KiB (`netlink_recvmsg` caps `max_recvmsg_len`), so 64 KiB always holds a whole datagram;
/// MSG_TRUNC still catches a larger single reply.
const RECV_BUF_SIZE: usize = 64 * 1024;

/// How many times a dump is restarted when the kernel flags it NLM_F_DUMP_INTR (the object
/// list changed while it was being dumped). Same budget as the reference's `netlinksafe`.
const DUMP_ATTEMPTS: u32 = 5;

/// NLMSGERR_ATTR_MSG: the extended-ACK TLV carrying the kernel's error string.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A blocking rtnetlink socket bound to the netns it was created in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    strict: bool,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("seq", &self.seq)
            .field("strict", &self.strict)
            .finish()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's netns, with every optional feature the kernel
    /// has (none when [`compat::fallbacks_forced`]).
    pub fn new() -> Result<Self> {
        Self::open(!compat::fallbacks_forced())
    }

    /// Opens a socket that asks for no optional feature, as on a kernel before 4.3: the
    /// kernel then dumps everything and errors come without its text.
    pub fn without_optional_features() -> Result<Self> {
        Self::open(false)
    }

    fn open(optional_features: bool) -> Result<Self> {
        let op = "open netlink socket";
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io(op, e))?;
        sock.bind_auto().map_err(|e| Error::io(op, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(op, e))?;
        let mut strict = false;
        if !optional_features {
            log::debug!(
                "netlink socket without strict checking or extended ACKs (old-kernel path)"
            );
        } else {
            // Strict checking (4.20) makes the kernel honour the filters in dump request
            // headers (e.g. ifa_index for address dumps) instead of dumping everything; the
            // dumps are filtered here as well, so an older kernel (ENOPROTOOPT) only costs
            // a longer dump.
            match sock.set_netlink_get_strict_chk(true) {
                Ok(()) => strict = true,
                Err(e) => log::debug!("netlink strict checking unavailable: {e}"),
            }
            // Extended ACKs (4.12) carry the kernel's error string ("Unknown device type",
            // ...); capped ACKs (4.3) stop the kernel from echoing our whole request back.
            if let Err(e) = sock.set_ext_ack(true).and_then(|_| sock.set_cap_ack(true)) {
                log::debug!("netlink extended ack unavailable: {e}");
            }
        }
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_SIZE),
            strict,
        })
    }

    /// Whether the kernel filters dumps by their request headers (NETLINK_GET_STRICT_CHK).
    /// Dumps are filtered here either way.
    pub fn strict_checking(&self) -> bool {
        self.strict
    }

    /// Opens a socket inside `ns` (on a short-lived thread there); the socket stays bound to
    /// `ns` and can be used from any thread.
    pub fn in_netns(ns: &Netns) -> Result<Self> {
        netns::run_in(ns, Netlink::new)?
    }

    /// Sends a non-dump request with NLM_F_ACK and returns the replies received before the ACK.
    ///
    /// Always asking for the ACK keeps one termination rule: a GET without NLM_F_ACK gets exactly
    /// one reply and no ACK, and a loop waiting for the ACK would block forever.
    pub(crate) fn execute(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.receive(seq, false).map(|(replies, _)| replies)
    }

    /// Sends a dump request and returns every message of the dump, restarting it when the
    /// kernel flags it as interrupted.
    pub(crate) fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        for attempt in 1..=DUMP_ATTEMPTS {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            let (replies, interrupted) = self.receive(seq, true)?;
            if !interrupted {
                return Ok(replies);
            }
            log::debug!("netlink dump interrupted (attempt {attempt}), retrying");
        }
        Err(Error::DumpInterrupted {
            op: "netlink dump".into(),
            attempts: DUMP_ATTEMPTS,
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock
            .send(&out, 0)
            .map_err(|e| Error::io("netlink send", e))?;
        Ok(self.seq)
    }

    /// Reads datagrams until the ACK (non-dump) or NLMSG_DONE (dump) of request `seq`.
    /// Returns the replies and whether any of them carried NLM_F_DUMP_INTR.
    fn receive(&mut self, seq: u32, dump: bool) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|e| Error::io("netlink receive", e))?;
            if n > self.buf.len() {
                return Err(Error::Protocol(format!(
                    "reply of {n} bytes truncated to {}",
                    self.buf.len()
                )));
            }
            let mut offset = 0;
            while offset < n {
                let data = &self.buf[offset..n];
                let len = NetlinkBuffer::new_checked(data)
                    .map_err(|e| Error::Protocol(e.to_string()))?
                    .length() as usize;
                let raw = &data[..len];
                offset += align4(len);
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw);
                let msg = match parsed {
                    Ok(msg) => msg,
                    // One exotic link must not break a whole dump; a direct reply must parse.
                    Err(e) if dump => {
                        log::warn!("skipping undecodable netlink message: {e}");
                        continue;
                    }
                    Err(e) => return Err(Error::Protocol(e.to_string())),
                };
                if msg.header.sequence_number != seq {
                    // A late reply to an earlier request (one we gave up on); not ours.
                    log::debug!(
                        "ignoring netlink message with seq {}",
                        msg.header.sequence_number
                    );
                    continue;
                }
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                let flags = msg.header.flags;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(kernel_error(done.code, &done.extended_ack, false));
                    }
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    NetlinkPayload::Error(err) => match err.code {
                        None if !dump => return Ok((replies, interrupted)),
                        None => {}
                        Some(code) => {
                            return Err(kernel_error(
                                code.get(),
                                &err.header,
                                flags & NLM_F_CAPPED == 0,
                            ));
                        }
                    },
                    _ => {}
                }
            }
        }
    }
}

pub(crate) fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Builds [`Error::Kernel`] from a negative errno and the bytes that follow it in
/// NLMSG_ERROR/NLMSG_DONE.
fn kernel_error(code: i32, trailer: &[u8], echoes_request: bool) -> Error {
    Error::Kernel {
        op: "netlink request".into(),
        errno: code.saturating_abs(),
        detail: ext_ack_message(trailer, echoes_request),
    }
}

/// Extracts NLMSGERR_ATTR_MSG from an error trailer: the original request (whole, or only its
/// 16-byte header when the ACK is capped) followed by extended-ACK TLVs.
pub(crate) fn ext_ack_message(trailer: &[u8], echoes_request: bool) -> Option<String> {
    let skip = if echoes_request {
        let len = u32::from_ne_bytes(trailer.get(..4)?.try_into().ok()?) as usize;
        align4(len)
    } else {
        16
    };
    let mut tlvs = trailer.get(skip..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get(align4(len)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn ext_ack_capped() {
        let mut trailer = vec![0u8; 16];
        trailer.extend(tlv(2, &[1, 2, 3, 4]));
        trailer.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device type\0"));
        assert_eq!(
            ext_ack_message(&trailer, false).as_deref(),
            Some("Unknown device type")
        );
    }

    #[test]
    fn ext_ack_full_echo() {
        // Original request of 22 bytes (padded to 24), then the TLV.
        let mut trailer = 22u32.to_ne_bytes().to_vec();
        trailer.resize(24, 0);
        trailer.extend(tlv(NLMSGERR_ATTR_MSG, b"boom\0"));
        assert_eq!(ext_ack_message(&trailer, true).as_deref(), Some("boom"));
        assert_eq!(ext_ack_message(&trailer[..24], true), None);
        assert_eq!(ext_ack_message(&[], false), None);
    }

    #[test]
    fn kernel_error_keeps_positive_errno() {
        let e = kernel_error(-libc::EEXIST, &[], false);
        assert!(e.is_exists());
    }
}
