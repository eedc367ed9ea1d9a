//! DEL: idempotent, and it finishes its work even when parts of the pod are gone.
//!
//! Order as the reference: delete the container interface (the host veth goes with it),
//! IPAM DEL, spoof-check teardown, masquerade teardown. Unlike the reference, a missing
//! netns (or no CNI_NETNS) does not skip the firewall cleanup: our rules are keyed by
//! network + container ID + ifname, not by the addresses found in the netns, so they are
//! removed even after the pod's netns was destroyed (the reference leaves its `CNI-…`
//! chains behind then). Every step runs even if an earlier one failed; all errors are
//! reported together (a runtime retries DEL until it succeeds). The masquerade teardown
//! runs concurrently with the rest (see [`del`]).

use cni::skel::CmdArgs;
use netlink::{Netlink, Netns};

use crate::config::BridgeConf;
use crate::error::{Context, Error, Result};

/// Runs DEL.
///
/// The firewall teardowns (masquerade, spoof check) run on their own thread, concurrently
/// with the link deletion and IPAM DEL: they read and commit over netlink in well under a
/// millisecond, while deleting the veth waits for RCU grace periods in
/// `unregister_netdevice`. They share one nfnetlink session, closed only after the rest of
/// DEL is done. An nf_tables transaction that deletes something leaves destruction work
/// behind that waits one RCU grace period, and closing the socket waits for that work
/// while holding the namespace's nf_tables commit mutex. Closed right after the commit,
/// every DEL of a burst would hold that mutex for a grace period in turn (the burst
/// serializes); closed after the veth deletion, the grace period has usually passed and
/// the close is immediate.
///
/// This changes no outcome: the rules are keyed by the attachment, not by anything in the
/// netns, and the pod's processes are gone when DEL is called. Errors are reported in the
/// reference's order; a spoof-check leftover is only logged, as the reference does.
pub fn del(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    let masq = (conf.is_layer3() && conf.ip_masq)
        .then(|| conf.attachment(&args.container_id, &args.ifname));
    let spoof = conf
        .mac_spoof_chk
        .then(|| firewall::spoofcheck::unique_id(&args.container_id, &args.ifname));

    std::thread::scope(|s| {
        let firewall = (masq.is_some() || spoof.is_some()).then(|| {
            s.spawn(move || {
                let mut session = firewall::Session::new();
                if let Some(id) = spoof
                    && let Err(e) = firewall::spoofcheck::teardown_in(&mut session, &id)
                {
                    log::warn!("{}", Error::spoofcheck("teardown", e));
                }
                // Both backends and the reference's per-container chain: the pod may have
                // been set up by another backend or by the Go plugin before an upgrade.
                let masq = masq.map(|att| {
                    firewall::teardown_all_in(&mut session, &att)
                        .context("failed to teardown IP masquerade")
                });
                (masq, session)
            })
        });
        let mut errors = del_pod_side(args, &conf);
        if let Some(handle) = firewall {
            match handle.join() {
                Ok((masq, session)) => {
                    if let Some(Err(e)) = masq {
                        errors.push(e);
                    }
                    drop(session);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Error::collect(errors)
    })
}

/// The container link and IPAM. Every step runs even if an earlier one failed.
fn del_pod_side(args: &CmdArgs, conf: &BridgeConf) -> Vec<Error> {
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
    errors
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
