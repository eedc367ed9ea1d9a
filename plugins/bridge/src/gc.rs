//! GC (CNI 1.1), which the reference does not implement (plugins#1013): our GC removes the
//! masquerade rules of attachments the runtime no longer knows and forwards GC to IPAM,
//! which releases their addresses.

use cni::skel::CmdArgs;

use crate::config::BridgeConf;
use crate::error::{Context, Result};

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
