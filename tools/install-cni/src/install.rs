//! The atomic file install, by the rule of [`atomic_file`]: written and fsynced without a
//! name, linked in place when new or renamed over the old file, then one fsync of the
//! directory. A reader (kubelet, containerd, a runtime exec'ing a plugin) sees either the old
//! file or the new one, never a partial one, even across a crash or a power cut; and a running
//! binary is replaced without `ETXTBSY`. The plugin names are symlinks installed the same way
//! ([`install_link`]): made under a temporary name, renamed over the old name.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomic_file::Durability;

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

/// Prefix of the temp files of earlier versions, which held no lock, and of temporary links.
const LEGACY_TEMP_PREFIX: &str = ".install-cni.";

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
    let pending = atomic_file::Pending::create(dir, name, contents, mode, Durability::Durable)
        .map_err(fail("writing the temporary file"))?;
    pending
        .publish(name)
        .map_err(fail("putting the new file in place"))?;
    // The new name is durable only once the directory is synced.
    atomic_file::sync_dir(dir).map_err(fail("syncing the directory"))?;
    Ok(Outcome::Installed)
}

/// Makes `dir/name` a symlink to `target` (a name in the same directory, so the link holds
/// wherever the directory is mounted), atomically: the link is made under a temporary name
/// and renamed over whatever `dir/name` is (an older per-plugin binary, a reference plugin,
/// a link elsewhere), so a runtime looking the name up finds the old file or the new link,
/// never nothing; a process running the old file keeps it. Nothing is done when `dir/name`
/// already is that link. The caller syncs the directory ([`sync_bin_dir`]).
pub fn install_link(dir: &Path, name: &str, target: &str) -> Result<Outcome, Error> {
    let path = dir.join(name);
    let fail = |step: &'static str| {
        let target = path.clone();
        move |source: io::Error| Error::Install {
            target,
            step,
            source,
        }
    };
    match fs::read_link(&path) {
        Ok(t) if t == Path::new(target) => return Ok(Outcome::Unchanged),
        Ok(_) => {}
        // Absent, or not a symlink (EINVAL): replaced below.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::InvalidInput => {}
        Err(e) => return Err(fail("reading the current name")(e)),
    }
    let temp = make_temp_link(dir, name, target).map_err(fail("making the link"))?;
    if let Err(e) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(fail("putting the link in place")(e));
    }
    Ok(Outcome::Installed)
}

/// A symlink to `target` under a fresh hidden name in `dir` (the prefix that
/// [`remove_stale_temps`] removes once old: a link cannot be locked). Two installers may run
/// at once with the same pid (each PID 1 of its own container during a rollout): the name
/// also holds the time, and a taken name is retried.
fn make_temp_link(dir: &Path, name: &str, target: &str) -> io::Result<std::path::PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    make_temp_link_stamped(dir, name, target, nanos)
}

fn make_temp_link_stamped(
    dir: &Path,
    name: &str,
    target: &str,
    nanos: u32,
) -> io::Result<std::path::PathBuf> {
    let mut attempt = 0u32;
    loop {
        let temp = dir.join(format!(
            "{LEGACY_TEMP_PREFIX}{name}.{}.{nanos}.{attempt}",
            std::process::id()
        ));
        match std::os::unix::fs::symlink(target, &temp) {
            Ok(()) => return Ok(temp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the names installed in the bin dir durable.
pub fn sync_bin_dir(dir: &Path) -> Result<(), Error> {
    atomic_file::sync_dir(dir).map_err(|source| Error::Install {
        target: dir.to_path_buf(),
        step: "syncing the directory",
        source,
    })
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

/// Earlier versions' temporary files, and temporary links, older than this are leftovers of
/// a killed run, not of a concurrent one (they hold no lock).
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Removes the temporary files that killed runs left in `dir` (best effort): ours as soon as
/// no writer holds them (two DaemonSet pods overlap during a rollout, each in its own pid
/// namespace: the lock, not a pid, tells), earlier versions' once older than [`STALE_AFTER`].
pub fn remove_stale_temps(dir: &Path) {
    // Best effort: a directory that cannot be listed fails the install right after anyway.
    let _ = atomic_file::sweep(dir);
    let _ = atomic_file::sweep_legacy(dir, |n| n.starts_with(LEGACY_TEMP_PREFIX), STALE_AFTER);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, Permissions};
    use std::time::SystemTime;

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
        assert!(
            err.to_string().contains("putting the new file in place"),
            "{err}"
        );
        assert_eq!(entries(t.path()), ["x"]);
        assert!(t.path().join("x/inner").is_dir());
    }

    #[test]
    fn link_replaces_a_file_or_another_link_and_is_idempotent() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        fs::write(dir.join("rcni"), b"multi").expect("write");
        fs::write(dir.join("bridge"), b"old per-plugin binary").expect("write");
        // A process running the old file keeps it: the name is replaced, not the file.
        let mut old = File::open(dir.join("bridge")).expect("open");
        assert_eq!(
            install_link(dir, "bridge", "rcni").expect("link"),
            Outcome::Installed
        );
        assert_eq!(
            fs::read_link(dir.join("bridge")).expect("readlink"),
            Path::new("rcni")
        );
        assert_eq!(fs::read(dir.join("bridge")).expect("read"), b"multi");
        let mut s = String::new();
        io::Read::read_to_string(&mut old, &mut s).expect("read");
        assert_eq!(s, "old per-plugin binary");
        assert_eq!(
            install_link(dir, "bridge", "rcni").expect("again"),
            Outcome::Unchanged
        );
        std::os::unix::fs::symlink("/usr/lib/cni/flannel", dir.join("flannel")).expect("link");
        assert_eq!(
            install_link(dir, "flannel", "rcni").expect("link"),
            Outcome::Installed
        );
        assert_eq!(
            fs::read_link(dir.join("flannel")).expect("readlink"),
            Path::new("rcni")
        );
        assert_eq!(entries(dir), ["bridge", "flannel", "rcni"]);
    }

    #[test]
    fn a_taken_temp_link_name_is_retried() {
        let t = tempfile::tempdir().expect("tempdir");
        // Another installer (same pid in its own container, same instant) holds the name.
        let first = make_temp_link_stamped(t.path(), "x", "other", 7).expect("first");
        let second = make_temp_link_stamped(t.path(), "x", "rcni", 7).expect("second");
        assert_ne!(first, second);
        let name = second
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(".install-cni.x.") && name.ends_with(".7.1"),
            "{name}"
        );
        assert_eq!(fs::read_link(&first).expect("readlink"), Path::new("other"));
        assert_eq!(fs::read_link(&second).expect("readlink"), Path::new("rcni"));
    }

    #[test]
    fn link_over_a_directory_fails_and_leaves_no_temp() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(t.path().join("bridge/inner")).expect("mkdir");
        let err = install_link(t.path(), "bridge", "rcni").expect_err("must fail");
        assert!(
            err.to_string().contains("putting the link in place"),
            "{err}"
        );
        assert_eq!(entries(t.path()), ["bridge"]);
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
        // Ours: a killed run's (no lock held) goes at once, a live run's (locked) stays.
        fs::write(t.path().join(".tmp-bridge.77.0.l"), b"killed").expect("write");
        fs::write(t.path().join(".tmp-loopback.78.0.l"), b"live").expect("write");
        let live = File::open(t.path().join(".tmp-loopback.78.0.l")).expect("open");
        live.lock().expect("lock");
        remove_stale_temps(t.path());
        assert_eq!(
            entries(t.path()),
            [".install-cni.bridge.2.0", ".tmp-loopback.78.0.l", "flannel"]
        );
        drop(live);
        remove_stale_temps(t.path());
        assert_eq!(entries(t.path()), [".install-cni.bridge.2.0", "flannel"]);
    }
}
