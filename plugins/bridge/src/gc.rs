//! STATUS and GC (CNI 1.1). The reference implements STATUS (forwarded to IPAM) and not
//! GC (plugins#1013); our GC removes the masquerade rules of attachments the runtime no
//! longer knows and forwards GC to IPAM, which releases their addresses.

use cni::skel::CmdArgs;

use crate::config::BridgeConf;
use crate::error::{Context, Result};

/// STATUS: the IPAM plugin's readiness is ours; without IPAM we are always ready.
pub fn status(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    if conf.is_layer3() {
        cni::delegate::status(&conf.ipam_type, &args.stdin, args)?;
    }
    Ok(())
}

/// GC: drop this network's masquerade rules whose attachment is not valid any more, then
/// let IPAM do the same with its allocations.
pub fn gc(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    // Without the list we cannot tell live attachments from stale ones: remove nothing.
    if let Some(valid) = args.conf.valid_attachments()? {
        let valid: Vec<firewall::Attachment> = valid
            .iter()
            .map(|a| conf.attachment(&a.container_id, &a.ifname))
            .collect();
        firewall::gc_all(&conf.name, &valid).context("failed to garbage-collect IP masquerade")?;
    }
    if conf.is_layer3() {
        cni::delegate::gc(&conf.ipam_type, &args.stdin, args)?;
    }
    Ok(())
}
