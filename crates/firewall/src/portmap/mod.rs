//! Port mappings (`hostPort`) for the portmap plugin, a drop-in for containernetworking/plugins'
//! `plugins/meta/portmap`.
//!
//! Traffic to `node-address:hostPort` is DNAT'ed to `pod:containerPort`. Connections from the
//! node itself (`127.0.0.1`) and from the pod's own subnet (hairpin) are marked for
//! masquerade, so that replies come back through the node (`snat`, the default).
//!
//! Two backends implement [`PortMapper`]:
//!
//! * [`Iptables`]: the reference's layout in the nat table (`CNI-HOSTPORT-DNAT` from
//!   `PREROUTING`/`OUTPUT`, one `CNI-DN-<hash>` chain per container, `CNI-HOSTPORT-SETMARK`,
//!   `CNI-HOSTPORT-MASQ`), with the reference's chain names and rule text, so that the Go
//!   plugin and ours delete each other's rules. One listing and one `iptables-restore` per
//!   family and call.
//! * [`Nftables`]: tables `ip rcni_hostport` / `ip6 rcni_hostport`, spoken over netlink (no
//!   process). Lookups go through verdict maps keyed by (protocol, port) and (address,
//!   protocol, port), whose elements jump to one regular chain per attachment; the base
//!   chains are fixed. One transaction per call.
//!
//! DEL and GC run both backends ([`teardown_all`], [`gc_all`]) and also remove the rules of
//! the Go plugin's nftables backend (tables `ip/ip6 cni_hostport`, on DEL), so a node that
//! switches backend or implementation is cleaned either way. [`list_all`] tells which
//! attachments have port-mapping rules (for `rcni-doctor`).

pub mod conditions;
mod iptables;
mod nft;

use std::net::IpAddr;

use ipnetwork::IpNetwork;

pub use iptables::{DNAT_CHAIN, Iptables, LOCK_FILE, MASQ_CHAIN, SETMARK_CHAIN};
pub use nft::{Nftables, REFERENCE_TABLE as NFT_REFERENCE_TABLE, TABLE as NFT_TABLE};

use crate::nft::Session;
use crate::runner::{Runner, SystemRunner};
use crate::{Attachment, Backend, Error};

/// The reference's default mark bit ("Kubernetes uses 14 and 15, Calico uses 20-31").
pub const DEFAULT_MARK_BIT: u8 = 13;

/// A mapped transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// `tcp`, `udp`, `sctp`, in any case (Kubernetes sends `TCP`/`UDP`/`SCTP` lower-cased;
    /// the reference passes the text to iptables, which ignores case).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// One `runtimeConfig.portMappings` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Port on the node (1-65535).
    pub host_port: u16,
    /// Port in the pod (1-65535).
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// `hostIP`: limits the mapping to this node address, and to its family.
    pub host_ip: Option<IpAddr>,
}

impl PortMapping {
    /// Whether the mapping applies to a pod address of family `v6`: with a `hostIP`, only to
    /// that address's family (as the reference).
    pub fn applies_to(&self, v6: bool) -> bool {
        self.host_ip.is_none_or(|ip| ip.is_ipv6() == v6)
    }

    /// The destination to match: the `hostIP`, unless it is `0.0.0.0`/`::` (any address of
    /// that family).
    pub fn host_addr(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// How connections that need masquerading are marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkMasq {
    /// Set this bit of the packet mark; our chain masquerades packets carrying it
    /// (`markMasqBit`).
    Bit(u8),
    /// Jump to this existing chain, which marks for a masquerade done elsewhere
    /// (`externalSetMarkChain`, e.g. kube-proxy's `KUBE-MARK-MASQ`; iptables only).
    External(String),
}

impl MarkMasq {
    /// The mark value of [`MarkMasq::Bit`].
    pub fn bits(&self) -> Option<u32> {
        match self {
            MarkMasq::Bit(b) => Some(1u32 << u32::from(*b)),
            MarkMasq::External(_) => None,
        }
    }
}

/// The network config's portmap options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Masquerade node-local (`127.0.0.1`) and hairpin connections (`snat`, default true).
    pub snat: bool,
    /// Masquerade every mapped connection, whatever its source (`masqAll`).
    pub masq_all: bool,
    /// How to mark for masquerade.
    pub mark: MarkMasq,
    /// Extra matches for IPv4 mappings (`conditionsV4`), in the backend's syntax: words of
    /// an iptables rule, or nft matches of the forms [`conditions`] reads.
    pub conditions_v4: Vec<String>,
    /// Extra matches for IPv6 mappings (`conditionsV6`).
    pub conditions_v6: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snat: true,
            masq_all: false,
            mark: MarkMasq::Bit(DEFAULT_MARK_BIT),
            conditions_v4: Vec::new(),
            conditions_v6: Vec::new(),
        }
    }
}

/// What to set up (or check) for one attachment.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The attachment.
    pub att: &'a Attachment,
    /// The pod's addresses with their prefix, at most one per family.
    pub addrs: &'a [IpNetwork],
    /// The mappings, in the runtime's order.
    pub mappings: &'a [PortMapping],
    /// The options.
    pub opts: &'a Options,
}

impl Request<'_> {
    /// The pod address of family `v6`.
    pub fn addr(&self, v6: bool) -> Option<IpNetwork> {
        self.addrs.iter().copied().find(|a| a.is_ipv6() == v6)
    }

    /// The conditions of family `v6`.
    pub fn conditions(&self, v6: bool) -> &[String] {
        if v6 {
            &self.opts.conditions_v6
        } else {
            &self.opts.conditions_v4
        }
    }

    /// The mappings that apply to family `v6`.
    pub fn mappings_for(&self, v6: bool) -> impl Iterator<Item = &PortMapping> {
        self.mappings.iter().filter(move |m| m.applies_to(v6))
    }
}

/// Who made the rules of a [`Listed`] attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maker {
    /// rcni.
    Rcni,
    /// The Go reference plugin.
    Reference,
    /// Either: the iptables rules of both are the same.
    Either,
}

/// An attachment that has port-mapping rules on this node (see [`list_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Where the rules are.
    pub backend: Backend,
    /// Who made them.
    pub maker: Maker,
    /// IPv6 rules (ip6tables, `ip6` table).
    pub v6: bool,
    /// The per-attachment chain.
    pub chain: String,
    /// Network name, when the rules tell it.
    pub network: Option<String>,
    /// Container ID, when the rules tell it.
    pub container_id: Option<String>,
    /// Interface name, when the rules tell it.
    pub ifname: Option<String>,
}

/// Port mappings of attachments, in one backend.
pub trait PortMapper {
    /// Install `req`'s mappings, replacing what the attachment had (idempotent). All or
    /// nothing: on failure, what this call installed is removed again.
    fn setup(&self, req: &Request) -> Result<(), Error>;
    /// Verify that `req`'s rules are in place; [`Error::Check`] says what is missing.
    fn check(&self, req: &Request) -> Result<(), Error>;
    /// Remove the attachment's rules (idempotent; needs neither addresses nor mappings).
    fn teardown(&self, att: &Attachment) -> Result<(), Error>;
    /// Remove the rules of `network`'s attachments that are not in `valid` (their `network`
    /// field is ignored).
    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error>;
    /// The attachments that have rules in this backend.
    fn list(&self) -> Result<Vec<Listed>, Error>;
}

/// The backend `b`, in the calling thread's network namespace.
pub fn mapper(b: Backend) -> Box<dyn PortMapper> {
    match b {
        Backend::Iptables => Box::new(Iptables::new(SystemRunner::new()).with_lock(LOCK_FILE)),
        Backend::Nftables => Box::new(Nftables::new()),
    }
}

/// The oldest kernel the nftables backend runs on: `fib daddr type local` (Linux 4.10).
pub const NFTABLES_MIN_KERNEL: (u32, u32) = (4, 10);

/// The oldest kernel on which an unset `backend` may become nftables: since Linux 4.18 the
/// nat core runs every nat chain, ours and iptables' nat table, in priority order. Before,
/// whichever hooked first gave a new connection its nat binding (a null one when none of its
/// rules matched), so our DNAT could be skipped on a node whose iptables nat table is in use
/// (kube-proxy brings its own iptables, installed on the node or not).
pub const NFTABLES_DEFAULT_MIN_KERNEL: (u32, u32) = (4, 18);

/// Whether an unset `backend` may be nftables on this kernel
/// ([`NFTABLES_DEFAULT_MIN_KERNEL`]); false when the release cannot be read, and when the
/// old-kernel test switch (`RCNI_TEST_KERNEL_FALLBACKS=1`) is set.
pub fn kernel_supports_nftables() -> bool {
    !netlink::compat::fallbacks_forced()
        && kernel_release().is_some_and(|release| release >= NFTABLES_DEFAULT_MIN_KERNEL)
}

/// (major, minor) of the running kernel (`uname -r`).
fn kernel_release() -> Option<(u32, u32)> {
    parse_release(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

/// `6.18.44-foo` → (6, 18).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// DEL: remove `att`'s port mappings from both backends, ours and the Go plugin's.
pub fn teardown_all(att: &Attachment) -> Result<(), Error> {
    teardown_all_with(&SystemRunner::new(), att)
}

/// [`teardown_all`] with an explicit runner for the iptables tools.
///
/// One netlink dump of the tables tells which exist: ours, the Go plugin's `cni_hostport`
/// and iptables-nft's `nat` tables. Everything found there goes in one transaction,
/// iptables-nft's chains and rules included (found by name and by their jump, deleted by
/// handle): no process. Only a legacy (x_tables) nat table
/// (`/proc/thread-self/net/ip{,6}_tables_names`), or a namespace where that cannot be told,
/// is listed with `iptables` and cleaned with `iptables-restore`.
pub fn teardown_all_with<R: Runner>(runner: &R, att: &Attachment) -> Result<(), Error> {
    let mut session = Session::new();
    let mut errors = Vec::new();
    // Per family (v4, v6): may a legacy nat table hold something of this attachment?
    let mut legacy = [true; 2];
    match session
        .nl()
        .and_then(|nl| Ok((nft::Present::read(nl)?, nl)))
    {
        Ok((present, nl)) => {
            for (slot, v6) in legacy.iter_mut().zip([false, true]) {
                *slot = crate::legacy_nat(runner, v6) != Some(false);
            }
            if let Err(e) = nft::teardown_in(nl, att, &present, &present.nat_families()) {
                errors.push(e);
            }
        }
        Err(e) => errors.push(e),
    }
    if legacy.contains(&true)
        && let Err(e) = Iptables::new(runner).teardown_where(att, |v6| legacy[usize::from(v6)])
    {
        errors.push(e);
    }
    collect_ignoring_missing_tools(errors.into_iter().map(Err).collect())
}

/// GC: [`PortMapper::gc`] in both backends.
pub fn gc_all(network: &str, valid: &[Attachment]) -> Result<(), Error> {
    gc_all_with(&SystemRunner::new(), network, valid)
}

/// [`gc_all`] with an explicit runner.
pub fn gc_all_with<R: Runner>(
    runner: &R,
    network: &str,
    valid: &[Attachment],
) -> Result<(), Error> {
    collect_ignoring_missing_tools(vec![
        Nftables::new().gc(network, valid),
        Iptables::new(runner).gc(network, valid),
    ])
}

/// Every attachment with port-mapping rules on this node, in both backends (ours and the
/// reference's): what `rcni-doctor` compares with the runtime's list of pods.
pub fn list_all() -> Result<Vec<Listed>, Error> {
    list_all_with(&SystemRunner::new())
}

/// [`list_all`] with an explicit runner.
pub fn list_all_with<R: Runner>(runner: &R) -> Result<Vec<Listed>, Error> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in [Nftables::new().list(), Iptables::new(runner).list()] {
        match r {
            Ok(v) => out.extend(v),
            Err(e) => errors.push(e),
        }
    }
    collect_ignoring_missing_tools(errors.into_iter().map(Err).collect())?;
    Ok(out)
}

fn collect_ignoring_missing_tools(results: Vec<Result<(), Error>>) -> Result<(), Error> {
    let errors = results
        .into_iter()
        .filter_map(Result::err)
        .filter_map(Error::without_absent_backends)
        .collect();
    Error::collect(errors)
}

/// Shared by the backends' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An attachment of network `mynet` on `eth0`.
    pub fn att(cid: &str) -> Attachment {
        Attachment {
            network: "mynet".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    /// A mapping.
    pub fn pm(hp: u16, cp: u16, proto: Protocol, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: hp,
            container_port: cp,
            protocol: proto,
            host_ip: host_ip.map(|s| s.parse().unwrap()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_parsing() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("Sctp"), Some(Protocol::Sctp));
        assert_eq!(Protocol::parse(""), None);
        assert_eq!(Protocol::parse("icmp"), None);
        assert_eq!(Protocol::Sctp.number(), 132);
    }

    #[test]
    fn host_ip_limits_family() {
        let m = |ip: Option<&str>| PortMapping {
            host_port: 1,
            container_port: 1,
            protocol: Protocol::Tcp,
            host_ip: ip.map(|s| s.parse().unwrap()),
        };
        assert!(m(None).applies_to(false) && m(None).applies_to(true));
        assert!(m(Some("10.0.0.1")).applies_to(false));
        assert!(!m(Some("10.0.0.1")).applies_to(true));
        assert!(m(Some("::")).applies_to(true));
        assert_eq!(m(Some("::")).host_addr(), None);
        assert_eq!(m(Some("0.0.0.0")).host_addr(), None);
        assert_eq!(
            m(Some("10.0.0.1")).host_addr(),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("4.9.0"), Some((4, 9)));
        assert_eq!(parse_release("3.10.0-1160.el7.x86_64"), Some((3, 10)));
        assert_eq!(parse_release("nonsense"), None);
        assert!((4, 9) < NFTABLES_MIN_KERNEL && (4, 10) >= NFTABLES_MIN_KERNEL);
        assert!((4, 17) < NFTABLES_DEFAULT_MIN_KERNEL && (5, 0) > NFTABLES_DEFAULT_MIN_KERNEL);
    }

    #[test]
    fn only_legacy_nat_tables_are_left_to_the_tools() {
        use crate::runner::fake::FakeRunner;
        let fake = FakeRunner::new()
            .with_proc("ip_tables_names", "filter\nnat\n")
            .with_proc("ip6_tables_names", "filter\n");
        assert_eq!(crate::legacy_nat(&fake, false), Some(true));
        assert_eq!(crate::legacy_nat(&fake, true), Some(false));
        // Unknown (another namespace's tools): assume the worst.
        assert_eq!(crate::legacy_nat(&FakeRunner::new(), false), None);
    }

    #[test]
    fn mark_bits() {
        assert_eq!(MarkMasq::Bit(13).bits(), Some(0x2000));
        assert_eq!(MarkMasq::Bit(31).bits(), Some(0x8000_0000));
        assert_eq!(MarkMasq::External("K".into()).bits(), None);
    }
}
