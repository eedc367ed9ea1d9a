//! The real `host-local` plugin through the dispatcher: a sequence of commands (ADD, DEL,
//! CHECK, GC, STATUS, VERSION, anything) with one config, on a store in a temp dir (the
//! config's `ipam.dataDir` is replaced; a `resolvConf` string becomes the content of a temp
//! file). Besides the protocol checks: an ADD that succeeds owns every address it returns, an
//! ADD that fails leaves the reservations as they were (it undoes only what it did), a DEL
//! removes only its attachment's reservations and leaves none, a successful CHECK has one,
//! and GC keeps exactly the reservations of the valid attachments.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cni::skel::Command;
use ipam_store::store::reservation_content;
use ipam_store::{Entry, Owner};
use libfuzzer_sys::fuzz_target;
use rcni_fuzz::{check_reply, split};
use serde_json::Value;

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(rcni_fuzz::scratch_dir).path()
}

/// Reservation files (named by an address) of the store directory: name → content.
fn reservations(dir: &Path) -> BTreeMap<String, String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.parse::<std::net::IpAddr>().ok()?;
            let content = std::fs::read(e.path()).ok()?;
            Some((name, String::from_utf8_lossy(&content).trim().to_owned()))
        })
        .collect()
}

/// The config with its store and resolv.conf moved into `root`.
fn sandboxed(stdin: &[u8], root: &Path) -> (Vec<u8>, Option<PathBuf>) {
    let Ok(Value::Object(mut conf)) = serde_json::from_slice::<Value>(stdin) else {
        return (stdin.to_vec(), None);
    };
    let data = root.join("data");
    let Some(Value::Object(ipam)) = conf.get_mut("ipam") else {
        return (stdin.to_vec(), None);
    };
    ipam.insert(
        "dataDir".into(),
        Value::from(data.to_string_lossy().into_owned()),
    );
    if let Some(Value::String(text)) = ipam.get("resolvConf") {
        let path = root.join("resolv.conf");
        std::fs::write(&path, text).expect("write resolv.conf");
        ipam.insert(
            "resolvConf".into(),
            Value::from(path.to_string_lossy().into_owned()),
        );
    }
    let dir = match conf.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Some(data.join(n)),
        _ => None,
    };
    (
        serde_json::to_vec(&Value::Object(conf)).expect("serialize"),
        dir,
    )
}

fn live(e: &Entry, valid: &[(String, String)]) -> bool {
    match e.owner() {
        Owner::Attachment {
            container_id,
            ifname,
        } => valid
            .iter()
            .any(|(c, i)| *c == container_id && *i == ifname),
        Owner::Container(c) => valid.iter().any(|(v, _)| *v == c),
        Owner::Unknown => false,
    }
}

fn entry(name: &str, content: &str) -> Entry {
    Entry {
        ip: name.parse().expect("ip"),
        content: content.to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let root = scratch();
    let _ = std::fs::remove_dir_all(root.join("data"));
    let (invocations, stdin) = split(data);
    let (stdin, store_dir) = sandboxed(stdin, root);
    let info = cni::skel::PluginInfo::named("host-local");
    for inv in invocations.iter().take(12) {
        let before = store_dir.as_deref().map(reservations).unwrap_or_default();
        let env = |k: &str| inv.get(k);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = cni::skel::dispatch(
            &host_local::cmd::HostLocal,
            &info,
            &env,
            &mut &stdin[..],
            &mut out,
            &mut err,
        );
        let reply = check_reply(inv, status, &out);
        let Some(dir) = store_dir.as_deref() else {
            continue;
        };
        let after = reservations(dir);
        let cid = inv.get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = inv.get("CNI_IFNAME").unwrap_or_default();
        let mine = reservation_content(&cid, &ifname);
        let removed: Vec<(&String, &String)> = before
            .iter()
            .filter(|(n, _)| !after.contains_key(*n))
            .collect();
        match (Command::parse(inv.command()), status) {
            (Some(Command::Add), 0) => {
                let result = cni::CniResult::from_json(&reply, "").expect("ADD result parses");
                assert!(!result.ips.is_empty(), "ADD without an address: {reply}");
                for ip in &result.ips {
                    let name = ip.address.ip().to_string();
                    assert_eq!(after.get(&name), Some(&mine), "{name} not owned by the ADD");
                    assert!(
                        !before.contains_key(&name),
                        "{name} was already taken: {before:?}"
                    );
                }
                assert!(removed.is_empty(), "ADD removed {removed:?}");
            }
            (Some(Command::Add), _) => {
                assert_eq!(
                    before, after,
                    "a failed ADD changed the reservations: {reply}"
                );
            }
            (Some(Command::Del), 0) => {
                assert!(
                    !after.values().any(|c| *c == mine),
                    "DEL left {mine:?}: {after:?}"
                );
                for (n, c) in &removed {
                    assert!(**c == mine || **c == cid.trim(), "DEL removed {n}={c:?}");
                }
            }
            (Some(Command::Check), 0) => {
                assert!(
                    after.values().any(|c| *c == mine || *c == cid.trim()),
                    "CHECK passed without a reservation: {after:?}"
                );
            }
            (Some(Command::Gc), 0) => {
                let conf = cni::config::NetConf::from_slice(&stdin).expect("GC config parsed");
                if let Ok(Some(valid)) = conf.valid_attachments() {
                    let valid: Vec<(String, String)> = valid
                        .into_iter()
                        .map(|a| (a.container_id.trim().to_owned(), a.ifname))
                        .collect();
                    for (n, c) in &after {
                        assert!(live(&entry(n, c), &valid), "GC kept {n}={c:?}");
                    }
                    for (n, c) in &removed {
                        assert!(!live(&entry(n, c), &valid), "GC removed live {n}={c:?}");
                    }
                } else {
                    assert!(removed.is_empty(), "GC without a list removed {removed:?}");
                }
            }
            _ => {
                if !matches!(inv.command(), "DEL" | "GC") {
                    assert_eq!(before, after, "{} changed the reservations", inv.command());
                }
            }
        }
    }
});
