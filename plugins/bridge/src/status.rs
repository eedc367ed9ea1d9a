//! STATUS (CNI 1.1), as the reference: forwarded to IPAM, whose readiness is ours.

use cni::skel::CmdArgs;

use crate::config::BridgeConf;
use crate::error::Result;

/// STATUS: the IPAM plugin's readiness is ours; without IPAM we are always ready.
pub fn status(args: &CmdArgs) -> Result<()> {
    let conf = BridgeConf::load(&args.stdin, &args.args)?;
    if conf.is_layer3() {
        cni::delegate::status(&conf.ipam_type, &args.stdin, args)?;
    }
    Ok(())
}
