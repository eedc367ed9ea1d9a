//! A minimal plugin on top of the dispatcher: ADD returns one address, everything else succeeds.
//!
//! Try it: `CNI_COMMAND=VERSION cargo run -p cni --example noop-plugin`.

use cni::skel::{AddOutput, CmdArgs, Entry, Plugin};
use cni::{CniError, CniResult, IpConfig};

#[derive(Default)]
struct Noop;

impl Plugin for Noop {
    const NAME: &'static str = "noop";

    fn add(&self, _args: &CmdArgs) -> Result<AddOutput, CniError> {
        let address = "10.22.0.2/16"
            .parse()
            .map_err(|e| CniError::internal(format!("{e}")))?;
        Ok(CniResult {
            ips: vec![IpConfig::new(address)],
            ..CniResult::default()
        }
        .into())
    }

    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }

    fn check(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

fn main() {
    Entry::of::<Noop>().run()
}
