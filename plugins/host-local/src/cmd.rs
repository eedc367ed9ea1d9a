//! The CNI commands of `host-local`.

use std::collections::HashSet;
use std::net::IpAddr;

use cni::config::Attachment;
use cni::skel::{AddOutput, CmdArgs, Plugin};
use cni::{CniError, CniResult, IpConfig};
use ipam_store::{AllocError, Allocation, Allocator, DiskStore, Owner, RangeSet, Store};

use crate::config::{self, IpamConfig};
use crate::dns;
use crate::error::PluginError;

/// The plugin (stateless: everything lives in the store).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostLocal;

impl Plugin for HostLocal {
    const NAME: &'static str = "host-local";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Ok(add(args)?.into())
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(del(args)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(check(args)?)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(status(args)?)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(gc(args)?)
    }
}

fn load(args: &CmdArgs) -> Result<IpamConfig, PluginError> {
    config::load(&args.stdin, &args.args)
}

/// Releases the addresses this ADD reserved, and only those: the attachment may hold
/// addresses from an earlier ADD (a repeated ADD fails in a later range set with "duplicate
/// allocation"), and releasing by `(id, ifname)` as the reference does would free them under
/// a running pod. Errors are logged: the ADD error matters more.
fn rollback(store: &DiskStore, reserved: &[IpAddr], args: &CmdArgs) {
    if reserved.is_empty() {
        return;
    }
    let released = store
        .lock()
        .and_then(|mut l| l.release_own(&args.container_id, &args.ifname, reserved));
    if let Err(e) = released {
        log::warn!("releasing after a failed ADD: {e}");
    }
    if let Err(e) = store.sync() {
        log::warn!("after a failed ADD: {e}");
    }
}

/// One address of range set `idx` for the attachment. Its reservation file is written and
/// fsynced before the lock is taken, so concurrent ADDs do not wait on each other's fsync.
fn allocate(
    store: &DiskStore,
    set: &RangeSet,
    idx: usize,
    args: &CmdArgs,
    wanted: Option<IpAddr>,
) -> Result<Allocation, AllocError> {
    let prepared = store.prepare(&args.container_id, &args.ifname)?;
    let mut locked = store.lock()?;
    locked.stage(prepared);
    Allocator::new(set, idx).get(&mut locked, &args.container_id, &args.ifname, wanted)
}

/// ADD: one address per range set, requested ones first.
fn add(args: &CmdArgs) -> Result<CniResult, PluginError> {
    let conf = load(args)?;
    let mut result = CniResult::default();
    if let Some(path) = &conf.resolv_conf {
        result.dns = dns::load(path)?;
    }
    let store = DiskStore::open(&conf.data_dir, &conf.name)?;

    let mut requested = conf.requested.clone();
    for (idx, set) in conf.ranges.iter().enumerate() {
        let wanted = requested
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|pos| requested.remove(pos));
        match allocate(&store, set, idx, args, wanted) {
            Ok(a) => result.ips.push(IpConfig {
                interface: None,
                address: a.address,
                gateway: Some(a.gateway),
            }),
            Err(source) => {
                rollback(&store, &reserved(&result), args);
                return Err(PluginError::Alloc { idx, source });
            }
        }
    }
    if !requested.is_empty() {
        rollback(&store, &reserved(&result), args);
        return Err(PluginError::RequestedLeftover(requested));
    }
    // Reported only once it survives a power cut.
    if let Err(e) = store.sync() {
        rollback(&store, &reserved(&result), args);
        return Err(e.into());
    }
    result.routes = conf.routes;
    Ok(result)
}

/// The addresses reserved so far by this ADD.
fn reserved(result: &CniResult) -> Vec<IpAddr> {
    result.ips.iter().map(|ip| ip.address.ip()).collect()
}

/// DEL: release the attachment's addresses as the reference's one `Release` per range set
/// does, under one lock (unknown attachments succeed).
fn del(args: &CmdArgs) -> Result<(), PluginError> {
    let conf = load(args)?;
    let store = DiskStore::open(&conf.data_dir, &conf.name)?;
    let released = store.lock().and_then(|mut l| {
        l.release_attachment(&args.container_id, &args.ifname, conf.ranges.len())
    });
    let mut errors = Vec::new();
    match released {
        Ok(ips) if !ips.is_empty() => log::debug!("released {ips:?}"),
        Ok(_) => {}
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = store.sync() {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PluginError::Release(errors))
    }
}

/// CHECK: the attachment owns at least one address (any address). A `prevResult` that is
/// there must parse, as for every other plugin.
fn check(args: &CmdArgs) -> Result<(), PluginError> {
    let conf = load(args)?;
    args.conf.parsed_prev_result()?;
    let store = DiskStore::open(&conf.data_dir, &conf.name)?;
    let found = store
        .lock()?
        .find_attachment(&args.container_id, &args.ifname)?;
    if found.is_empty() {
        return Err(PluginError::NotFound(args.container_id.clone()));
    }
    Ok(())
}

/// STATUS: the store directory can be created, opened and locked.
fn status(args: &CmdArgs) -> Result<(), PluginError> {
    let conf = load(args)?;
    let dir = conf.data_dir.join(&conf.name);
    let usable = DiskStore::open(&conf.data_dir, &conf.name).and_then(|s| s.lock().map(drop));
    usable.map_err(|source| PluginError::Unavailable { dir, source })
}

/// GC: remove temp files left by killed processes (always safe: a live writer's
/// are locked), then release every reservation not owned by a valid attachment. `lock`,
/// `last_reserved_ip.*` and the owner index stay. Without `cni.dev/valid-attachments`
/// nothing is released.
fn gc(args: &CmdArgs) -> Result<(), PluginError> {
    let conf = load(args)?;
    let attachments = args.conf.valid_attachments()?;
    let store = DiskStore::open(&conf.data_dir, &conf.name)?;
    let mut locked = store.lock()?;
    locked.remove_stale_temp_files()?;
    let Some(attachments) = attachments else {
        log::warn!("GC without cni.dev/valid-attachments: nothing released");
        drop(locked);
        return Ok(store.sync()?);
    };
    let valid: HashSet<(&str, &str)> = attachments
        .iter()
        .map(|a: &Attachment| (a.container_id.trim(), a.ifname.as_str()))
        .collect();
    let stale: Vec<(IpAddr, Owner)> = locked
        .list()?
        .into_iter()
        .map(|e| (e.ip, e.owner()))
        .filter(|(_, owner)| !owner.is_owned_by(&valid))
        .collect();
    for (ip, owner) in stale {
        log::info!("GC: releasing {ip} ({owner:?})");
        locked.release(ip)?;
    }
    drop(locked);
    Ok(store.sync()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::Path;

    /// Runs one command through the real dispatcher; returns (exit, stdout JSON).
    fn run(command: &str, cid: &str, ifname: &str, cni_args: &str, conf: &Value) -> (i32, Value) {
        let env_vars = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/var/run/netns/unused"),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", cni_args),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        let env = |k: &str| {
            env_vars
                .iter()
                .find(|(n, v)| *n == k && !v.is_empty())
                .map(|(_, v)| (*v).to_owned())
        };
        let info = cni::skel::PluginInfo::named("host-local");
        let stdin = conf.to_string();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cni::skel::dispatch(
            &HostLocal,
            &info,
            &env,
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).expect("stdout JSON")
        };
        (code, v)
    }

    fn conf(dir: &Path, ranges: Value) -> Value {
        json!({"cniVersion": "1.1.0", "name": "net", "type": "bridge",
               "ipam": {"type": "host-local", "dataDir": dir, "ranges": ranges}})
    }

    #[test]
    fn add_check_del_dual_stack() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = conf(
            tmp.path(),
            json!([[{"subnet": "10.0.0.0/30"}], [{"subnet": "fd00::/126"}]]),
        );
        let (code, r) = run("ADD", "c1", "eth0", "", &c);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["ips"][0]["address"], json!("10.0.0.2/30"));
        assert_eq!(r["ips"][1]["address"], json!("fd00::2/126"));
        assert_eq!(run("CHECK", "c1", "eth0", "", &c).0, 0);
        let (code, e) = run("CHECK", "c1", "eth1", "", &c);
        assert_eq!(code, 1);
        assert_eq!(e["code"], json!(999));
        // The v4 set is full: c2 fails and its v6 address is not kept.
        let (code, e) = run("ADD", "c2", "eth0", "", &c);
        assert_eq!(code, 1);
        assert_eq!(
            e["msg"],
            json!(
                "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.2"
            )
        );
        let (code, e) = run("ADD", "c2", "eth0", "IP=fd00::3", &c);
        assert_eq!(code, 1, "{e}");
        assert!(!tmp.path().join("net/fd00::3").exists(), "rolled back");
        assert_eq!(run("DEL", "c1", "eth0", "", &c).0, 0);
        assert!(!tmp.path().join("net/10.0.0.2").exists());
        assert!(!tmp.path().join("net/fd00::2").exists());
        assert_eq!(run("DEL", "c1", "eth0", "", &c).0, 0);
    }

    /// The first range set is served, the second fails: the first's address must go.
    #[test]
    fn a_failed_add_releases_what_it_reserved() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = conf(
            tmp.path(),
            json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/126"}]]),
        );
        // fd00::/126 has two addresses: fill them.
        for cid in ["c1", "c2"] {
            let (code, r) = run("ADD", cid, "eth0", "", &c);
            assert_eq!(code, 0, "{r}");
        }
        let (code, e) = run("ADD", "c3", "eth0", "", &c);
        assert_eq!(code, 1, "{e}");
        assert_eq!(
            e["msg"],
            json!(
                "failed to allocate for range 1: no IP addresses available in range set: fd00::1-fd00::3"
            )
        );
        // c3 got 10.0.0.4 from the first set before the second failed.
        assert!(!tmp.path().join("net/10.0.0.4").exists(), "rolled back");
        let (code, r) = run("ADD", "c4", "eth1", "IP=10.0.0.9", &c);
        assert_eq!(code, 1, "{r}");
        assert!(!tmp.path().join("net/10.0.0.9").exists(), "rolled back");
        // The rest is intact.
        for f in ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"] {
            assert!(tmp.path().join("net").join(f).exists(), "{f}");
        }
    }

    #[test]
    fn check_refuses_a_malformed_prev_result() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = conf(tmp.path(), json!([[{"subnet": "10.0.0.0/24"}]]));
        let (code, r) = run("ADD", "c1", "eth0", "", &c);
        assert_eq!(code, 0, "{r}");
        c["prevResult"] = r;
        assert_eq!(run("CHECK", "c1", "eth0", "", &c).0, 0);
        for bad in [
            json!({"ips": "nope"}),
            json!("x"),
            json!({"ips": [{"address": "10.0.0.300/24"}]}),
        ] {
            c["prevResult"] = bad.clone();
            let (code, e) = run("CHECK", "c1", "eth0", "", &c);
            assert_eq!(code, 1, "{bad}: {e}");
            assert_eq!(e["code"], json!(6), "{bad}: {e}");
            let msg = e["msg"].as_str().unwrap_or_default();
            assert!(msg.starts_with("could not parse prevResult: "), "{msg}");
        }
    }

    #[test]
    fn gc_keeps_valid_and_needs_the_list() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = conf(tmp.path(), json!([[{"subnet": "10.0.0.0/24"}]]));
        for cid in ["a", "b"] {
            assert_eq!(run("ADD", cid, "eth0", "", &c).0, 0);
        }
        // No valid-attachments key: nothing is released.
        assert_eq!(run("GC", "", "", "", &c).0, 0);
        assert!(tmp.path().join("net/10.0.0.3").exists());
        c["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
        assert_eq!(run("GC", "", "", "", &c).0, 0);
        assert!(tmp.path().join("net/10.0.0.2").exists());
        assert!(!tmp.path().join("net/10.0.0.3").exists());
        assert!(tmp.path().join("net/last_reserved_ip.0").exists());
        assert!(tmp.path().join("net/lock").exists());
    }

    #[test]
    fn config_errors_are_code_7() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = conf(tmp.path(), json!([[{"subnet": "10.0.0.0/31"}]]));
        let (code, e) = run("ADD", "c1", "eth0", "", &c);
        assert_eq!(code, 1);
        assert_eq!(e["code"], json!(7));
        assert_eq!(
            e["msg"],
            json!("invalid range set 0: Network 10.0.0.0/31 too small to allocate from")
        );
    }
}
