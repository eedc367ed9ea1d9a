//! What the plugins keep on disk for pods: `stale-reservation`, `pool-nearly-exhausted`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipam_store::{Entry, Owner, RawRange};

use super::{check, count, list, short_id};
use crate::Context;
use crate::attachments::{Cached, Liveness};
use crate::finding::{CheckResult, Finding, Id, Outcome, Repair};
use crate::network::Config;
use crate::node::Kernel;

/// The attachments of the active network the runtime still has, or why they cannot be
/// known for sure (then nothing may be called stale, let alone released).
pub fn live_attachments<'a>(ctx: &'a Context, network: &str) -> Result<Vec<&'a Cached>, Outcome> {
    let rt = ctx
        .runtime
        .as_ref()
        .map_err(|e| Outcome::Unchecked(e.clone()))?;
    let unreadable = rt.unattributable(network);
    if !unreadable.is_empty() {
        let files: Vec<String> = unreadable
            .iter()
            .map(|(p, why)| format!("{} ({why})", p.display()))
            .collect();
        return Err(Outcome::Unchecked(format!(
            "libcni cache entries of {network:?} cannot be read, so its live pods are unknown: {}",
            list(&files, 3)
        )));
    }
    let live = rt.live(network);
    // A pod the cache does not list still has its veth on the bridge: then the cache is not
    // the whole truth (another runtime, another --cache-dir, a wiped cache).
    if let Some(bridge) = &ctx.net.bridge {
        let kernel = ctx.kernel()?;
        if let Some(link) = kernel.link(bridge) {
            let ports = kernel
                .ports(link)
                .into_iter()
                .filter(|p| p.kind.as_deref() == Some("veth"))
                .count();
            if ports > live.len() && !ports_settle(bridge, live.len()) {
                return Err(Outcome::Unchecked(format!(
                    "{bridge} has {ports} pod ports but the libcni cache in {} lists {} live \
                     pods of {network:?}: it does not know every pod (is --cache-dir the \
                     runtime's?), so gone pods cannot be told from live ones",
                    ctx.opts.cache_dir.display(),
                    live.len()
                )));
            }
        }
    }
    Ok(live)
}

/// Whether the veths on `bridge` drop to `max` within a moment: a pod whose netns was
/// deleted just now keeps its host veth until the kernel has torn the netns down, which it
/// does asynchronously (milliseconds). Polls the condition, with a deadline.
fn ports_settle(bridge: &str, max: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match Kernel::veth_ports_now(bridge) {
            Some(n) if n <= max => return true,
            None => return false,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Why the owner of a reservation or saved config counts as gone.
fn why_gone(ctx: &Context, network: &str, cid: &str, ifname: Option<&str>) -> String {
    let cached = ctx
        .runtime
        .as_ref()
        .ok()
        .and_then(|rt| rt.find(network, cid, ifname));
    match cached {
        Some(c) if c.liveness == Liveness::Gone => format!(
            "its netns {} no longer exists",
            c.netns
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        ),
        _ => "the runtime has no such pod".to_owned(),
    }
}

/// A repair by GC, unless the config turns GC off.
fn gc_repair(ctx: &Context, network: &str, live: usize, what: &str) -> Option<(String, Repair)> {
    let Config::Loaded { list, .. } = &ctx.config else {
        return None;
    };
    if list.disable_gc {
        return None;
    }
    Some((
        format!(
            "{what}: a CNI GC of network {network:?} with its {} as the valid ones, as a \
             CNI 1.1 runtime sends it",
            count(live, "live attachment")
        ),
        Repair::Gc,
    ))
}

pub fn stale_reservations(ctx: &Context) -> CheckResult {
    check("reservations", || {
        let network = ctx.network_name()?;
        let entries = ctx
            .reservations
            .as_ref()
            .map_err(|e| Outcome::Unchecked(e.clone()))?;
        let saved = saved_configs(ctx, network)?;
        if entries.is_empty() && saved.is_empty() {
            return Ok(Outcome::Pass(format!(
                "no addresses reserved and no saved configs for {network:?}"
            )));
        }
        let live = live_attachments(ctx, network)?;
        let pairs: HashSet<(&str, &str)> = live
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let cids: HashSet<&str> = live.iter().map(|a| a.container_id.as_str()).collect();

        let stale_ips: Vec<String> = entries
            .iter()
            .filter(|e| !e.owner().is_owned_by(&pairs))
            .map(|e| describe(ctx, network, e))
            .collect();
        let stale_saved: Vec<String> = saved
            .iter()
            .filter(|id| !cids.contains(id.as_str()))
            .map(|id| format!("{} ({})", short_id(id), why_gone(ctx, network, id, None)))
            .collect();
        if stale_ips.is_empty() && stale_saved.is_empty() {
            return Ok(Outcome::Pass(format!(
                "{} and {}, all of the {}",
                count(entries.len(), "reserved address"),
                count(saved.len(), "saved config"),
                count(live.len(), "live pod")
            )));
        }
        let mut parts = Vec::new();
        if !stale_ips.is_empty() {
            let dir = ctx
                .net
                .ipam_dir
                .as_deref()
                .map(|d| d.join(network).display().to_string())
                .unwrap_or_default();
            parts.push(format!(
                "{} of {} addresses reserved in {dir} belong to pods that are gone: {}",
                stale_ips.len(),
                entries.len(),
                list(&stale_ips, 4)
            ));
        }
        if !stale_saved.is_empty() {
            let dir = ctx
                .net
                .flannel
                .as_ref()
                .map(|f| f.data_dir.display().to_string())
                .unwrap_or_default();
            parts.push(format!(
                "{} in {dir} too: {}",
                count(stale_saved.len(), "saved flannel config"),
                list(&stale_saved, 4)
            ));
        }
        let mut message = format!(
            "{}. Their DEL never ran (a runtime crash, a node reboot, rm -rf of a pod's state): \
             the addresses stay taken until released",
            parts.join("; ")
        );
        let finding = match gc_repair(ctx, network, live.len(), "release them") {
            Some((what, repair)) => {
                Finding::new(Id::StaleReservation, message).with_repair(what, repair)
            }
            None => {
                message.push_str(
                    "; the config sets disableGC, so remove the files by hand (host-local's \
                     file name is the address)",
                );
                Finding::new(Id::StaleReservation, message)
            }
        };
        Ok(Outcome::Found(finding))
    })
}

/// flannel's saved configs of `network` (files of other networks sharing the dir excluded;
/// unreadable ones count, as the plugin's GC counts them).
fn saved_configs(ctx: &Context, network: &str) -> Result<Vec<String>, Outcome> {
    let Some(f) = &ctx.net.flannel else {
        return Ok(Vec::new());
    };
    let ids = flannel_state::saved_configs::ids(&f.data_dir).map_err(|e| {
        Outcome::Unchecked(format!(
            "cannot list flannel's saved configs in {}: {e}",
            f.data_dir.display()
        ))
    })?;
    Ok(ids
        .into_iter()
        .filter(|id| {
            flannel_state::saved_configs::network_of(&f.data_dir, id).is_none_or(|n| n == network)
        })
        .collect())
}

fn describe(ctx: &Context, network: &str, e: &Entry) -> String {
    match e.owner() {
        Owner::Attachment {
            container_id,
            ifname,
        } => format!(
            "{} (pod {}/{ifname}: {})",
            e.ip,
            short_id(&container_id),
            why_gone(ctx, network, &container_id, Some(&ifname))
        ),
        Owner::Container(cid) => format!(
            "{} (pod {}: {})",
            e.ip,
            short_id(&cid),
            why_gone(ctx, network, &cid, None)
        ),
        Owner::Unknown => format!(
            "{} (the file names no pod: an ADD was killed while writing it)",
            e.ip
        ),
    }
}

/// At or above this share of the node's range reserved, warn.
const NEARLY_FULL_PERCENT: u128 = 90;

pub fn pool(ctx: &Context) -> CheckResult {
    check("address pool", || {
        ctx.network_name()?;
        let env = ctx.env()?;
        let Some(subnet) = env.subnet else {
            return Err(Outcome::Skipped(
                "not checked: IPv6 only (a /64 does not fill up)".into(),
            ));
        };
        if ctx.net.ipam_dir.is_none() {
            return Err(Outcome::Skipped(
                "not checked: the IPAM is not host-local".into(),
            ));
        }
        let entries = ctx
            .reservations
            .as_ref()
            .map_err(|e| Outcome::Unchecked(e.clone()))?;
        // The range flannel hands host-local: the whole subnet, gateway excluded.
        let raw = RawRange {
            subnet: Some(subnet.to_string()),
            ..RawRange::default()
        };
        let range = raw
            .parse()
            .and_then(|r| r.canonicalize())
            .map_err(|e| Outcome::Unchecked(format!("the range of {subnet}: {e}")))?;
        let span = |a: IpAddr| ipam_store::ip::to_u128(a);
        let mut size = span(range.range_end) - span(range.range_start) + 1;
        if range.contains(range.gateway) {
            size -= 1;
        }
        let used = entries.iter().filter(|e| range.contains(e.ip)).count() as u128;
        let percent = used * 100 / size.max(1);
        let summary = format!("{used} of {size} addresses of {subnet} are reserved ({percent}%)");
        if percent < NEARLY_FULL_PERCENT {
            return Ok(Outcome::Pass(summary));
        }
        Ok(Outcome::Found(Finding::new(
            Id::PoolNearlyExhausted,
            format!(
                "{summary}: new pods fail with \"no IP addresses available in range set\" once it \
                 is full. Release stale reservations (see stale-reservation), run fewer pods per \
                 node (kubelet --max-pods), or give nodes larger subnets (SubnetLen in flannel's \
                 net-conf.json)"
            ),
        )))
    })
}
