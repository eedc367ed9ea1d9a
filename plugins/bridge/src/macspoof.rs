//! `macspoofchk`: drop frames entering the bridge from the pod's port whose source MAC is
//! not the pod's, with the same nftables layout as the reference (`pkg/link/spoofcheck.go`):
//! table `bridge nat`, base chain `PREROUTING` (filter, prerouting, priority -300), and per
//! attachment the chains `cni-br-iface-<cid>-<ifname>` and `...-mac`, every rule commented
//! `macspoofchk-<cid>-<ifname>`. Keeping the layout lets DEL of either implementation
//! clean up the other's rules.
//!
//! The firewall crate only knows masquerade, so this module spawns `nft` itself: one
//! transaction for setup, one listing plus one transaction for teardown.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";
const COMMENT_PREFIX: &str = "macspoofchk-";
/// Where `nft` is looked for when it is not on the (often minimal) runtime `PATH`.
const NFT_PATHS: &[&str] = &["nft", "/usr/sbin/nft", "/sbin/nft"];

/// The reference's `uniqueID(containerID, ifname)`.
pub fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn iface_chain(id: &str) -> String {
    format!("cni-br-iface-{id}")
}

fn mac_chain(id: &str) -> String {
    format!("cni-br-iface-{id}-mac")
}

/// The setup transaction. `add` is idempotent and the per-attachment chains are flushed
/// first, so a repeated ADD replaces the rules instead of duplicating them.
pub fn setup_script(host_if: &str, mac: &str, id: &str) -> String {
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
pub fn teardown_script(listing: &str, id: &str) -> Option<String> {
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

/// Runs `nft <args>` with `stdin`; returns stdout, or the failure with nft's stderr.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
    let mut last_err = None;
    for prog in NFT_PATHS {
        let child = Command::new(prog)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                return Err(Error::Io {
                    context: "failed to run nft".into(),
                    source: e,
                });
            }
        };
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads the whole file before it exits; EPIPE only means it failed early,
            // and its stderr (checked below) says why.
            let _ = pipe.write_all(text.as_bytes());
        }
        return child.wait_with_output().map_err(|e| Error::Io {
            context: "failed to run nft".into(),
            source: e,
        });
    }
    Err(Error::Io {
        context: "failed to run nft".into(),
        source: last_err.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
    })
}

/// Installs the spoof check for the host port `host_if` of a container with `mac`.
pub fn setup(host_if: &str, mac: &str, id: &str) -> Result<()> {
    // The id becomes part of unquoted nft chain names (nft does not accept quoted chain
    // names in every position): only identifier characters are safe there.
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::Config(format!(
            "macspoofchk: container ID and ifname {id:?} must only contain letters, digits, '_', '-' and '.'"
        )));
    }
    let out = nft(&["-f", "-"], Some(&setup_script(host_if, mac, id)))?;
    if !out.status.success() {
        return Err(Error::State(format!(
            "failed to setup spoof-check: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Removes the spoof check of attachment `id`; nothing to remove is success.
pub fn teardown(id: &str) -> Result<()> {
    let listing = nft(&["-a", "list", "table", "bridge", TABLE], None)?;
    if !listing.status.success() {
        // No `bridge nat` table: nothing of ours can exist.
        return Ok(());
    }
    let Some(script) = teardown_script(&String::from_utf8_lossy(&listing.stdout), id) else {
        return Ok(());
    };
    let out = nft(&["-f", "-"], Some(&script))?;
    if !out.status.success() {
        return Err(Error::State(format!(
            "failed to teardown spoof-check: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let listing = r#"table bridge nat { # handle 3
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
        let s = teardown_script(listing, "c1-eth0").expect("script");
        assert_eq!(
            s,
            "delete rule bridge nat PREROUTING handle 5\n\
             flush chain bridge nat cni-br-iface-c1-eth0\n\
             flush chain bridge nat cni-br-iface-c1-eth0-mac\n\
             delete chain bridge nat cni-br-iface-c1-eth0\n\
             delete chain bridge nat cni-br-iface-c1-eth0-mac\n"
        );
        assert_eq!(teardown_script(listing, "c3-eth0"), None);
    }
}
