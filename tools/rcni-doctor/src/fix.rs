//! `--fix`: the repairs the findings carry, each checked again right before it is done.
//!
//! The GC is the one the plugins implement (CNI 1.1 `GC`, run through the same exec path as
//! a runtime's), so there is one implementation of "release what gone pods hold": host-local
//! frees their addresses, flannel its saved configs, bridge their masquerade rules, portmap
//! their port mappings.

use std::path::PathBuf;

use cni::config::{Attachment, ConfList, NetConf};
use cni::skel::{CmdArgs, Command};
use cni::version::SpecVersion;

use crate::Context;
use crate::checks::live_attachments;
use crate::finding::{Repair, Report};
use crate::network::Config;

/// Applies every repair of `report`, once each; returns one line per thing done or refused.
pub fn apply(ctx: &Context, report: &Report) -> Vec<String> {
    let mut done = Vec::new();
    let mut gc_for = Vec::new();
    for f in report.findings() {
        match &f.repair {
            None => {}
            Some(Repair::Sysctl { settings }) => {
                for (key, value) in settings {
                    let dotted = key.replace('/', ".");
                    done.push(match netlink::sysctl::ensure(key, value) {
                        Ok(()) => format!("{}: set {dotted}={value}", f.id),
                        Err(e) => format!("{}: could not set {dotted}={value}: {e}", f.id),
                    });
                }
            }
            Some(Repair::DeleteBridge { name }) => {
                done.push(format!("{}: {}", f.id, delete_bridge(name)));
            }
            Some(Repair::Gc) => gc_for.push(f.id.as_str()),
        }
    }
    if !gc_for.is_empty() {
        let ids = gc_for.join(", ");
        for line in gc(ctx) {
            done.push(format!("{ids}: {line}"));
        }
    }
    done
}

/// Deletes bridge `name` if it still has no ports (a pod may have been added since the
/// check).
fn delete_bridge(name: &str) -> String {
    let run = || -> netlink::Result<String> {
        let mut nl = netlink::Netlink::new()?;
        let Some(link) = nl.link_by_name(name)? else {
            return Ok(format!("{name} is already gone"));
        };
        let ports = nl
            .links()?
            .iter()
            .filter(|l| l.master == Some(link.index))
            .count();
        if ports > 0 {
            return Ok(format!(
                "left {name} alone: it has {ports} ports now (a pod was added meanwhile)"
            ));
        }
        nl.delete_link(link.index)?;
        Ok(format!(
            "deleted {name}; the next pod ADD recreates it with the lease's gateway"
        ))
    };
    run().unwrap_or_else(|e| format!("could not delete {name}: {e}"))
}

/// A CNI GC of the active network: every plugin of the list, in order, with the live
/// attachments as the valid ones. One line per plugin.
fn gc(ctx: &Context) -> Vec<String> {
    let Config::Loaded { list, .. } = &ctx.config else {
        return vec!["no GC: there is no config".into()];
    };
    // Checked again: the repair was offered only when the live pods were known.
    let valid: Vec<Attachment> = match live_attachments(ctx, &list.name) {
        Ok(live) => live
            .iter()
            .map(|a| Attachment {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect(),
        Err(_) => return vec!["no GC: the live pods are not known for sure".into()],
    };
    (0..list.plugins.len())
        .map(|idx| gc_plugin(ctx, list, idx, &valid))
        .collect()
}

fn gc_plugin(ctx: &Context, list: &ConfList, idx: usize, valid: &[Attachment]) -> String {
    let Some(conf) = list.gc_conf(idx, valid) else {
        return format!("plugin {idx}: not an object");
    };
    let ty = conf
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned();
    let bytes = serde_json::to_vec(&conf).unwrap_or_default();
    let path: Vec<PathBuf> = vec![ctx.opts.bin_dir.clone()];
    let result = cni::delegate::find_in_path(&ty, &path).and_then(|plugin| {
        let args = CmdArgs {
            command: Command::Gc,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: cni::args::CniArgs::default(),
            raw_args: String::new(),
            path,
            conf: NetConf::from_slice(&bytes)?,
            stdin: bytes,
            version: SpecVersion::V1_1_0,
        };
        cni::delegate::exec_path(&plugin, Command::Gc, &args.stdin, &args)
    });
    match result {
        Ok(_) => format!(
            "GC of network {:?} by {ty} done ({} kept)",
            list.name,
            match valid.len() {
                1 => "1 live attachment".to_owned(),
                n => format!("{n} live attachments"),
            }
        ),
        Err(e) => format!("GC of network {:?} by {ty} failed: {e}", list.name),
    }
}
