//! `macspoofchk` of the bridge plugin: drop frames entering the bridge from the pod's port
//! whose source MAC is not the pod's, with the same nftables layout as the reference
//! (`pkg/link/spoofcheck.go`): table `bridge nat`, base chain `PREROUTING` (filter,
//! prerouting, priority -300), and per attachment the chains `cni-br-iface-<cid>-<ifname>`
//! and `...-mac`, every rule commented `macspoofchk-<cid>-<ifname>`. Keeping the layout
//! lets DEL of either implementation clean up the other's rules.
//!
//! nf_tables over netlink ([`crate::nftables`]): setup is one transaction; when the
//! attachment's chain already exists (a repeated ADD) its old jump is deleted in that same
//! transaction, so there is never a second jump. Teardown reads the base chain's rules only
//! when one of the attachment's chains exists, and a read that fails is an error, not
//! "nothing to remove".

use netlink::NfNetlink;

use crate::nftables::matches;
use crate::nftables::{
    BaseChain, Batch, Chain, ChainType, Family, Rule, Table, Verdict, hook, list,
};
use crate::{Error, Session};

const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";
const COMMENT_PREFIX: &str = "macspoofchk-";

/// The reference's `uniqueID(containerID, ifname)`: the attachment id the chains and
/// comments are named after.
pub fn unique_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn table() -> Table {
    Table::new(Family::Bridge, TABLE)
}

fn base_chain() -> Chain {
    Chain::base(
        &table(),
        BASE_CHAIN,
        BaseChain {
            kind: ChainType::Filter,
            hook: hook::PREROUTING,
            priority: -300,
            accept: Some(true),
        },
    )
}

fn iface_chain(id: &str) -> Chain {
    Chain::regular(&table(), &format!("cni-br-iface-{id}"))
}

fn mac_chain(id: &str) -> Chain {
    Chain::regular(&table(), &format!("cni-br-iface-{id}-mac"))
}

fn comment(id: &str) -> String {
    format!("{COMMENT_PREFIX}{id}")
}

/// The MAC spoof check, with its own [`Session`].
#[derive(Debug, Default)]
pub struct SpoofCheck {
    session: Session,
}

impl SpoofCheck {
    /// Spoof check in the calling thread's network namespace (socket opened on first use).
    pub fn system() -> Self {
        Self::default()
    }

    /// See [`setup_in`].
    pub fn setup(&mut self, host_if: &str, mac: &str, id: &str) -> Result<(), Error> {
        setup_in(&mut self.session, host_if, mac, id)
    }

    /// See [`teardown_in`].
    pub fn teardown(&mut self, id: &str) -> Result<(), Error> {
        teardown_in(&mut self.session, id)
    }
}

/// Installs the spoof check of attachment `id` (see [`unique_id`]) for the host port
/// `host_if` of a container with `mac`. A repeated setup replaces the rules.
pub fn setup_in(session: &mut Session, host_if: &str, mac: &str, id: &str) -> Result<(), Error> {
    // The id is part of chain names that `nft` must be able to print and parse back
    // unquoted: only identifier characters are safe there.
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::InvalidSpoofCheckId(id.to_string()));
    }
    let mac = netlink::parse_mac(mac).map_err(|e| Error::netlink("macspoofchk", e))?;
    let nl = session.nl()?;
    let (ic, mc) = (iface_chain(id), mac_chain(id));
    let existing = list::chain(nl, Family::Bridge, TABLE, &ic.name)?.is_some();
    let old_jumps = if existing {
        jumps_of(nl, id)?
    } else {
        Vec::new()
    };
    let c = Some(comment(id));
    let mut jump = matches::iifname(host_if);
    jump.push(matches::verdict(Verdict::Jump(ic.name.clone())));
    let mut ret = matches::ether_saddr(mac);
    ret.push(matches::verdict(Verdict::Return));
    let mut b = Batch::new();
    b.add_table(&table())
        .add_chain(&base_chain())
        .add_chain(&ic)
        .add_chain(&mc);
    if existing {
        for h in old_jumps {
            b.delete_rule(&base_chain(), h);
        }
        b.flush_chain(&ic).flush_chain(&mc);
    }
    b.add_rule(&Rule::new(&base_chain(), jump, c.clone()))
        .add_rule(&Rule::new(
            &ic,
            vec![matches::verdict(Verdict::Jump(mc.name.clone()))],
            c.clone(),
        ))
        .add_rule(&Rule::new(&mc, ret, c.clone()))
        .add_rule(&Rule::new(&mc, vec![matches::verdict(Verdict::Drop)], c));
    b.commit(nl)
}

/// Removes the spoof check of attachment `id`; nothing to remove is success.
pub fn teardown_in(session: &mut Session, id: &str) -> Result<(), Error> {
    let nl = session.nl()?;
    let (ic, mc) = (iface_chain(id), mac_chain(id));
    let has_ic = list::chain(nl, Family::Bridge, TABLE, &ic.name)?.is_some();
    let has_mc = list::chain(nl, Family::Bridge, TABLE, &mc.name)?.is_some();
    if !has_ic && !has_mc {
        // A jump to a chain that does not exist cannot exist either.
        return Ok(());
    }
    let mut b = Batch::new();
    for h in jumps_of(nl, id)? {
        b.delete_rule(&base_chain(), h);
    }
    // Flush both before deleting: the iface chain's jump references the mac chain.
    for (present, c) in [(has_ic, &ic), (has_mc, &mc)] {
        if present {
            b.flush_chain(c);
        }
    }
    for (present, c) in [(has_ic, &ic), (has_mc, &mc)] {
        if present {
            b.delete_chain(c);
        }
    }
    b.commit(nl)
}

/// Handles of the base chain's rules carrying the attachment's comment.
fn jumps_of(nl: &mut NfNetlink, id: &str) -> Result<Vec<u64>, Error> {
    let c = comment(id);
    Ok(
        list::rules(nl, Some(Family::Bridge), TABLE, Some(BASE_CHAIN))?
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some(c.as_str()))
            .filter_map(|r| r.handle)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_unsafe_in_chain_names_are_refused_before_anything_runs() {
        let mut s = SpoofCheck::system();
        let err = s
            .setup("veth1", "02:00:00:00:00:01", "c 1;-eth0")
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSpoofCheckId(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "macspoofchk: container ID and ifname \"c 1;-eth0\" must only contain letters, digits, '_', '-' and '.'"
        );
        // Refused before the socket was even opened.
        assert!(!s.session.is_open());
        assert_eq!(unique_id("c1", "eth0"), "c1-eth0");
        assert_eq!(iface_chain("c1-eth0").name, "cni-br-iface-c1-eth0");
        assert_eq!(mac_chain("c1-eth0").name, "cni-br-iface-c1-eth0-mac");
    }
}
