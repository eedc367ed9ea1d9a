//! The saved delegate configs: `<dataDir>/<containerID>`, one file per container.
//!
//! The file name is the container ID alone, as the Go plugin names it, so that existing
//! `/var/lib/cni/flannel` directories keep working across a swap of binaries. Limitation kept
//! for that compatibility: two flannel attachments in one container (two ifnames, or two
//! flannel networks sharing a dataDir) would share one file.
//!
//! Writes are crash-safe: temp file (0600) → write → fsync → rename → fsync of the directory.
//! A zero-byte file after a reboot (cni-plugin#43) cannot come from us.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::FlannelError;

/// The directory of saved delegate configs.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store rooted at `dir` (created on first save, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    /// Path of the saved config of `container_id`.
    pub fn path(&self, container_id: &str) -> Result<PathBuf, FlannelError> {
        // The dispatcher validates container IDs; this guards the path join on its own.
        let bad = container_id.is_empty()
            || container_id.starts_with('.')
            || container_id.contains(['/', '\0']);
        if bad {
            return Err(FlannelError::BadContainerId(container_id.to_owned()));
        }
        Ok(self.dir.join(container_id))
    }

    /// Saves `bytes` atomically and durably as the config of `container_id`.
    pub fn save(&self, container_id: &str, bytes: &[u8]) -> Result<(), FlannelError> {
        let path = self.path(container_id)?;
        let io_err = |source| FlannelError::Save {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err)?;
        // A leading dot keeps temp files apart from container IDs (which start with [a-zA-Z0-9]).
        let tmp = self.dir.join(format!(
            ".{}.tmp{}",
            tmp_id_part(container_id),
            std::process::id()
        ));
        let result = write_synced(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err)
    }

    /// The saved bytes of `container_id`, or `None` when there is no saved file.
    pub fn load(&self, container_id: &str) -> Result<Option<Vec<u8>>, FlannelError> {
        let path = self.path(container_id)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FlannelError::Load { path, source }),
        }
    }

    /// Removes the saved config of `container_id`; a missing file is fine.
    pub fn remove(&self, container_id: &str) -> Result<(), FlannelError> {
        let path = self.path(container_id)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(FlannelError::Remove { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Container IDs that have a saved config (temp files excluded); empty when the
    /// directory does not exist.
    pub fn ids(&self) -> Result<Vec<String>, FlannelError> {
        let list_err = |source| FlannelError::List {
            path: self.dir.clone(),
            source,
        };
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(list_err(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_file()) {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// The longest ID prefix a temp file name holds: NAME_MAX (255) less the leading dot, `.tmp`
/// and a pid (at most 7 digits: pid_max is at most 2^22), so that a container ID of any valid
/// length (up to 255 bytes) still has a temp file name.
const TMP_ID_MAX: usize = 255 - 1 - 4 - 7;

/// `container_id`, cut to [`TMP_ID_MAX`] bytes on a character boundary.
fn tmp_id_part(container_id: &str) -> &str {
    let mut end = container_id.len().min(TMP_ID_MAX);
    while !container_id.is_char_boundary(end) {
        end -= 1;
    }
    &container_id[..end]
}

/// Creates/truncates `path` with mode 0600, writes `bytes` and fsyncs.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A leftover temp file keeps its old mode through O_CREAT: force 0600.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn save_load_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/flannel");
        let store = Store::new(&dir);
        assert_eq!(store.load("c1").expect("load"), None);
        assert!(store.ids().expect("ids").is_empty());

        store.save("c1", b"{\"a\":1}").expect("save");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("c1")), 0o600);
        assert_eq!(
            store.load("c1").expect("load").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );

        // Overwrite keeps the mode and replaces the content.
        store.save("c1", b"{}").expect("save again");
        assert_eq!(store.load("c1").expect("load").as_deref(), Some(&b"{}"[..]));
        assert_eq!(mode(&dir.join("c1")), 0o600);

        store.save("c2", b"x").expect("save c2");
        assert_eq!(
            store.ids().expect("ids"),
            vec!["c1".to_owned(), "c2".to_owned()]
        );
        // No temp files left behind.
        assert_eq!(fs::read_dir(&dir).expect("read_dir").count(), 2);

        store.remove("c1").expect("remove");
        store.remove("c1").expect("remove twice");
        assert_eq!(store.load("c1").expect("load"), None);
        assert_eq!(store.ids().expect("ids"), vec!["c2".to_owned()]);
    }

    #[test]
    fn ids_skip_temp_files_and_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::new(tmp.path());
        fs::write(tmp.path().join(".c1.tmp42"), b"x").expect("write");
        fs::create_dir(tmp.path().join("subdir")).expect("mkdir");
        store.save("c3", b"x").expect("save");
        assert_eq!(store.ids().expect("ids"), vec!["c3".to_owned()]);
    }

    #[test]
    fn saves_under_the_longest_file_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::new(tmp.path());
        let id = "c".repeat(255);
        store.save(&id, b"x").expect("save a 255-byte ID");
        assert_eq!(store.ids().expect("ids"), vec![id]);
        assert_eq!(tmp_id_part(&"é".repeat(200)).len(), 242);
    }

    #[test]
    fn refuses_path_like_ids() {
        let store = Store::new("/nonexistent");
        for id in ["", "../x", "a/b", ".", "..", ".hidden"] {
            assert!(
                matches!(store.path(id), Err(FlannelError::BadContainerId(_))),
                "{id}"
            );
        }
    }
}
