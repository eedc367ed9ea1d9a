//! The flannel plugin's saved delegate configs: `<dataDir>/<containerID>`, one file per
//! container (the Go plugin's layout). Temp files of an interrupted save start with a dot
//! (container IDs never do) and are not configs.

use std::fs;
use std::io;
use std::path::Path;

/// Container IDs that have a saved config in `dir`, sorted; empty when `dir` does not exist.
/// Only regular files whose name does not start with `.` count.
pub fn ids(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_file()) {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

/// The network a saved config belongs to (its `"name"`); `None` when the file cannot be
/// read or is not a JSON object with a string `name` (the plugin then treats it as its own).
pub fn network_of(dir: &Path, id: &str) -> Option<String> {
    let bytes = fs::read(dir.join(id)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("name")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skip_temp_files_and_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(ids(&tmp.path().join("missing")).unwrap().is_empty());
        fs::write(tmp.path().join(".c1.tmp42"), b"x").unwrap();
        fs::create_dir(tmp.path().join("subdir")).unwrap();
        fs::write(tmp.path().join("c3"), br#"{"name":"cbr0","type":"bridge"}"#).unwrap();
        fs::write(tmp.path().join("c2"), b"garbage").unwrap();
        assert_eq!(ids(tmp.path()).unwrap(), ["c2", "c3"]);
        assert_eq!(network_of(tmp.path(), "c3").as_deref(), Some("cbr0"));
        assert_eq!(network_of(tmp.path(), "c2"), None);
        assert_eq!(network_of(tmp.path(), "nope"), None);
    }
}
