//! The `bridge` CNI plugin: connects a pod to a Linux bridge on the node (`cni0` under
//! flannel) through a veth pair, asks the IPAM plugin for addresses, configures them in the
//! pod, optionally makes the bridge the pod's gateway and masquerades its traffic.
//!
//! A drop-in for containernetworking/plugins' `bridge`: same keys, same result shape, same
//! error messages. Deviations are on purpose and documented where they are made: a failed
//! ADD rolls back everything it did ([`undo`]), DEL removes the masquerade rules even when
//! the pod netns is gone ([`del`]), GC is implemented ([`gc`]), and the bridge-port wait
//! does not sleep in fixed steps ([`add`]).

pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod error;
pub mod gc;
pub mod result;
pub mod status;
pub mod undo;
pub mod vlan;

use cni::CniError;
use cni::skel::{AddOutput, CmdArgs, Plugin};

/// The plugin, as the dispatcher sees it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bridge;

impl Plugin for Bridge {
    const NAME: &'static str = "bridge";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Ok(add::add(args)?.into())
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(del::del(args)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(check::check(args)?)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(status::status(args)?)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(gc::gc(args)?)
    }
}
