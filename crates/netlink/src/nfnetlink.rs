//! NETLINK_NETFILTER (nfnetlink): requests, dumps and nf_tables transaction batches over one
//! blocking socket.
//!
//! Transport only: a message is (subsystem, type, family, flags, encoded attributes); what
//! the attributes mean is the caller's business (the nf_tables encoder lives in the
//! `firewall` crate). Unlike [`crate::Netlink`], this socket never asks for
//! `NETLINK_GET_STRICT_CHK`: nf_tables filters dumps by attributes, not by header fields,
//! and kernels before 4.20 lack the option.
//!
//! **Batches.** nf_tables changes are transactions: `NFNL_MSG_BATCH_BEGIN`, the messages,
//! `NFNL_MSG_BATCH_END`, sent in one `sendmsg`. The kernel processes the batch inside that
//! system call (the netlink kernel socket's input runs in the sender's context), so every
//! answer is queued before `send` returns. We ask for an ACK on the last message only
//! (ACKing each message would overflow the receive buffer on large batches: the kernel
//! charges ~1 KiB per queued ACK) and read without blocking: errors name the failing
//! messages by sequence number, and the last message's ACK confirms the batch was seen.
//! Any error aborts the whole batch (nothing is applied).
//!
//! **Cost of closing.** Closing a bound NETLINK_NETFILTER socket runs nf_tables' release
//! notifier, which takes the netns' nf_tables commit mutex and waits for pending deferred
//! destruction (one RCU grace period) if any transaction deleted something recently. Open
//! one socket per plugin run, not one per operation.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::compat;
use crate::netns::{self, Netns};
use crate::socket::{align4, ext_ack_message};
use crate::{Error, Result};

/// `NFNL_SUBSYS_NFTABLES`.
pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `NFNL_MSG_BATCH_END` (message types without a subsystem).
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// nlmsghdr (16) + nfgenmsg (4).
const HEADER_LEN: usize = 20;
/// Receive buffer; the kernel caps a dump datagram at 32 KiB (see `socket.rs`).
const RECV_BUF_SIZE: usize = 64 * 1024;
/// Largest batch we send in one datagram: the default socket send buffer (212992 bytes,
/// `net.core.wmem_default`) minus headroom. Callers split larger work into several batches.
pub const MAX_BATCH_BYTES: usize = 160 * 1024;
/// Dump restarts on NLM_F_DUMP_INTR (the ruleset changed while it was being dumped).
const DUMP_ATTEMPTS: u32 = 5;

/// One nfnetlink message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfMessage {
    /// Subsystem, e.g. [`NFNL_SUBSYS_NFTABLES`].
    pub subsys: u8,
    /// Message type within the subsystem (e.g. `NFT_MSG_NEWRULE`).
    pub kind: u8,
    /// `nfgen_family` (an `NFPROTO_*` value).
    pub family: u8,
    /// Flags beyond `NLM_F_REQUEST` (e.g. `NLM_F_CREATE | NLM_F_EXCL`).
    pub flags: u16,
    /// Encoded attributes (the message body after `nfgenmsg`).
    pub attrs: Vec<u8>,
}

impl NfMessage {
    /// The message's bytes with sequence number `seq` and `extra` flags added.
    pub fn encode(&self, seq: u32, extra: u16) -> Vec<u8> {
        let kind = (u16::from(self.subsys) << 8) | u16::from(self.kind);
        encode(
            kind,
            NLM_F_REQUEST | self.flags | extra,
            seq,
            self.family,
            0,
            &self.attrs,
        )
    }
}

/// One message received (a dump entry or a GET reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfReply {
    /// Subsystem of the message type.
    pub subsys: u8,
    /// Message type within the subsystem.
    pub kind: u8,
    /// `nfgen_family`.
    pub family: u8,
    /// The attributes after `nfgenmsg`.
    pub attrs: Vec<u8>,
}

/// A message of a batch that the kernel refused (the batch was not applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// Position of the message in the batch (0-based, BEGIN/END not counted); `None` when
    /// the kernel refused the batch as a whole.
    pub index: Option<usize>,
    /// Positive errno.
    pub errno: i32,
    /// The kernel's extended-ACK message, if it sent one.
    pub detail: Option<String>,
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "message {i}: ")?,
            None => f.write_str("batch: ")?,
        }
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

fn encode(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + attrs.len();
    let mut out = Vec::with_capacity(align4(len));
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(NFNETLINK_V0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    out.resize(align4(len), 0);
    out
}

/// The bytes of a whole batch: BEGIN (seq `first`), the messages (`first + 1 ..`), END.
/// Only the last message asks for an ACK. Public so tests can compare it with what `nft`
/// sends.
pub fn encode_batch(msgs: &[NfMessage], first: u32) -> Vec<u8> {
    let res = u16::from(NFNL_SUBSYS_NFTABLES);
    let mut out = encode(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, 0, res, &[]);
    for (i, m) in msgs.iter().enumerate() {
        let ack = if i + 1 == msgs.len() { NLM_F_ACK } else { 0 };
        out.extend(m.encode(first.wrapping_add(1 + i as u32), ack));
    }
    let end_seq = first.wrapping_add(1 + msgs.len() as u32);
    out.extend(encode(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end_seq,
        0,
        res,
        &[],
    ));
    out
}

/// A parsed incoming message.
enum Incoming {
    Reply(NfReply, u16),
    /// NLMSG_ERROR: errno (0 = ACK) and the ext-ack message.
    Ack(i32, Option<String>),
    /// NLMSG_DONE with its status.
    Done(i32, Option<String>),
}

/// A blocking NETLINK_NETFILTER socket bound to the netns it was created in.
pub struct NfNetlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NfNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfNetlink").field("seq", &self.seq).finish()
    }
}

impl NfNetlink {
    /// Opens a socket in the calling thread's netns, with extended and capped ACKs when the
    /// kernel has them (never when [`compat::fallbacks_forced`]).
    pub fn new() -> Result<Self> {
        let op = "open nfnetlink socket";
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| Error::io(op, e))?;
        sock.bind_auto().map_err(|e| Error::io(op, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(op, e))?;
        if compat::fallbacks_forced() {
            log::debug!("nfnetlink socket without extended ACKs (old-kernel path)");
        } else if let Err(e) = sock.set_ext_ack(true).and_then(|_| sock.set_cap_ack(true)) {
            // Both optional (4.12 / 4.3): the error string, and errors that do not echo the
            // whole request back (which the parser skips otherwise).
            log::debug!("nfnetlink extended ack unavailable: {e}");
        }
        // Sequence numbers only need to be unique per socket; start from the clock so a
        // stray late answer to another socket's request can never look like ours.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(NfNetlink {
            sock,
            seq,
            buf: Vec::with_capacity(RECV_BUF_SIZE),
        })
    }

    /// Opens a socket inside `ns` (on a short-lived thread there).
    pub fn in_netns(ns: &Netns) -> Result<Self> {
        netns::run_in(ns, NfNetlink::new)?
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n);
        first
    }

    /// Sends a GET (with NLM_F_ACK) and returns the replies received before the ACK.
    pub fn get(&mut self, msg: &NfMessage) -> Result<Vec<NfReply>> {
        let seq = self.next_seq(1);
        self.send(&msg.encode(seq, NLM_F_ACK), "nfnetlink request")?;
        let mut replies = Vec::new();
        loop {
            for (s, m) in self.recv(true)? {
                if s != seq {
                    continue;
                }
                match m {
                    Incoming::Reply(r, _) => replies.push(r),
                    Incoming::Ack(0, _) => return Ok(replies),
                    Incoming::Ack(errno, detail) | Incoming::Done(errno, detail) => {
                        return Err(kernel(errno, detail));
                    }
                }
            }
        }
    }

    /// Sends a dump request and returns every message of the dump, restarting it when the
    /// kernel flags it as interrupted (the ruleset changed meanwhile).
    pub fn dump(&mut self, msg: &NfMessage) -> Result<Vec<NfReply>> {
        for attempt in 1..=DUMP_ATTEMPTS {
            let seq = self.next_seq(1);
            self.send(&msg.encode(seq, NLM_F_DUMP), "nfnetlink dump")?;
            let mut replies = Vec::new();
            let mut interrupted = false;
            'dump: loop {
                for (s, m) in self.recv(true)? {
                    if s != seq {
                        continue;
                    }
                    match m {
                        Incoming::Reply(r, flags) => {
                            interrupted |= flags & NLM_F_DUMP_INTR != 0;
                            replies.push(r);
                        }
                        Incoming::Done(0, _) | Incoming::Ack(0, _) => break 'dump,
                        Incoming::Done(errno, detail) | Incoming::Ack(errno, detail) => {
                            return Err(kernel(errno, detail));
                        }
                    }
                }
            }
            if !interrupted {
                return Ok(replies);
            }
            log::debug!("nfnetlink dump interrupted (attempt {attempt}), retrying");
        }
        Err(Error::DumpInterrupted {
            op: "nfnetlink dump".into(),
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// Sends `msgs` as one nf_tables transaction. `Ok` means the kernel committed all of
    /// them; [`Error::Batch`] lists the refused messages (nothing was applied).
    pub fn batch(&mut self, msgs: &[NfMessage]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let n = msgs.len() as u32;
        let begin = self.next_seq(n + 2);
        let bytes = encode_batch(msgs, begin);
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(Error::Protocol(format!(
                "nf_tables batch of {} bytes exceeds {MAX_BATCH_BYTES}: split it",
                bytes.len()
            )));
        }
        self.send(&bytes, "nf_tables batch")?;
        let last = begin.wrapping_add(n);
        let mut failures = Vec::new();
        let mut confirmed = false;
        // Everything was queued during send: read without blocking until the queue is empty.
        loop {
            let got = self.recv(false)?;
            if got.is_empty() {
                break;
            }
            for (s, m) in got {
                let index = s.wrapping_sub(begin).wrapping_sub(1) as usize;
                let index = (index < msgs.len()).then_some(index);
                match m {
                    Incoming::Ack(0, _) if s == last => confirmed = true,
                    Incoming::Ack(0, _) => {}
                    Incoming::Ack(errno, detail) if s == begin || index.is_some() => {
                        if s == last {
                            confirmed = true;
                        }
                        failures.push(MessageError {
                            index,
                            errno,
                            detail,
                        });
                    }
                    _ => log::debug!("ignoring nfnetlink message with seq {s}"),
                }
            }
        }
        if !failures.is_empty() {
            return Err(Error::Batch { failures });
        }
        if !confirmed {
            return Err(Error::Protocol(
                "the kernel did not acknowledge the nf_tables batch".into(),
            ));
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8], op: &str) -> Result<()> {
        self.sock.send(bytes, 0).map_err(|e| Error::io(op, e))?;
        Ok(())
    }

    /// Reads one datagram (blocking or not) and parses its messages as (seq, message).
    /// Non-blocking: an empty list when nothing is queued.
    fn recv(&mut self, block: bool) -> Result<Vec<(u32, Incoming)>> {
        self.buf.clear();
        let flags = libc::MSG_TRUNC | if block { 0 } else { libc::MSG_DONTWAIT };
        let n = match self.sock.recv(&mut self.buf, flags) {
            Ok(n) => n,
            Err(e) if !block && e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(Error::io("nfnetlink receive", e)),
        };
        if n > self.buf.len() {
            return Err(Error::Protocol(format!(
                "reply of {n} bytes truncated to {}",
                self.buf.len()
            )));
        }
        parse_datagram(&self.buf[..n])
    }
}

/// Splits a datagram into messages.
fn parse_datagram(data: &[u8]) -> Result<Vec<(u32, Incoming)>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 16 <= data.len() {
        let rest = &data[offset..];
        let hdr = NetlinkBuffer::new_checked(rest).map_err(|e| Error::Protocol(e.to_string()))?;
        let len = hdr.length() as usize;
        let (kind, flags, seq) = (hdr.message_type(), hdr.flags(), hdr.sequence_number());
        let body = &rest[16..len];
        offset += align4(len).max(16);
        let msg = match kind {
            NLMSG_ERROR | NLMSG_DONE => {
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let trailer = body.get(4..).unwrap_or_default();
                let detail = if kind == NLMSG_ERROR && code != 0 {
                    ext_ack_message(trailer, flags & NLM_F_CAPPED == 0)
                } else {
                    None
                };
                let errno = code.saturating_abs();
                if kind == NLMSG_ERROR {
                    Incoming::Ack(errno, detail)
                } else {
                    Incoming::Done(errno, detail)
                }
            }
            k if k >= 0x100 && body.len() >= 4 => Incoming::Reply(
                NfReply {
                    subsys: (k >> 8) as u8,
                    kind: k as u8,
                    family: body[0],
                    attrs: body[4..].to_vec(),
                },
                flags,
            ),
            _ => continue,
        };
        out.push((seq, msg));
    }
    Ok(out)
}

fn kernel(errno: i32, detail: Option<String>) -> Error {
    Error::Kernel {
        op: "nfnetlink request".into(),
        errno,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, attrs: &[u8]) -> NfMessage {
        NfMessage {
            subsys: NFNL_SUBSYS_NFTABLES,
            kind,
            family: 2,
            flags: 0x400,
            attrs: attrs.to_vec(),
        }
    }

    #[test]
    fn batch_layout() {
        // `nft add table ip t` sends exactly this (strace -e write), seq and ACK aside.
        let bytes = encode_batch(&[msg(0, &[6, 0, 1, 0, b't', 0, 0, 0])], 7);
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(""),
            concat!(
                // BEGIN: len 20, type 0x10, flags REQUEST, seq 7, pid 0; family 0, res_id 10 (BE)
                "14000000",
                "1000",
                "0100",
                "07000000",
                "00000000",
                "0000000a",
                // NEWTABLE: len 28, type 0x0a00, flags REQUEST|CREATE|ACK (last), seq 8
                "1c000000",
                "000a",
                "0504",
                "08000000",
                "00000000",
                "02000000",
                "0600010074000000",
                // END, seq 9
                "14000000",
                "1100",
                "0100",
                "09000000",
                "00000000",
                "0000000a",
            )
        );
    }

    #[test]
    fn parses_errors_and_replies() {
        // An error for seq 5 (ENOENT, capped, no TLVs) followed by a reply for seq 6.
        let mut d = Vec::new();
        d.extend_from_slice(&36u32.to_ne_bytes());
        d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        d.extend_from_slice(&NLM_F_CAPPED.to_ne_bytes());
        d.extend_from_slice(&5u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        d.extend_from_slice(&[0u8; 16]);
        d.extend(msg(1, &[8, 0, 1, 0, 1, 2, 3, 4]).encode(6, 0));
        let parsed = parse_datagram(&d).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert!(matches!(parsed[0], (5, Incoming::Ack(e, None)) if e == libc::ENOENT));
        match &parsed[1] {
            (6, Incoming::Reply(r, _)) => {
                assert_eq!((r.subsys, r.kind, r.family), (10, 1, 2));
                assert_eq!(r.attrs, vec![8, 0, 1, 0, 1, 2, 3, 4]);
            }
            _ => panic!("expected a reply"),
        }
    }

    #[test]
    fn message_error_display() {
        let e = MessageError {
            index: Some(2),
            errno: libc::EEXIST,
            detail: None,
        };
        assert_eq!(e.to_string(), "message 2: File exists (os error 17)");
        let e = MessageError {
            index: None,
            errno: libc::EPERM,
            detail: Some("x".into()),
        };
        assert_eq!(
            e.to_string(),
            "batch: Operation not permitted (os error 1) (x)"
        );
    }
}
