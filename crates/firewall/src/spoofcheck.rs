//! `macspoofchk` of the bridge plugin: drop frames entering the bridge from the pod's port
//! whose source MAC is not the pod's, with the same nftables layout as the reference
//! (`pkg/link/spoofcheck.go`): table `bridge nat`, base chain `PREROUTING` (filter,
//! prerouting, priority -300), and per attachment the chains `cni-br-iface-<cid>-<ifname>`
//! and `...-mac`, every rule commented `macspoofchk-<cid>-<ifname>`. Keeping the layout
//! lets DEL of either implementation clean up the other's rules.
//!
//! One `nft -f -` transaction for setup; one listing plus one transaction for teardown.

use crate::Error;
use crate::runner::{Runner, SystemRunner, run_ok};

const NFT: &str = "nft";
const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";
const COMMENT_PREFIX: &str = "macspoofchk-";

/// The reference's `uniqueID(containerID, ifname)`: the attachment id the chains and
/// comments are named after.
pub fn unique_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn iface_chain(id: &str) -> String {
    format!("cni-br-iface-{id}")
}

fn mac_chain(id: &str) -> String {
    format!("cni-br-iface-{id}-mac")
}

/// The MAC spoof check, spawning `nft` through a [`Runner`].
#[derive(Debug, Clone, Default)]
pub struct SpoofCheck<R: Runner = SystemRunner> {
    runner: R,
}

impl SpoofCheck {
    /// Spoof check spawning `nft` in the current network namespace.
    pub fn system() -> Self {
        Self::new(SystemRunner::new())
    }
}

impl<R: Runner> SpoofCheck<R> {
    /// Spoof check using `runner` to spawn `nft`.
    pub fn new(runner: R) -> Self {
        Self { runner }
    }

    /// Installs the spoof check of attachment `id` (see [`unique_id`]) for the host port
    /// `host_if` of a container with `mac`. A repeated setup replaces the rules.
    pub fn setup(&self, host_if: &str, mac: &str, id: &str) -> Result<(), Error> {
        // The id becomes part of unquoted nft chain names (nft does not accept quoted chain
        // names in every position): only identifier characters are safe there.
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(Error::InvalidSpoofCheckId(id.to_string()));
        }
        run_ok(
            &self.runner,
            NFT,
            &["-f", "-"],
            Some(&setup_script(host_if, mac, id)),
        )
        .map(drop)
    }

    /// Removes the spoof check of attachment `id`; nothing to remove is success.
    pub fn teardown(&self, id: &str) -> Result<(), Error> {
        let listing = self
            .runner
            .run(NFT, &["-a", "list", "table", "bridge", TABLE], None)?;
        if !listing.success {
            // No `bridge nat` table: nothing of ours can exist.
            return Ok(());
        }
        let Some(script) = teardown_script(&listing.stdout, id) else {
            return Ok(());
        };
        run_ok(&self.runner, NFT, &["-f", "-"], Some(&script)).map(drop)
    }
}

/// The setup transaction. `add` is idempotent and the per-attachment chains are flushed
/// first, so a repeated ADD replaces the rules instead of duplicating them.
fn setup_script(host_if: &str, mac: &str, id: &str) -> String {
    let (ic, mc, comment) = (
        iface_chain(id),
        mac_chain(id),
        format!("{COMMENT_PREFIX}{id}"),
    );
    format!(
        "add table bridge {TABLE}\n\
         add chain bridge {TABLE} {BASE_CHAIN} {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add chain bridge {TABLE} {ic}\n\
         add chain bridge {TABLE} {mc}\n\
         flush chain bridge {TABLE} {ic}\n\
         flush chain bridge {TABLE} {mc}\n\
         add rule bridge {TABLE} {BASE_CHAIN} iifname \"{host_if}\" jump {ic} comment \"{comment}\"\n\
         add rule bridge {TABLE} {ic} jump {mc} comment \"{comment}\"\n\
         add rule bridge {TABLE} {mc} ether saddr {mac} return comment \"{comment}\"\n\
         add rule bridge {TABLE} {mc} drop comment \"{comment}\"\n"
    )
}

/// The teardown transaction for what `nft -a list table bridge nat` printed: the base
/// chain's jump rules carrying our comment (by handle), then our two chains.
/// None when there is nothing of ours.
fn teardown_script(listing: &str, id: &str) -> Option<String> {
    let comment = format!("comment \"{COMMENT_PREFIX}{id}\"");
    let (ic, mc) = (iface_chain(id), mac_chain(id));
    let mut script = String::new();
    let mut chain = String::new();
    let (mut has_ic, mut has_mc) = (false, false);
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            // `chain NAME { # handle N`
            chain = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned();
            has_ic |= chain == ic;
            has_mc |= chain == mc;
            continue;
        }
        if chain == BASE_CHAIN
            && line.contains(&comment)
            && let Some((_, handle)) = line.rsplit_once("# handle ")
        {
            script.push_str(&format!(
                "delete rule bridge {TABLE} {BASE_CHAIN} handle {}\n",
                handle.trim()
            ));
        }
    }
    // Flush both before deleting: the iface chain's jump references the mac chain.
    for (present, name) in [(has_ic, &ic), (has_mc, &mc)] {
        if present {
            script.push_str(&format!("flush chain bridge {TABLE} {name}\n"));
        }
    }
    for (present, name) in [(has_ic, &ic), (has_mc, &mc)] {
        if present {
            script.push_str(&format!("delete chain bridge {TABLE} {name}\n"));
        }
    }
    (!script.is_empty()).then_some(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRunner;

    const LISTING: &str = r#"table bridge nat { # handle 3
	chain PREROUTING { # handle 1
		type filter hook prerouting priority -300; policy accept;
		iifname "veth1" jump cni-br-iface-c1-eth0 comment "macspoofchk-c1-eth0" # handle 5
		iifname "veth2" jump cni-br-iface-c2-eth0 comment "macspoofchk-c2-eth0" # handle 8
	}
	chain cni-br-iface-c1-eth0 { # handle 2
		jump cni-br-iface-c1-eth0-mac comment "macspoofchk-c1-eth0" # handle 6
	}
	chain cni-br-iface-c1-eth0-mac { # handle 4
		ether saddr 02:00:00:00:00:01 return comment "macspoofchk-c1-eth0" # handle 7
		drop comment "macspoofchk-c1-eth0" # handle 9
	}
}
"#;

    #[test]
    fn setup_text() {
        let s = setup_script("veth1", "02:00:00:00:00:01", "c1-eth0");
        assert!(s.contains(
            "add rule bridge nat PREROUTING iifname \"veth1\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\""
        ));
        assert!(s.contains("ether saddr 02:00:00:00:00:01 return"));
    }

    #[test]
    fn teardown_text() {
        let s = teardown_script(LISTING, "c1-eth0").expect("script");
        assert_eq!(
            s,
            "delete rule bridge nat PREROUTING handle 5\n\
             flush chain bridge nat cni-br-iface-c1-eth0\n\
             flush chain bridge nat cni-br-iface-c1-eth0-mac\n\
             delete chain bridge nat cni-br-iface-c1-eth0\n\
             delete chain bridge nat cni-br-iface-c1-eth0-mac\n"
        );
        assert_eq!(teardown_script(LISTING, "c3-eth0"), None);
    }

    #[test]
    fn setup_is_one_transaction() {
        let fake = FakeRunner::new();
        let id = unique_id("c1", "eth0");
        assert_eq!(id, "c1-eth0");
        SpoofCheck::new(&fake)
            .setup("veth1", "02:00:00:00:00:01", &id)
            .unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -f -\n\
             add table bridge nat\n\
             add chain bridge nat PREROUTING { type filter hook prerouting priority -300; policy accept; }\n\
             add chain bridge nat cni-br-iface-c1-eth0\n\
             add chain bridge nat cni-br-iface-c1-eth0-mac\n\
             flush chain bridge nat cni-br-iface-c1-eth0\n\
             flush chain bridge nat cni-br-iface-c1-eth0-mac\n\
             add rule bridge nat PREROUTING iifname \"veth1\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0 jump cni-br-iface-c1-eth0-mac comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0-mac ether saddr 02:00:00:00:00:01 return comment \"macspoofchk-c1-eth0\"\n\
             add rule bridge nat cni-br-iface-c1-eth0-mac drop comment \"macspoofchk-c1-eth0\"\n"
        );
    }

    #[test]
    fn setup_rejects_ids_unsafe_in_chain_names() {
        let fake = FakeRunner::new();
        let err = SpoofCheck::new(&fake)
            .setup("veth1", "02:00:00:00:00:01", "c 1;-eth0")
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSpoofCheckId(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "macspoofchk: container ID and ifname \"c 1;-eth0\" must only contain letters, digits, '_', '-' and '.'"
        );
        assert_eq!(fake.transcript(), "");
    }

    #[test]
    fn setup_failure_keeps_nft_stderr() {
        let fake = FakeRunner::new();
        fake.fail(NFT, "Error: Could not process rule\n");
        let err = SpoofCheck::new(&fake)
            .setup("veth1", "02:00:00:00:00:01", "c1-eth0")
            .unwrap_err();
        match err {
            Error::Failed { stderr, .. } => assert_eq!(stderr, "Error: Could not process rule"),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn teardown_lists_then_deletes_by_handle() {
        let fake = FakeRunner::new();
        fake.answer(NFT, LISTING);
        SpoofCheck::new(&fake).teardown("c1-eth0").unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -a list table bridge nat\n\
             $ nft -f -\n\
             delete rule bridge nat PREROUTING handle 5\n\
             flush chain bridge nat cni-br-iface-c1-eth0\n\
             flush chain bridge nat cni-br-iface-c1-eth0-mac\n\
             delete chain bridge nat cni-br-iface-c1-eth0\n\
             delete chain bridge nat cni-br-iface-c1-eth0-mac\n"
        );
    }

    #[test]
    fn teardown_without_table_or_rules_is_only_a_listing() {
        let fake = FakeRunner::new();
        fake.fail(NFT, "Error: No such file or directory");
        SpoofCheck::new(&fake).teardown("c1-eth0").unwrap();
        fake.answer(NFT, LISTING);
        SpoofCheck::new(&fake).teardown("c3-eth0").unwrap();
        assert_eq!(
            fake.transcript(),
            "$ nft -a list table bridge nat\n$ nft -a list table bridge nat\n"
        );
    }

    #[test]
    fn missing_nft_is_an_error() {
        let fake = FakeRunner::new().without(&[NFT]);
        let err = SpoofCheck::new(&fake).teardown("c1-eth0").unwrap_err();
        assert!(err.is_tool_not_found(), "{err:?}");
    }
}
