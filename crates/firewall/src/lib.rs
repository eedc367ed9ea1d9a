//! IP masquerade for the bridge plugin, as a drop-in for the Go plugins' `ipMasq`, its
//! MAC spoof check (`macspoofchk`, see [`spoofcheck`]), the portmap plugin's port mappings
//! ([`portmap`]), and an nf_tables encoder spoken over netlink ([`nftables`]) that they can
//! build on.
//!
//! Two backends implement [`Masquerade`]:
//!
//! * [`Nftables`] (`ipMasqBackend: "nftables"`, or when iptables is not installed): tables
//!   `ip rcni_masquerade` / `ip6 rcni_masquerade`, one nat base chain each whatever the pod
//!   count, a verdict map from pod address to a regular chain per attachment (named after
//!   its hash). nf_tables over netlink: one transaction per change, no process.
//! * [`Iptables`] (the default, as the reference's): chain `RCNI-<hash>` per attachment
//!   in the nat table, jumped to from `POSTROUTING`; one `iptables-restore --noflush -w`
//!   per family and change, no listing on setup.
//!
//! Every rule carries the comment `<instance hash>, net: <net>, if: <ifname>, id: <cid>`
//! (see [`hash`]), so teardown needs no IPs and cannot remove another container's rule
//! for a re-used IP, and GC can select one network's rules. Teardown and GC also remove
//! what the Go plugins left behind (`CNI-<hash>` iptables chains and the
//! `inet cni_plugins_masquerade` table's rules) and rcni's previous nftables layout, so a
//! node that ran them is cleaned too.
//!
//! Everything runs in the calling thread's network namespace (the bridge plugin runs in
//! the node's); tools are found on `PATH`, then `/usr/sbin`, `/sbin`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod iptables;
pub mod naming;
mod nft;
pub mod nftables;
pub mod portmap;
mod runner;
pub mod spoofcheck;

pub use error::{Error, Refused};
pub use ipnetwork::IpNetwork;
pub use iptables::{Iptables, tokenize as iptables_words};
pub use nft::{
    BASE_CHAIN as NFT_BASE_CHAIN, CHAIN_PREFIX as NFT_CHAIN_PREFIX, Listed, MAP as NFT_MAP,
    Nftables, OLD_CHAIN_PREFIX as NFT_OLD_CHAIN_PREFIX, REFERENCE_TABLE as NFT_REFERENCE_TABLE,
    Session, TABLE as NFT_TABLE, chain_name as nft_chain_name,
};
pub use runner::{Output, Runner, SystemRunner};
pub use spoofcheck::SpoofCheck;

/// One attachment = (network name, container ID, ifname). Rules are keyed by it, never by
/// what is in the container's netns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// Network name (`name` of the CNI config).
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// Which backend programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables over netlink, tables `ip|ip6 rcni_masquerade`.
    Nftables,
    /// `iptables-restore` / `ip6tables-restore`, nat table.
    Iptables,
}

impl Backend {
    /// Resolve the `ipMasqBackend` config value.
    ///
    /// * `Some("nftables")`, `Some("iptables")`: that backend.
    /// * `None`: the reference's rule (containernetworking/plugins `ipmasq_linux.go`):
    ///   iptables, unless iptables is not installed. A node that ran the Go plugin keeps the
    ///   backend it had; `ipMasqBackend: "nftables"` opts in to the faster one (no process,
    ///   no xtables lock, a fixed number of base chains). Teardown cleans both anyway.
    /// * anything else (including `""`): `unknown ipmasq backend "x"`, as Go.
    pub fn select(name: Option<&str>) -> Result<Backend, Error> {
        Self::select_with(name, &SystemRunner::new())
    }

    /// [`Backend::select`] with the tool lookup done by `runner`.
    pub fn select_with<R: Runner>(name: Option<&str>, runner: &R) -> Result<Backend, Error> {
        match name {
            Some("nftables") => Ok(Backend::Nftables),
            Some("iptables") => Ok(Backend::Iptables),
            Some(other) => Err(Error::UnknownBackend(other.to_string())),
            None if !runner.has("iptables") => Ok(Backend::Nftables),
            None => Ok(Backend::Iptables),
        }
    }
}

/// Masquerade rules for attachments.
pub trait Masquerade {
    /// Address-independent work (reading what exists) that a caller may start before the
    /// addresses are known, to overlap it with IPAM. [`Masquerade::setup`] works without
    /// it; a failed prefetch only means setup does the work itself.
    fn prefetch(&self, _att: &Attachment) -> Result<(), Error> {
        Ok(())
    }
    /// Masquerade traffic from each ip (address with prefix, e.g. `10.244.1.5/24`) leaving
    /// its subnet (not to multicast). Replaces the attachment's previous rules (idempotent).
    fn setup(&self, att: &Attachment, ips: &[IpNetwork]) -> Result<(), Error>;
    /// Remove this attachment's rules (idempotent; no IPs needed).
    fn teardown(&self, att: &Attachment) -> Result<(), Error>;
    /// Remove rules of `network` whose attachment is not in `valid` (the `network` field of
    /// the `valid` entries is ignored: `network` applies to all).
    fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), Error>;
    /// The attachments of `network` that have rules here (for `rcni-doctor`): compare
    /// [`Listed::key`] with [`naming::instance_hash`] of the live attachments (the Go
    /// plugin's iptables chains are keyed by [`naming::reference_chain`] instead).
    fn attachments(&self, network: &str) -> Result<Vec<Listed>, Error>;
}

/// The backend `b`, in the current network namespace. Shareable between threads, so a
/// caller can [`Masquerade::prefetch`] on one while it works on another.
pub fn backend(b: Backend) -> Box<dyn Masquerade + Send + Sync> {
    match b {
        Backend::Nftables => Box::new(Nftables::new()),
        Backend::Iptables => Box::new(Iptables::new(SystemRunner::new())),
    }
}

/// DEL path: [`Masquerade::teardown`] in both backends (including the Go reference's
/// leftovers and rcni's previous nftables layout). A backend that cannot exist here (tool
/// not installed, no nf_tables in the kernel) is skipped; other errors are all returned.
pub fn teardown_all(att: &Attachment) -> Result<(), Error> {
    teardown_all_in(&mut Session::new(), att)
}

/// [`teardown_all`] over `session`: the caller decides when its socket closes (see
/// [`Session`]: close it late, after other slow work).
pub fn teardown_all_in(session: &mut Session, att: &Attachment) -> Result<(), Error> {
    teardown_all_with(&SystemRunner::new(), session, att)
}

/// GC path: [`Masquerade::gc`] in both backends, same error policy as [`teardown_all`].
pub fn gc_all(network: &str, valid: &[Attachment]) -> Result<(), Error> {
    gc_all_with(&SystemRunner::new(), network, valid)
}

/// [`teardown_all`] with an explicit runner for the iptables tools.
///
/// DEL runs this for every pod, so it spawns nothing that cannot find something, and in
/// the common cases nothing at all. One netlink dump of the tables tells which of ours
/// (and of our previous layout), the Go plugin's nft table and iptables-nft's nat tables
/// (`ip nat`, `ip6 nat`) exist. iptables-nft chains are nf_tables chains: this
/// attachment's `RCNI-` chain and the reference's `CNI-` chain are found by name and
/// deleted, with their `POSTROUTING` jumps, in the same netlink transaction as the rest.
/// Only a legacy nat table (`/proc/thread-self/net/ip{,6}_tables_names`), or a namespace
/// where that cannot be told, is listed with `iptables` and cleaned with `iptables-restore`.
pub fn teardown_all_with<R: Runner>(
    runner: &R,
    session: &mut Session,
    att: &Attachment,
) -> Result<(), Error> {
    let mut errors = Vec::new();
    // Per family (v4, v6): may a legacy nat table hold something of this attachment?
    let mut legacy = [true; 2];
    match session.nl().and_then(|nl| Ok((nft::Tables::read(nl)?, nl))) {
        Ok((tables, nl)) => {
            let mut native = Vec::new();
            for (slot, v6) in legacy.iter_mut().zip([false, true]) {
                let (in_nft, fam) = if v6 {
                    (tables.ip6_nat, nftables::Family::Ip6)
                } else {
                    (tables.ip_nat, nftables::Family::Ip)
                };
                if in_nft {
                    native.push(fam);
                }
                *slot = legacy_nat(runner, v6) != Some(false);
            }
            if let Err(e) = nft::teardown_in(nl, att, &tables, &native) {
                errors.push(e);
            }
        }
        Err(e) => errors.push(e),
    }
    if let Err(e) = Iptables::new(runner).teardown_where(att, |v6| legacy[usize::from(v6)]) {
        errors.push(e);
    }
    Error::collect(
        errors
            .into_iter()
            .filter_map(Error::without_absent_backends)
            .collect(),
    )
}

/// Whether a legacy (x_tables) nat table exists for the family; `None` when unknown.
pub(crate) fn legacy_nat<R: Runner>(runner: &R, v6: bool) -> Option<bool> {
    let name = if v6 {
        "ip6_tables_names"
    } else {
        "ip_tables_names"
    };
    runner
        .proc_net(name)
        .map(|names| names.lines().any(|l| l.trim() == "nat"))
}

/// [`gc_all`] with an explicit runner.
pub fn gc_all_with<R: Runner>(
    runner: &R,
    network: &str,
    valid: &[Attachment],
) -> Result<(), Error> {
    let errors = [
        Nftables::new().gc(network, valid),
        Iptables::new(runner).gc(network, valid),
    ]
    .into_iter()
    .filter_map(Result::err)
    .filter_map(Error::without_absent_backends)
    .collect();
    Error::collect(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::fake::FakeRunner;

    #[test]
    fn select_backend() {
        let all = FakeRunner::new();
        let no_nft = FakeRunner::new().without(&["nft"]);
        let no_iptables = FakeRunner::new().without(&["iptables", "ip6tables"]);
        assert_eq!(Backend::select_with(None, &all).unwrap(), Backend::Iptables);
        // The nft binary is not needed by either backend.
        assert_eq!(
            Backend::select_with(None, &no_nft).unwrap(),
            Backend::Iptables
        );
        assert_eq!(
            Backend::select_with(None, &no_iptables).unwrap(),
            Backend::Nftables
        );
        assert_eq!(
            Backend::select_with(Some("iptables"), &no_iptables).unwrap(),
            Backend::Iptables
        );
        assert_eq!(
            Backend::select_with(Some("nftables"), &all).unwrap(),
            Backend::Nftables
        );
        let err = Backend::select_with(Some("x"), &all).unwrap_err();
        assert_eq!(err.to_string(), "unknown ipmasq backend \"x\"");
        let err = Backend::select_with(Some(""), &all).unwrap_err();
        assert!(
            matches!(err, Error::UnknownBackend(ref b) if b.is_empty()),
            "{err}"
        );
    }

    #[test]
    fn absent_backends_are_not_errors_but_real_failures_are() {
        let no_nf_tables = Error::netlink(
            "open nfnetlink socket",
            netlink::Error::Kernel {
                op: String::new(),
                errno: libc::EPROTONOSUPPORT,
                detail: None,
            },
        );
        assert!(no_nf_tables.is_nftables_unavailable());
        let missing = Error::ToolNotFound {
            tool: "iptables".into(),
        };
        assert!(
            Error::Multiple(vec![no_nf_tables, missing])
                .without_absent_backends()
                .is_none()
        );
        let denied = Error::netlink(
            "list tables",
            netlink::Error::Kernel {
                op: String::new(),
                errno: libc::EPERM,
                detail: None,
            },
        );
        assert!(!denied.is_nftables_unavailable());
        let kept = Error::Multiple(vec![
            denied,
            Error::ToolNotFound {
                tool: "ip6tables".into(),
            },
        ])
        .without_absent_backends()
        .expect("EPERM is kept");
        assert!(
            kept.to_string().contains("Operation not permitted"),
            "{kept}"
        );
    }
}
