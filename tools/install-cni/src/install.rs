//! The atomic file install: temporary file in the target directory, fsync, rename, fsync
//! of the directory. A reader (kubelet, containerd, a runtime exec'ing a plugin) sees either
//! the old file or the new one, never a partial one, even across a crash; and a running
//! binary is replaced without `ETXTBSY`.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use crate::Error;

/// What [`install_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target was created or replaced.
    Installed,
    /// The target already had these bytes and this mode: nothing was written.
    Unchanged,
}

/// Mode of installed binaries.
pub const BIN_MODE: u32 = 0o755;
/// Mode of installed configs.
pub const CONF_MODE: u32 = 0o644;

/// Prefix of our temporary files. Hidden, and without a `.conf`/`.conflist`/`.json` suffix,
/// so neither libcni's config loader nor a `CNI_PATH` lookup ever picks one up.
const TEMP_PREFIX: &str = ".install-cni.";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// True for names [`install_file`] uses for its temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Installs `contents` as `dir/name` with `mode`, atomically; creates `dir` (0755) when
/// missing. Does nothing when the target already has the same bytes and mode.
pub fn install_file(contents: &[u8], dir: &Path, name: &str, mode: u32) -> Result<Outcome, Error> {
    let target = dir.join(name);
    let fail = |step: &'static str| {
        let target = target.clone();
        move |source: io::Error| Error::Install {
            target,
            step,
            source,
        }
    };
    if is_up_to_date(&target, contents, mode).map_err(fail("reading the current file"))? {
        return Ok(Outcome::Unchanged);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(fail("creating the directory"))?;

    let temp = Temp::create(dir, name, mode).map_err(fail("creating a temporary file"))?;
    write_synced(temp.file()?, contents, mode).map_err(fail("writing the temporary file"))?;
    fs::rename(&temp.path, &target).map_err(fail("renaming the temporary file"))?;
    temp.disarm();
    // The rename is durable only once the directory is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("syncing the directory"))?;
    Ok(Outcome::Installed)
}

/// Same bytes and same permission bits (a regular file, not a symlink or directory).
fn is_up_to_date(target: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file()
        || meta.permissions().mode() & 0o7777 != mode
        || meta.len() != contents.len() as u64
    {
        return Ok(false);
    }
    Ok(fs::read(target)? == contents)
}

fn write_synced(mut f: &File, contents: &[u8], mode: u32) -> io::Result<()> {
    f.write_all(contents)?;
    // The umask may have narrowed the create mode.
    f.set_permissions(Permissions::from_mode(mode))?;
    f.sync_all()
}

/// A temporary file, removed on drop unless renamed into place.
struct Temp {
    path: PathBuf,
    file: Option<File>,
    armed: bool,
}

impl Temp {
    fn create(dir: &Path, name: &str, mode: u32) -> io::Result<Self> {
        loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{name}.{}.{seq}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Temp {
                        path,
                        file: Some(file),
                        armed: true,
                    });
                }
                // A leftover of a killed earlier run with the same pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn file(&self) -> Result<&File, Error> {
        self.file.as_ref().ok_or_else(|| Error::Install {
            target: self.path.clone(),
            step: "opening the temporary file",
            source: io::Error::other("closed"),
        })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        drop(self.file.take());
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Temporary files older than this are leftovers of a killed run, not of a concurrent one.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Removes our temporary files that a killed earlier run left in `dir` (best effort). Only
/// those older than [`STALE_AFTER`]: a younger one may belong to an install-cni running right
/// now (two DaemonSet pods overlap during a rollout).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for e in rd.flatten() {
        if !e.file_name().to_str().is_some_and(is_temp_name) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn creates_dir_and_file_with_mode_and_no_temp_left() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("a/b");
        assert_eq!(
            install_file(b"hello", &dir, "x", BIN_MODE).expect("install"),
            Outcome::Installed
        );
        assert_eq!(fs::read(dir.join("x")).expect("read"), b"hello");
        assert_eq!(mode_of(&dir.join("x")), 0o755);
        assert_eq!(entries(&dir), ["x"]);
    }

    #[test]
    fn replaces_by_rename_and_is_idempotent() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        install_file(b"old", dir, "c.conflist", CONF_MODE).expect("install");
        let old_ino = std::os::unix::fs::MetadataExt::ino(
            &fs::metadata(dir.join("c.conflist")).expect("meta"),
        );
        // An open reader keeps the old contents: the file was replaced, not rewritten.
        let mut reader = File::open(dir.join("c.conflist")).expect("open");
        assert_eq!(
            install_file(b"new!", dir, "c.conflist", CONF_MODE).expect("install"),
            Outcome::Installed
        );
        let mut s = String::new();
        io::Read::read_to_string(&mut reader, &mut s).expect("read");
        assert_eq!(s, "old");
        let meta = fs::metadata(dir.join("c.conflist")).expect("meta");
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), old_ino);
        assert_eq!(mode_of(&dir.join("c.conflist")), 0o644);
        // Same bytes and mode: untouched (same inode).
        assert_eq!(
            install_file(b"new!", dir, "c.conflist", CONF_MODE).expect("again"),
            Outcome::Unchanged
        );
        let again = fs::metadata(dir.join("c.conflist")).expect("meta");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&again),
            std::os::unix::fs::MetadataExt::ino(&meta)
        );
        assert_eq!(entries(dir), ["c.conflist"]);
    }

    #[test]
    fn wrong_mode_is_fixed() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("bin");
        fs::write(&p, b"same").expect("write");
        fs::set_permissions(&p, Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            install_file(b"same", t.path(), "bin", BIN_MODE).expect("install"),
            Outcome::Installed
        );
        assert_eq!(mode_of(&p), 0o755);
    }

    #[test]
    fn symlink_target_is_replaced_not_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let other = t.path().join("elsewhere");
        fs::write(&other, b"keep").expect("write");
        std::os::unix::fs::symlink(&other, t.path().join("link")).expect("symlink");
        install_file(b"keep", t.path(), "link", CONF_MODE).expect("install");
        assert!(
            fs::symlink_metadata(t.path().join("link"))
                .expect("meta")
                .file_type()
                .is_file()
        );
        assert_eq!(fs::read(&other).expect("read"), b"keep");
    }

    #[test]
    fn failure_leaves_target_and_no_temp() {
        let t = tempfile::tempdir().expect("tempdir");
        // The target is a non-empty directory: rename fails, nothing else changes.
        fs::create_dir_all(t.path().join("x/inner")).expect("mkdir");
        let err = install_file(b"data", t.path(), "x", CONF_MODE).expect_err("must fail");
        assert!(err.to_string().contains("renaming"), "{err}");
        assert_eq!(entries(t.path()), ["x"]);
        assert!(t.path().join("x/inner").is_dir());
    }

    #[test]
    fn stale_temps_are_removed_young_ones_kept() {
        let t = tempfile::tempdir().expect("tempdir");
        let old = File::create(t.path().join(".install-cni.flannel.1.0")).expect("create");
        old.set_modified(SystemTime::now() - STALE_AFTER - Duration::from_secs(60))
            .expect("set mtime");
        drop(old);
        fs::write(t.path().join(".install-cni.bridge.2.0"), b"in progress").expect("write");
        fs::write(t.path().join("flannel"), b"keep").expect("write");
        remove_stale_temps(t.path());
        assert_eq!(entries(t.path()), [".install-cni.bridge.2.0", "flannel"]);
    }
}
