//! The `portmap` CNI plugin: forwards `node-address:hostPort` to `pod:containerPort` for the
//! mappings the runtime passes in `runtimeConfig.portMappings` (capability `portMappings`).
//! It runs chained after the plugin that made the pod's interface (kube-flannel's conflist:
//! `flannel`, then `portmap`) and passes that plugin's result through.
//!
//! A drop-in for containernetworking/plugins' `plugins/meta/portmap`: same keys, messages and
//! iptables rules (so either implementation's DEL removes the other's rules). The rules
//! themselves live in the firewall crate ([`firewall::portmap`]); this crate parses the
//! config ([`config`]), picks the pod's addresses from the previous result ([`prev`]) and
//! does the node-side chores ([`host`]: `route_localnet`, stale UDP conntrack entries).
//!
//! Deviations, on purpose: DEL and GC remove the rules of both backends (and the Go plugin's
//! nftables rules), GC is implemented, a failed ADD removes what it installed, invalid ports,
//! protocols and host IPs are rejected before anything is installed (code 7), and the
//! nftables backend's layout does not grow per pod (see [`firewall::portmap`]).

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod error;
pub mod host;
pub mod prev;

use cni::CniError;
use cni::skel::{AddOutput, CmdArgs, Plugin};
use firewall::Attachment;
use firewall::portmap::{self, Request};

use crate::config::PortmapConf;
use crate::error::{Context, Error, Result};

/// The plugin, as the dispatcher sees it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Portmap;

impl Plugin for Portmap {
    const NAME: &'static str = "portmap";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Ok(add(args)?)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(del(args)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(check(args)?)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        // Ready whenever the config is valid: the tools are looked up per call, and a pod
        // without port mappings needs none of them.
        PortmapConf::load(&args.stdin)?;
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(gc(args)?)
    }
}

fn attachment(conf: &PortmapConf, args: &CmdArgs) -> Attachment {
    Attachment {
        network: conf.name.clone(),
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
    }
}

/// ADD: install the mappings for the pod's addresses, then pass the previous result on.
pub fn add(args: &CmdArgs) -> Result<AddOutput> {
    let conf = PortmapConf::load(&args.stdin).map_err(|e| e.prefixed("failed to parse config"))?;
    let prev = args
        .conf
        .parsed_prev_result()?
        .ok_or_else(|| Error::Config("must be called as chained plugin".into()))?;
    if conf.mappings.is_empty() {
        return Ok(prev::passthrough(args, prev));
    }
    let addrs = prev::container_addrs(&prev, &args.ifname);
    let att = attachment(&conf, args);
    let req = Request {
        att: &att,
        addrs: &addrs,
        mappings: &conf.mappings,
        opts: &conf.opts,
    };
    let mapper = portmap::mapper(conf.backend);
    mapper
        .setup(&req)
        .context("failed to set up port mappings")?;
    // 127.0.0.1 may then cross into the bridge (the reference sets it when snat is on).
    if conf.opts.snat
        && let Some(v4) = req.addr(false)
        && let Err(e) = host::enable_route_localnet(v4.ip())
    {
        if let Err(undo) = mapper.teardown(&att) {
            log::warn!("failed to remove the port mappings again: {undo}");
        }
        return Err(e);
    }
    host::flush_stale_udp(&req);
    Ok(prev::passthrough(args, prev))
}

/// DEL: remove the attachment's mappings from both backends. Needs neither the pod's netns
/// nor the previous result: the rules are named after network, container ID (and ifname).
pub fn del(args: &CmdArgs) -> Result<()> {
    let conf = PortmapConf::load(&args.stdin).map_err(|e| e.prefixed("failed to parse config"))?;
    // As the reference: the runtime passes the same portMappings on DEL as on ADD, and an
    // attachment without any has nothing to remove (GC catches what a runtime lost).
    if conf.mappings.is_empty() {
        return Ok(());
    }
    portmap::teardown_all(&attachment(&conf, args)).context("failed to remove port mappings")
}

/// CHECK: the attachment's rules are in place for the addresses of the previous result.
pub fn check(args: &CmdArgs) -> Result<()> {
    let conf = PortmapConf::load(&args.stdin)?;
    let prev = args
        .conf
        .parsed_prev_result()?
        .ok_or_else(|| Error::Config("Required prevResult missing".into()))?;
    if conf.mappings.is_empty() {
        return Ok(());
    }
    let addrs = prev::container_addrs(&prev, &args.ifname);
    let att = attachment(&conf, args);
    let req = Request {
        att: &att,
        addrs: &addrs,
        mappings: &conf.mappings,
        opts: &conf.opts,
    };
    portmap::mapper(conf.backend).check(&req).context("portmap")
}

/// GC: remove the mappings of this network's attachments that are not valid any more.
pub fn gc(args: &CmdArgs) -> Result<()> {
    let conf = PortmapConf::load(&args.stdin)?;
    // Without the list we cannot tell live attachments from stale ones: remove nothing.
    let Some(valid) = args.conf.valid_attachments()? else {
        return Ok(());
    };
    let valid: Vec<Attachment> = valid
        .into_iter()
        .map(|a| Attachment {
            network: conf.name.clone(),
            container_id: a.container_id,
            ifname: a.ifname,
        })
        .collect();
    portmap::gc_all(&conf.name, &valid).context("failed to garbage-collect port mappings")
}
