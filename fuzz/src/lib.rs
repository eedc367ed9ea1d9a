//! What the fuzz targets share: the text form of a runtime's invocations (so that the seed
//! corpus can hold real configs as they are), and the checks every reply must pass.

use std::collections::BTreeMap;

/// One plugin invocation: the `CNI_*` variables a runtime sets (absent ones are unset).
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub env: BTreeMap<&'static str, String>,
}

impl Invocation {
    pub fn get(&self, key: &str) -> Option<String> {
        self.env.get(key).cloned()
    }

    pub fn command(&self) -> &str {
        self.env.get("CNI_COMMAND").map_or("", String::as_str)
    }
}

/// The variables of one header line, in order; `-` leaves one unset.
const FIELDS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Splits a fuzz input into invocations and the config (stdin):
///
/// ```text
/// ADD c1 /var/run/netns/p eth0 IgnoreUnknown=1 /opt/cni/bin
/// DEL c1 - eth0
///
/// {"cniVersion": "1.0.0", ...}
/// ```
///
/// One line per invocation, fields separated by one space (`COMMAND CONTAINERID NETNS IFNAME
/// ARGS PATH`; missing trailing fields are unset), then an empty line, then stdin as it is.
/// Without an empty line the whole input is stdin for one ADD.
pub fn split(data: &[u8]) -> (Vec<Invocation>, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        let mut inv = Invocation::default();
        for (k, v) in FIELDS.iter().zip([
            "ADD",
            "c1",
            "/nonexistent/netns",
            "eth0",
            "",
            "/nonexistent",
        ]) {
            if !v.is_empty() {
                inv.env.insert(k, v.to_owned());
            }
        }
        return (vec![inv], data);
    };
    let header = String::from_utf8_lossy(&data[..at]);
    let invocations = header
        .lines()
        .map(|line| {
            let mut inv = Invocation::default();
            for (k, v) in FIELDS.iter().zip(line.split(' ')) {
                if v != "-" {
                    inv.env.insert(k, v.to_owned());
                }
            }
            inv
        })
        .collect();
    (invocations, &data[at + 2..])
}

/// What the dispatcher printed and returned, checked against the protocol: exit status 0 or
/// 1; on 1 a CNI error object (integer `code`, non-empty `msg`); on 0 nothing or one JSON
/// document. Returns the parsed stdout (Null when empty).
pub fn check_reply(inv: &Invocation, status: i32, stdout: &[u8]) -> serde_json::Value {
    assert!(status == 0 || status == 1, "exit status {status}");
    let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
    if status == 0 && text.is_empty() {
        return serde_json::Value::Null;
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {text:?}"));
    if status == 1 {
        let code = v["code"].as_u64().unwrap_or_else(|| panic!("no code: {v}"));
        assert!(code > 0, "error code 0: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {v}"
        );
    } else {
        assert!(
            matches!(inv.command(), "ADD" | "VERSION"),
            "{} printed {text:?}",
            inv.command()
        );
    }
    v
}

/// A temp dir on tmpfs where there is one (fsync is free there: the targets are about
/// what the store does, not about the disk).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("rcni-fuzz-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::Builder::new()
        .prefix("rcni-fuzz-")
        .tempdir()
        .expect("tempdir")
}
