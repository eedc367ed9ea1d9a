//! The config the runtime uses, and the plugins it needs: `cni-config-missing`,
//! `cni-config-invalid`, `plugin-missing`.

use std::os::unix::fs::PermissionsExt;

use super::check;
use crate::Context;
use crate::finding::{CheckResult, Finding, Id, Outcome};
use crate::network::Config;

pub fn config(ctx: &Context) -> CheckResult {
    let outcome = match &ctx.config {
        Config::Loaded { path, list } => Outcome::Pass(format!(
            "{} loads: network {:?}, cniVersion {}, plugins {}",
            path.display(),
            list.name,
            list.effective_version(),
            list.plugin_types().join(", ")
        )),
        Config::Missing(why) => Outcome::Found(Finding::new(Id::CniConfigMissing, why.clone())),
        Config::Invalid { path, reason } => Outcome::Found(Finding::new(
            Id::CniConfigInvalid,
            format!(
                "{} is the config the runtime uses, and it does not load: {reason}. Every pod \
                 ADD fails until it is fixed (install-cni checks a config before installing it)",
                path.display()
            ),
        )),
    };
    CheckResult {
        name: "CNI config",
        outcome,
    }
}

pub fn plugins(ctx: &Context) -> CheckResult {
    check("plugins", || {
        let Config::Loaded { .. } = &ctx.config else {
            return Err(Outcome::Skipped(
                "not checked: needs the network's config".into(),
            ));
        };
        let dir = &ctx.opts.bin_dir;
        let mut found: Vec<&str> = Vec::new();
        let mut missing = Vec::new();
        for need in &ctx.net.needs {
            if found.contains(&need.name.as_str())
                || missing
                    .iter()
                    .any(|(n, _): &(String, String)| *n == need.name)
            {
                continue;
            }
            let path = dir.join(&need.name);
            let executable = std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                found.push(&need.name);
            } else {
                missing.push((need.name.clone(), need.why.clone()));
            }
        }
        if missing.is_empty() {
            return Ok(Outcome::Pass(format!(
                "{} in {}",
                found.join(", "),
                dir.display()
            )));
        }
        let names: Vec<String> = missing
            .iter()
            .map(|(n, why)| format!("{n} ({why})"))
            .collect();
        let first = &missing[0].0;
        Ok(Outcome::Found(Finding::new(
            Id::PluginMissing,
            format!(
                "not an executable in {}: {}. Every ADD fails with \"failed to find plugin \
                 {first:?} in path\": install it there (install-cni installs rcni's plugins; \
                 portmap and others come with containernetworking-plugins), or take it out of \
                 the config",
                dir.display(),
                names.join(", ")
            ),
        )))
    })
}
