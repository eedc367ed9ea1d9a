//! IP masquerade for the bridge plugin, as a drop-in for the Go plugins' `ipMasq`, and its
//! MAC spoof check (`macspoofchk`, see [`spoofcheck`]).
//!
//! Two backends implement [`Masquerade`]:
//!
//! * [`Nftables`] (`ipMasqBackend: "nftables"`, or when only `nft` is usable): table
//!   `inet rcni_masquerade`, one nat base chain per attachment named after its hash,
//!   holding one rule per IP.
//!   One `nft -f -` transaction per change, no listing on setup and teardown.
//! * [`Iptables`] (the default, as the reference's): chain `RCNI-<hash>` per attachment
//!   in the nat table, jumped to from `POSTROUTING`; one `iptables-restore --noflush -w`
//!   per family and change.
//!
//! Every rule carries the comment `<instance hash>, net: <net>, if: <ifname>, id: <cid>`
//! (see [`hash`]), so teardown needs no IPs and cannot remove another container's rule
//! for a re-used IP, and GC can select one network's rules. Teardown and GC also remove
//! what the Go plugins left behind (`CNI-<hash>` iptables chains and the
//! `inet cni_plugins_masquerade` table's rules), so a node that ran them is cleaned too.
//!
//! Tools are found on `PATH`, then `/usr/sbin`, `/sbin`, and run in the calling thread's
//! network namespace (the bridge plugin runs in the node's).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
pub mod hash;
mod iptables;
mod nft;
pub mod nftables;
mod runner;
pub mod spoofcheck;

pub use error::{Error, Refused};
pub use ipnetwork::IpNetwork;
pub use iptables::Iptables;
pub use nft::{
    CHAIN_PREFIX as NFT_CHAIN_PREFIX, Nftables, REFERENCE_TABLE as NFT_REFERENCE_TABLE,
    TABLE as NFT_TABLE, chain_name as nft_chain_name,
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

/// Which tool programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `nft`, table `inet rcni_masquerade`.
    Nftables,
    /// `iptables-restore` / `ip6tables-restore`, nat table.
    Iptables,
}

impl Backend {
    /// Resolve the `ipMasqBackend` config value.
    ///
    /// * `Some("nftables")`, `Some("iptables")`: that backend.
    /// * `None`: **nftables when the `nft` binary is found, else iptables.** This differs on
    ///   purpose from the Go plugin (iptables unless only nft works): nft needs one process
    ///   per change and no xtables lock. Teardown cleans both backends anyway.
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
            // The reference's rule (containernetworking/plugins pkg/ip/ipmasq_linux.go):
            // iptables, unless only nftables is usable. Nodes that ran the Go plugin keep
            // the backend they had; `ipMasqBackend: "nftables"` opts in to the faster one.
            None if !runner.has("iptables") && runner.has("nft") => Ok(Backend::Nftables),
            None => Ok(Backend::Iptables),
        }
    }
}

/// Masquerade rules for attachments.
pub trait Masquerade {
    /// Address-independent work (reading the current rules) that a caller may start before
    /// the addresses are known, to overlap it with IPAM. [`Masquerade::setup`] works
    /// without it; a failed prefetch only means setup does the work itself.
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
}

/// The backend `b`, spawning tools in the current network namespace. Shareable between
/// threads, so a caller can [`Masquerade::prefetch`] on one while it works on another.
pub fn backend(b: Backend) -> Box<dyn Masquerade + Send + Sync> {
    match b {
        Backend::Nftables => Box::new(Nftables::new(SystemRunner::new())),
        Backend::Iptables => Box::new(Iptables::new(SystemRunner::new())),
    }
}

/// DEL path: [`Masquerade::teardown`] in both backends (including the Go reference's
/// leftovers). A backend whose tool is missing is skipped; other errors are all returned.
pub fn teardown_all(att: &Attachment) -> Result<(), Error> {
    teardown_all_with(&SystemRunner::new(), att)
}

/// GC path: [`Masquerade::gc`] in both backends, same error policy as [`teardown_all`].
pub fn gc_all(network: &str, valid: &[Attachment]) -> Result<(), Error> {
    gc_all_with(&SystemRunner::new(), network, valid)
}

/// [`teardown_all`] with an explicit runner.
///
/// DEL runs this for every pod, so it only spawns what can find something: one
/// `nft -j list tables` tells which of our table, the Go plugin's nft table and the
/// iptables-nft nat tables (`ip nat`, `ip6 nat`) exist, `/proc/net/ip{,6}_tables_names`
/// whether legacy nat tables exist (both are created on first use, not at boot). Then:
/// our nft teardown (one blind transaction), the Go table's cleanup, and the iptables
/// listing + restore per family, each only when its table exists. When the probe is not
/// possible (no `nft`, or it failed) every iptables family is listed, as before.
pub fn teardown_all_with<R: Runner>(runner: &R, att: &Attachment) -> Result<(), Error> {
    let nft = Nftables::new(runner);
    let (nft_result, tables) = if runner.has("nft") {
        match nft.probe() {
            Ok(t) => (nft.teardown_in(att, &t), Some(t)),
            Err(e) => (Err(e), None),
        }
    } else {
        (Err(Error::ToolNotFound { tool: "nft".into() }), None)
    };
    let may_have_nat = |v6: bool| {
        let in_nft = tables.map(|t| if v6 { t.ip6_nat } else { t.ip_nat });
        let name = if v6 {
            "ip6_tables_names"
        } else {
            "ip_tables_names"
        };
        let legacy = runner
            .proc_net(name)
            .map(|names| names.lines().any(|l| l.trim() == "nat"));
        // Skip only when both sources are known and both say no.
        !matches!((in_nft, legacy), (Some(false), Some(false)))
    };
    both(
        nft_result,
        Iptables::new(runner).teardown_where(att, may_have_nat),
    )
}

/// [`gc_all`] with an explicit runner.
pub fn gc_all_with<R: Runner>(
    runner: &R,
    network: &str,
    valid: &[Attachment],
) -> Result<(), Error> {
    both(
        Nftables::new(runner).gc(network, valid),
        Iptables::new(runner).gc(network, valid),
    )
}

fn both(a: Result<(), Error>, b: Result<(), Error>) -> Result<(), Error> {
    let errors = [a, b]
        .into_iter()
        .filter_map(Result::err)
        .filter_map(Error::without_missing_tools)
        .collect();
    Error::collect(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::fake::FakeRunner;

    fn att() -> Attachment {
        Attachment {
            network: "mynet".into(),
            container_id: "cid".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn select_backend() {
        let all = FakeRunner::new();
        let no_nft = FakeRunner::new().without(&["nft"]);
        let only_nft = FakeRunner::new().without(&["iptables", "ip6tables"]);
        assert_eq!(Backend::select_with(None, &all).unwrap(), Backend::Iptables);
        assert_eq!(
            Backend::select_with(None, &no_nft).unwrap(),
            Backend::Iptables
        );
        assert_eq!(
            Backend::select_with(None, &only_nft).unwrap(),
            Backend::Nftables
        );
        assert_eq!(
            Backend::select_with(Some("iptables"), &all).unwrap(),
            Backend::Iptables
        );
        assert_eq!(
            Backend::select_with(Some("nftables"), &no_nft).unwrap(),
            Backend::Nftables
        );
        let err = Backend::select_with(Some("x"), &all).unwrap_err();
        assert_eq!(err.to_string(), "unknown ipmasq backend \"x\"");
        assert!(Backend::select_with(Some(""), &all).is_err());
    }

    #[test]
    fn teardown_all_skips_missing_tools() {
        let fake = FakeRunner::new().without(&["nft", "ip6tables"]);
        teardown_all_with(&fake, &att()).unwrap();
        assert_eq!(fake.transcript(), "$ iptables -w -t nat -S POSTROUTING\n");

        let none = FakeRunner::new().without(&["nft", "iptables", "ip6tables"]);
        teardown_all_with(&none, &att()).unwrap();
        gc_all_with(&none, "mynet", &[]).unwrap();
    }

    fn tables(list: &[(&str, &str)]) -> String {
        let items: Vec<String> = list
            .iter()
            .map(|(f, n)| {
                format!(r#"{{"table": {{"family": "{f}", "name": "{n}", "handle": 1}}}}"#)
            })
            .collect();
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    #[test]
    fn teardown_all_spawns_only_what_can_find_something() {
        let chain = nft_chain_name(&att());
        // Only our table, no nat table anywhere: probe + one blind transaction.
        let fake = FakeRunner::new()
            .with_proc("ip_tables_names", "")
            .with_proc("ip6_tables_names", "filter\n");
        fake.answer("nft", &tables(&[("inet", NFT_TABLE), ("ip", "filter")]));
        teardown_all_with(&fake, &att()).unwrap();
        assert_eq!(
            fake.transcript(),
            format!(
                "$ nft -j list tables\n\
                 $ nft -f -\n\
                 add chain inet rcni_masquerade {chain}\n\
                 flush chain inet rcni_masquerade {chain}\n\
                 delete chain inet rcni_masquerade {chain}\n"
            )
        );

        // iptables-nft's `ip nat` and a legacy ip6 nat table: both families are listed,
        // our table is absent so no nft transaction.
        let fake = FakeRunner::new()
            .with_proc("ip_tables_names", "")
            .with_proc("ip6_tables_names", "filter\nnat\n");
        fake.answer("nft", &tables(&[("ip", "nat")]));
        teardown_all_with(&fake, &att()).unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -j list tables\n\
             $ iptables -w -t nat -S POSTROUTING\n\
             $ ip6tables -w -t nat -S POSTROUTING\n"
        );

        // Legacy state unknown: the family is listed.
        let fake = FakeRunner::new().with_proc("ip_tables_names", "");
        fake.answer("nft", &tables(&[]));
        teardown_all_with(&fake, &att()).unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -j list tables\n$ ip6tables -w -t nat -S POSTROUTING\n"
        );
    }

    #[test]
    fn teardown_all_collects_every_error() {
        let fake = FakeRunner::new();
        fake.fail("nft", "Error: nft broke");
        fake.fail("iptables", "iptables broke");
        fake.fail("ip6tables", "ip6tables broke");
        let err = teardown_all_with(&fake, &att()).unwrap_err();
        match &err {
            Error::Multiple(v) => assert_eq!(v.len(), 3, "{err}"),
            other => panic!("expected Multiple, got {other:?}"),
        }
        let msg = err.to_string();
        for part in ["nft broke", "iptables broke", "ip6tables broke"] {
            assert!(msg.contains(part), "{msg}");
        }
    }
}
