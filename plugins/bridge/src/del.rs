//! DEL: idempotent, and it finishes its work even when parts of the pod are gone.
//!
//! Order as the reference: delete the container interface (the host veth goes with it),
//! IPAM DEL, spoof-check teardown, masquerade teardown. Unlike the reference, a missing
//! netns (or no CNI_NETNS) does not skip the firewall cleanup: our rules are keyed by
//! network + container ID + ifname, not by the addresses found in the netns, so they are
//! removed even after the pod's netns was destroyed (the reference leaves its `CNI-…`
//! chains behind then). Every step runs even if an earlier one failed; all errors are
//! reported together (a runtime retries DEL until it succeeds).

use cni::skel::CmdArgs;
use netlink::{Netlink, Netns};

use crate::config::BridgeConf;
use crate::error::{Context, Error, Result};
use crate::macspoof;

/// Runs DEL.
pub fn del(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    let mut errors = Vec::new();

    if let Some(path) = &args.netns {
        match Netns::open(path) {
            Ok(ns) => {
                if let Err(e) = delete_container_link(&ns, &args.ifname) {
                    errors.push(e);
                }
            }
            // The netns is gone (pod already torn down, node rebooted): nothing to delete
            // in it, but the IPAM allocation and the rules still have to go
            // (kubernetes#43014).
            Err(e) if e.is_not_found() => {
                log::debug!("netns {} is gone: {e}", path.display());
            }
            Err(e) => errors.push(Error::Netlink {
                context: format!("failed to open netns {:?}", path.display()),
                source: e,
            }),
        }
    }

    if conf.is_layer3()
        && let Err(e) = cni::delegate::del(&conf.ipam_type, &args.stdin, args)
    {
        errors.push(e.into());
    }

    if conf.mac_spoof_chk
        && let Err(e) = macspoof::teardown(&macspoof::ref_id(&args.container_id, &args.ifname))
    {
        // As the reference: a spoof-check leftover must not block the pod's removal.
        log::warn!("{e}");
    }

    if conf.is_layer3() && conf.ip_masq {
        // Both backends and the reference's per-container chain: the pod may have been
        // set up by another backend or by the Go plugin before an upgrade.
        let att = conf.attachment(&args.container_id, &args.ifname);
        if let Err(e) = firewall::teardown_all(&att).context("failed to teardown IP masquerade") {
            errors.push(e);
        }
    }

    Error::collect(errors)
}

/// Deletes `ifname` in the pod netns; a missing link is fine (repeated DEL).
fn delete_container_link(ns: &Netns, ifname: &str) -> Result<()> {
    let mut nl = Netlink::in_netns(ns).context("failed to open netlink in the container netns")?;
    let Some(link) = nl
        .link_by_name(ifname)
        .context(format!("failed to lookup {ifname:?}"))?
    else {
        return Ok(());
    };
    match nl.delete_link(link.index) {
        Err(e) if !e.is_not_found() => Err(Error::Netlink {
            context: format!("failed to delete {ifname:?}"),
            source: e,
        }),
        _ => Ok(()),
    }
}
