//! The dispatcher as a whole: the `CNI_*` environment and stdin of every command through
//! `cni::skel::dispatch`, with a plugin that changes nothing but runs the real config
//! loaders (bridge and host-local, with `CNI_ARGS`) and returns the `prevResult` as its ADD
//! result. Every reply must follow the protocol (see `check_reply`); an ADD's result is
//! printed in the config's version and parses back. (The panic guard is left out: a panic
//! must reach the fuzzer.)
#![no_main]

use cni::skel::{AddOutput, CmdArgs, Plugin, PluginInfo};
use cni::{CniError, CniResult, IpConfig};
use libfuzzer_sys::fuzz_target;
use rcni_fuzz::{check_reply, split};

struct Loaders;

impl Loaders {
    fn load(&self, args: &CmdArgs) -> Result<(), CniError> {
        let bridge = bridge::config::BridgeConf::load(&args.stdin, &args.args)?;
        if args.command == cni::skel::Command::Add {
            bridge.validate_for_add()?;
        }
        if bridge.ipam_type == "host-local" {
            host_local::config::load(&args.stdin, &args.args)?;
        }
        Ok(())
    }
}

impl Plugin for Loaders {
    const NAME: &'static str = "loaders";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        self.load(args)?;
        let mut result = args.conf.parsed_prev_result()?.unwrap_or_default();
        if result.ips.is_empty() {
            result
                .ips
                .push(IpConfig::new("10.0.0.2/24".parse().expect("cidr")));
        }
        Ok(AddOutput::Result(result))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        self.load(args)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        self.load(args)?;
        args.conf.parsed_prev_result()?;
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        self.load(args)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        self.load(args)?;
        args.conf.valid_attachments()?;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (invocations, stdin) = split(data);
    let info = PluginInfo {
        about: "fuzz".into(),
        supported: cni::version::SUPPORTED,
    };
    for inv in invocations.iter().take(8) {
        let env = |k: &str| inv.get(k);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status =
            cni::skel::dispatch(&Loaders, &info, &env, &mut &stdin[..], &mut out, &mut err);
        let reply = check_reply(inv, status, &out);
        if status == 0 && inv.command() == "ADD" {
            let conf: serde_json::Value =
                serde_json::from_slice(stdin).expect("ADD succeeded on JSON");
            let version = match conf["cniVersion"].as_str() {
                None | Some("") => "0.1.0",
                Some(v) => v,
            };
            assert_eq!(reply["cniVersion"], version, "{reply}");
            CniResult::from_json(&reply, "")
                .unwrap_or_else(|e| panic!("our ADD result does not parse: {e:?}"));
        }
        if status == 0 && inv.command() == "VERSION" {
            assert!(reply["supportedVersions"].is_array(), "{reply}");
        }
    }
});
