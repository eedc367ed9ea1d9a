//! The saved delegate configs: `<dataDir>/<containerID>`, one file per container.
//!
//! The file name is the container ID alone, as the Go plugin names it, so that existing
//! `/var/lib/cni/flannel` directories keep working across a swap of binaries. Limitation kept
//! for that compatibility: two flannel attachments in one container (two ifnames, or two
//! flannel networks sharing a dataDir) would share one file.
//!
//! Writes follow the rule of [`atomic_file`]: written and fsynced without a name, published
//! whole (linked when new, renamed over the old one when re-saved), the directory fsynced
//! before ADD goes on; a removal is fsynced too. A zero-byte file after a reboot
//! (cni-plugin#43) cannot come from us, and a save killed at any point leaves no temp file
//! behind unless it was replacing a file; those, and the `.<id>.tmp<pid>` files of earlier
//! versions, are swept by GC and by the next save that replaces a file.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use atomic_file::{Durability, Published};

use crate::error::FlannelError;

/// Mode of saved configs.
const FILE_MODE: u32 = 0o600;

/// The directory of saved delegate configs.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Whether `name` is a temp file of an earlier version (`.<id>.tmp<pid>`), which held no
/// lock: only its age tells that its writer is gone.
fn is_legacy_temp(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp"))
        .is_some_and(|(id, pid)| {
            !id.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
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
        let published = atomic_file::write_replace(
            &self.dir,
            container_id,
            bytes,
            FILE_MODE,
            Durability::Durable,
        )
        .and_then(|p| atomic_file::sync_dir(&self.dir).map(|()| p))
        .map_err(io_err)?;
        // Only a save that replaces a file passes through a temp name: one killed there
        // left it behind. A new file is linked in place and leaves nothing.
        if published == Published::Replaced
            && let Err(e) = self.sweep()
        {
            log::warn!("{e}");
        }
        Ok(())
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

    /// Removes the saved config of `container_id` durably; a missing file is fine.
    pub fn remove(&self, container_id: &str) -> Result<(), FlannelError> {
        let path = self.path(container_id)?;
        let removed =
            atomic_file::remove(&self.dir, container_id).and_then(|removed| match removed {
                true => atomic_file::sync_dir(&self.dir),
                false => Ok(()),
            });
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(FlannelError::Remove { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Removes temp files whose writer is gone (killed mid-save): ours once their lock is
    /// free, earlier versions' once older than [`atomic_file::UNLOCKED_GRACE`]. Returns how
    /// many were removed; nothing to do when the directory does not exist.
    pub fn sweep(&self) -> Result<usize, FlannelError> {
        let list_err = |source| FlannelError::List {
            path: self.dir.clone(),
            source,
        };
        let swept = match atomic_file::sweep(&self.dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(list_err(e)),
        };
        let legacy =
            atomic_file::sweep_legacy(&self.dir, is_legacy_temp, atomic_file::UNLOCKED_GRACE)
                .map_err(list_err)?;
        let n = swept.removed.len() + legacy.len();
        if n > 0 {
            atomic_file::sync_dir(&self.dir).map_err(list_err)?;
        }
        Ok(n)
    }

    /// Container IDs that have a saved config (temp files excluded); empty when the
    /// directory does not exist.
    pub fn ids(&self) -> Result<Vec<String>, FlannelError> {
        flannel_state::saved_configs::ids(&self.dir).map_err(|source| FlannelError::List {
            path: self.dir.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn backdate(path: &Path) {
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
            .expect("set mtime");
    }

    /// Temp files whose writer is gone are swept, a live writer's never: by GC (`sweep`)
    /// and by a save that replaces a file.
    #[test]
    fn leftovers_of_killed_saves_are_swept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::new(tmp.path());
        assert_eq!(
            Store::new(tmp.path().join("none")).sweep().expect("sweep"),
            0
        );
        store.save("c1", b"{}").expect("save");
        // A save killed between naming its temp file and renaming it: our name, no lock.
        let dead = ".tmp-c2.4242.0.l";
        fs::write(tmp.path().join(dead), b"{}").expect("write");
        // An earlier version's leftovers, old and young (maybe still being written).
        fs::write(tmp.path().join(".c3.tmp4243"), b"{}").expect("write");
        backdate(&tmp.path().join(".c3.tmp4243"));
        fs::write(tmp.path().join(".c4.tmp4244"), b"{}").expect("write");
        // A save in progress right now, between naming and renaming: it holds the lock.
        let live = ".tmp-c5.4245.0.l";
        fs::write(tmp.path().join(live), b"{}").expect("write");
        backdate(&tmp.path().join(live));
        let held = fs::File::open(tmp.path().join(live)).expect("open");
        held.lock().expect("lock");

        // A new file is linked in place: that save does not sweep (nor leave anything).
        store.save("c6", b"{}").expect("save");
        assert!(tmp.path().join(dead).exists());
        // Replacing one does.
        store.save("c1", b"{\"a\":1}").expect("save again");
        assert_eq!(
            names(tmp.path()),
            [".c4.tmp4244", live, "c1", "c6"],
            "dead and old leftovers swept, the live writer's file kept"
        );
        assert_eq!(store.ids().expect("ids"), ["c1", "c6"]);
        // Its writer is killed: the kernel drops the lock, GC sweeps the file.
        drop(held);
        assert_eq!(store.sweep().expect("sweep"), 1);
        assert_eq!(names(tmp.path()), [".c4.tmp4244", "c1", "c6"]);
    }

    #[test]
    fn legacy_temp_names() {
        for name in [".c1.tmp42", ".abc.def.tmp1"] {
            assert!(is_legacy_temp(name), "{name}");
        }
        for name in [
            "c1",
            ".c1.tmp",
            ".tmp42",
            ".c1.tmpx",
            ".tmp-c1.1.2.l",
            "c1.tmp42",
        ] {
            assert!(!is_legacy_temp(name), "{name}");
        }
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
