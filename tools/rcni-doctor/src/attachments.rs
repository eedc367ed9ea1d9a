//! Which pods the runtime has: libcni's results cache, one file per attachment,
//! `<cache-dir>/results/<network>-<containerID>-<ifname>`, written after a successful ADD and
//! removed by DEL (containerd, cri-o, podman and cnitool all go through libcni).
//!
//! An attachment is live while its network namespace exists. libcni 1.2+ records the netns
//! path (`netns`); older versions do not, and then it is the `sandbox` of the cached result's
//! interfaces. Without either we cannot tell, and count it as live (it is never released).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The cache subdirectory holding results.
pub const RESULTS_DIR: &str = "results";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The netns path, from `netns` or the result's `interfaces[].sandbox`.
    pub netns: Option<PathBuf>,
    pub liveness: Liveness,
}

/// Whether an attachment's netns still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// The path is gone, or no longer a network namespace (unmounted).
    Gone,
    /// No netns recorded, or it cannot be inspected.
    Unknown,
}

/// The cache file's keys we read (libcni `cachedInfo`).
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "containerId")]
    container_id: String,
    #[serde(rename = "ifName")]
    ifname: String,
    #[serde(rename = "networkName")]
    network: String,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    result: Option<Value>,
}

/// The runtime's attachments, and the cache files that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub attachments: Vec<Cached>,
    /// (file, why): files we cannot attribute to an attachment.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Runtime {
    /// Reads `<cache_dir>/results`. An error (the directory is missing or unreadable) means
    /// we cannot tell live pods from gone ones.
    pub fn read(cache_dir: &Path) -> Result<Runtime, String> {
        let dir = cache_dir.join(RESULTS_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "there is no libcni results cache {}: which pods are alive is unknown \
                     (is --cache-dir the runtime's? containerd, cri-o and podman use /var/lib/cni)",
                    dir.display()
                )
            } else {
                format!(
                    "cannot read the libcni results cache {}: {e}",
                    dir.display()
                )
            }
        })?;
        let mut rt = Runtime::default();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match parse(&path) {
                Ok(c) => rt.attachments.push(c),
                Err(why) => rt.unreadable.push((path, why)),
            }
        }
        rt.attachments.sort_by(|a, b| {
            (&a.network, &a.container_id, &a.ifname).cmp(&(&b.network, &b.container_id, &b.ifname))
        });
        Ok(rt)
    }

    /// The attachments of `network` that are not known to be gone.
    pub fn live(&self, network: &str) -> Vec<&Cached> {
        self.attachments
            .iter()
            .filter(|a| a.network == network && a.liveness != Liveness::Gone)
            .collect()
    }

    /// Live `(containerID, ifname)` pairs of `network`.
    pub fn live_pairs(&self, network: &str) -> HashSet<(&str, &str)> {
        self.live(network)
            .into_iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect()
    }

    /// The cached attachment `(cid, ifname)` of `network`, if any.
    pub fn find(&self, network: &str, cid: &str, ifname: Option<&str>) -> Option<&Cached> {
        self.attachments.iter().find(|a| {
            a.network == network && a.container_id == cid && ifname.is_none_or(|i| a.ifname == i)
        })
    }

    /// Unreadable cache files that may belong to `network` (their name starts with it): while
    /// there are any, we cannot say which of its pods are gone.
    pub fn unattributable(&self, network: &str) -> Vec<&(PathBuf, String)> {
        let prefix = format!("{network}-");
        self.unreadable
            .iter()
            .filter(|(p, _)| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect()
    }
}

fn parse(path: &Path) -> Result<Cached, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let e: Entry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let netns = e
        .netns
        .filter(|n| !n.is_empty())
        .or_else(|| sandbox(e.result.as_ref()))
        .map(PathBuf::from);
    let liveness = netns.as_deref().map_or(Liveness::Unknown, netns_liveness);
    Ok(Cached {
        network: e.network,
        container_id: e.container_id,
        ifname: e.ifname,
        netns,
        liveness,
    })
}

/// The first `interfaces[].sandbox` of a cached result (0.3.0+ results have one for the
/// container's interfaces).
fn sandbox(result: Option<&Value>) -> Option<String> {
    result?
        .get("interfaces")?
        .as_array()?
        .iter()
        .filter_map(|i| i.get("sandbox").and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Whether `path` is (still) a network namespace: an nsfs file. A deleted `/run/netns/x`
/// or a dead `/proc/<pid>/ns/net` is gone; so is a bind mount point left unmounted.
pub fn netns_liveness(path: &Path) -> Liveness {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == NSFS_MAGIC => Liveness::Alive,
        Ok(_) => Liveness::Gone,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Liveness::Gone,
        Err(_) => Liveness::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn old_and_new_libcni_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let results = dir.path().join(RESULTS_DIR);
        assert!(
            Runtime::read(dir.path())
                .unwrap_err()
                .contains("no libcni results cache")
        );
        fs::create_dir(&results).expect("mkdir");
        // libcni 1.1: no netns key; the sandbox is this process's own (live) netns.
        fs::write(
            results.join("cbr0-a-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"a","config":"e30=","ifName":"eth0",
                "networkName":"cbr0","result":{"cniVersion":"0.3.1","interfaces":[
                {"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},
                {"name":"eth0","sandbox":"/proc/self/ns/net"}],"ips":[]}}"#,
        )
        .expect("write");
        // libcni 1.2: netns recorded; this one is gone.
        fs::write(
            results.join("cbr0-b-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"b","ifName":"eth0","networkName":"cbr0",
                "netns":"/run/netns/does-not-exist-rcni","result":{}}"#,
        )
        .expect("write");
        // No netns anywhere: unknown, counted live.
        fs::write(
            results.join("cbr0-c-eth0"),
            r#"{"containerId":"c","ifName":"eth0","networkName":"cbr0","result":{"ip4":{}}}"#,
        )
        .expect("write");
        fs::write(
            results.join("other-d-eth0"),
            r#"{"containerId":"d","ifName":"eth0","networkName":"other","netns":"/proc/self/ns/net"}"#,
        )
        .expect("write");
        fs::write(results.join("cbr0-broken"), "{").expect("write");
        fs::write(results.join("zzz-broken"), "").expect("write");

        let rt = Runtime::read(dir.path()).expect("read");
        let live: Vec<(&str, Option<&Path>)> = rt
            .live("cbr0")
            .iter()
            .map(|a| (a.container_id.as_str(), a.netns.as_deref()))
            .collect();
        assert_eq!(
            live,
            [("a", Some(Path::new("/proc/self/ns/net"))), ("c", None)]
        );
        assert_eq!(
            rt.find("cbr0", "b", Some("eth0")).map(|a| a.liveness),
            Some(Liveness::Gone)
        );
        assert!(rt.live_pairs("cbr0").contains(&("c", "eth0")));
        assert_eq!(rt.live("other").len(), 1);
        assert_eq!(rt.unreadable.len(), 2);
        assert_eq!(rt.unattributable("cbr0").len(), 1);
    }

    #[test]
    fn liveness() {
        assert_eq!(
            netns_liveness(Path::new("/proc/self/ns/net")),
            Liveness::Alive
        );
        assert_eq!(netns_liveness(Path::new("/nonexistent/ns")), Liveness::Gone);
        // A plain file where a netns was bind-mounted.
        assert_eq!(
            netns_liveness(Path::new("/proc/self/status")),
            Liveness::Gone
        );
    }
}
