//! Atomic, durable file writes for every rcni binary that keeps files: host-local's
//! reservations, flannel's saved delegate configs, install-cni's binaries and configs.
//!
//! # One rule
//! * A file appears under its name complete or not at all: it is written under a temporary
//!   identity and published with `link(2)` when the name is free, `rename(2)` over the old
//!   file otherwise ([`write_replace`]), or only with `link(2)` ([`write_exclusive`], which
//!   answers "taken" instead of replacing).
//! * [`Durability::Durable`] data is fsynced *before* it is published, so after a power cut a
//!   name never points at an empty or torn file. [`Durability::Hint`] data (files that readers
//!   validate and can do without: host-local's `last_reserved_ip.N`, its owner index) skips that
//!   fsync.
//! * The caller fsyncs the directory once per operation ([`sync_dir`]) before it reports
//!   success: then what it published or removed is still there after a power cut.
//!
//! # Temp files and their writers
//! A temp file is created unnamed (`O_TMPFILE`) and `flock`ed before it ever has a name, and its
//! writer keeps that lock until the file is published or its name removed. The kernel drops the
//! lock when the writer dies (also on SIGKILL), so a temp name whose lock can be taken has no
//! writer left: [`sweep`] removes exactly those. A live writer's file is locked and never
//! touched, whatever pid namespace either process runs in. On filesystems without `O_TMPFILE`
//! the file is created by name and locked right after; such a name (born unlocked) is swept only
//! once it is also older than [`UNLOCKED_GRACE`], which covers the instant before its lock.

mod pending;
mod sweep;
mod temp;

use std::fs::File;
use std::io;
use std::path::Path;

pub use pending::{Pending, Published};
pub use sweep::{Swept, UNLOCKED_GRACE, sweep, sweep_legacy};
pub use temp::{PREFIX as TEMP_PREFIX, is_temp_name};

/// Whether data is fsynced before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// State: fsynced before it gets its name.
    Durable,
    /// A hint readers validate and can rebuild: published atomically, not fsynced.
    Hint,
}

/// Writes `contents` as `dir/name` with `mode`, replacing what is there (a symlink is replaced,
/// not followed). The directory is not synced: call [`sync_dir`] once the operation is done.
pub fn write_replace(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<Published> {
    Pending::create(dir, name, contents, mode, durability)?.publish(name)
}

/// Writes `contents` as `dir/name` with `mode` unless `dir/name` exists (`Ok(false)`). The
/// directory is not synced: call [`sync_dir`] once the operation is done.
pub fn write_exclusive(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<bool> {
    Pending::create(dir, name, contents, mode, durability)?.link_as(name)
}

/// Removes `dir/name`; `Ok(false)` when it was not there. Sync the directory afterwards for the
/// removal to survive a power cut.
pub fn remove(dir: &Path, name: &str) -> io::Result<bool> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes the names created, replaced and removed in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pending::Strategy;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::{Duration, SystemTime};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("meta").permissions().mode() & 0o7777
    }

    const BOTH: [Strategy; 2] = [Strategy::Unnamed, Strategy::Named];

    fn pending(dir: &Path, hint: &str, data: &[u8], s: Strategy) -> Pending {
        Pending::create_with(dir, hint, data, 0o640, Durability::Durable, s).expect("create")
    }

    #[test]
    fn unnamed_temp_files_have_no_name_until_published() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut p = pending(t.path(), "x", b"data", Strategy::Unnamed);
        assert!(names(t.path()).is_empty(), "{:?}", names(t.path()));
        assert!(p.link_as("x").expect("link"));
        assert_eq!(names(t.path()), ["x"]);
        drop(p);
        assert_eq!(names(t.path()), ["x"]);
    }

    #[test]
    fn replace_and_exclusive_with_either_strategy() {
        for s in BOTH {
            let t = tempfile::tempdir().expect("tempdir");
            let dir = t.path();
            Pending::create_with(dir, "f", b"one", 0o640, Durability::Durable, s)
                .and_then(|p| p.rename_as("f"))
                .expect("replace");
            let ino = fs::metadata(dir.join("f")).expect("meta").ino();
            let mut reader = fs::File::open(dir.join("f")).expect("open");
            Pending::create_with(dir, "f", b"two!", 0o600, Durability::Hint, s)
                .and_then(|p| p.rename_as("f"))
                .expect("replace again");
            // Replaced, not rewritten: an open reader keeps the old bytes.
            let mut old = String::new();
            std::io::Read::read_to_string(&mut reader, &mut old).expect("read");
            assert_eq!(old, "one", "{s:?}");
            assert_ne!(fs::metadata(dir.join("f")).expect("meta").ino(), ino);
            assert_eq!(fs::read(dir.join("f")).expect("read"), b"two!");
            assert_eq!(mode(&dir.join("f")), 0o600, "{s:?}");

            // Exclusive: the pending file can be tried under several names.
            let mut p = pending(dir, "g", b"mine", s);
            assert!(!p.link_as("f").expect("taken"), "{s:?}");
            assert!(p.link_as("g").expect("free"), "{s:?}");
            assert!(p.link_as("h").is_err(), "published twice");
            drop(p);
            assert_eq!(fs::read(dir.join("g")).expect("read"), b"mine");
            assert_eq!(fs::read(dir.join("f")).expect("read"), b"two!");
            assert_eq!(mode(&dir.join("g")), 0o640);
            assert!(!write_exclusive(dir, "g", b"x", 0o600, Durability::Durable).expect("w"));
            assert_eq!(names(dir), ["f", "g"], "{s:?}: no temp file left");
            sync_dir(dir).expect("sync");
        }
    }

    #[test]
    fn publish_links_a_free_name_and_renames_over_a_taken_one() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        let w = |data: &[u8]| write_replace(dir, "f", data, 0o600, Durability::Durable);
        assert_eq!(w(b"one").expect("create"), Published::Created);
        assert_eq!(w(b"two").expect("replace"), Published::Replaced);
        assert_eq!(fs::read(dir.join("f")).expect("read"), b"two");
        assert_eq!(names(dir), ["f"]);
    }

    #[test]
    fn umask_does_not_narrow_the_mode() {
        let t = tempfile::tempdir().expect("tempdir");
        write_replace(t.path(), "bin", b"#!", 0o755, Durability::Durable).expect("write");
        assert_eq!(mode(&t.path().join("bin")), 0o755);
    }

    #[test]
    fn symlink_target_is_replaced_not_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let other = t.path().join("elsewhere");
        fs::write(&other, b"keep").expect("write");
        std::os::unix::fs::symlink(&other, t.path().join("link")).expect("symlink");
        write_replace(t.path(), "link", b"new", 0o644, Durability::Durable).expect("write");
        assert!(
            fs::symlink_metadata(t.path().join("link"))
                .expect("meta")
                .is_file()
        );
        assert_eq!(fs::read(&other).expect("read"), b"keep");
    }

    #[test]
    fn a_failed_publish_leaves_no_temp_file() {
        for s in BOTH {
            let t = tempfile::tempdir().expect("tempdir");
            fs::create_dir_all(t.path().join("x/inner")).expect("mkdir");
            let p = pending(t.path(), "x", b"data", s);
            assert!(p.rename_as("x").is_err(), "{s:?}");
            assert_eq!(names(t.path()), ["x"], "{s:?}");
            assert!(t.path().join("x/inner").is_dir());
        }
    }

    #[test]
    fn remove_reports_absence() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("a"), b"").expect("write");
        assert!(remove(t.path(), "a").expect("remove"));
        assert!(!remove(t.path(), "a").expect("remove again"));
    }

    fn age(path: &Path, by: Duration) {
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - by))
            .expect("set mtime");
    }

    #[test]
    fn sweep_removes_what_dead_writers_left_and_nothing_a_live_writer_holds() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        // Leftovers: names of ours that nobody holds (their writers' locks died with them).
        let dead_locked = temp::name("c1", 1, temp::Born::Locked);
        let dead_unlocked_old = temp::name("c2", 2, temp::Born::Unlocked);
        fs::write(dir.join(&dead_locked), b"x").expect("write");
        fs::write(dir.join(&dead_unlocked_old), b"x").expect("write");
        age(&dir.join(&dead_unlocked_old), UNLOCKED_GRACE * 2);
        // Possibly between creation and lock: young, born unlocked.
        let young_unlocked = temp::name("c3", 3, temp::Born::Unlocked);
        fs::write(dir.join(&young_unlocked), b"x").expect("write");
        // Live writers holding named temp files (both kinds), even old ones.
        let mut live_named = pending(dir, "c4", b"x", Strategy::Named);
        // Give the unnamed one a temp name as rename_as does mid-way, and keep it.
        let mut unnamed =
            Pending::create(dir, "c6", b"x", 0o600, Durability::Hint).expect("create");
        let temp_name = unnamed.name_unnamed_for_test();
        for n in names(dir) {
            if n != dead_unlocked_old {
                age(&dir.join(&n), UNLOCKED_GRACE * 2);
            }
        }
        // Not ours, whatever their age or lock state.
        for other in ["10.0.0.2", ".c7.tmp42", "lock", ".install-cni.x.1.0"] {
            fs::write(dir.join(other), b"x").expect("write");
        }
        age(&dir.join(&young_unlocked), Duration::ZERO);

        let swept = sweep(dir).expect("sweep");
        let mut removed = swept.removed.clone();
        removed.sort();
        let mut want = vec![dead_locked, dead_unlocked_old];
        want.sort();
        assert_eq!(removed, want);
        assert_eq!(swept.kept, 3, "{swept:?}");
        let left = names(dir);
        assert!(left.contains(&young_unlocked), "{left:?}");
        assert!(left.contains(&temp_name), "{left:?}");
        for other in ["10.0.0.2", ".c7.tmp42", "lock", ".install-cni.x.1.0"] {
            assert!(left.contains(&other.to_owned()), "{left:?}");
        }
        // The live writers finish normally.
        assert!(live_named.link_as("c4").expect("link"));
        unnamed.rename_as("c6").expect("rename");
        drop(live_named);
        let left = names(dir);
        assert!(left.contains(&"c4".to_owned()) && left.contains(&"c6".to_owned()));
        assert!(!left.contains(&temp_name), "{left:?}");
    }

    #[test]
    fn legacy_temp_files_go_once_old_enough() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        for n in [".old.1", ".young.2", "keep", ".tmp-x.1.2.l"] {
            fs::write(dir.join(n), b"x").expect("write");
        }
        fs::create_dir(dir.join(".dir.3")).expect("mkdir");
        age(&dir.join(".old.1"), Duration::from_secs(7200));
        age(&dir.join(".tmp-x.1.2.l"), Duration::from_secs(7200));
        let legacy = |n: &str| n.starts_with('.');
        let removed = sweep_legacy(dir, legacy, Duration::from_secs(3600)).expect("sweep");
        assert_eq!(removed, [".old.1"]);
        // Ours are judged by their lock, never by this.
        assert_eq!(names(dir), [".dir.3", ".tmp-x.1.2.l", ".young.2", "keep"]);
        let removed = sweep_legacy(dir, legacy, Duration::ZERO).expect("sweep");
        assert_eq!(removed, [".young.2"]);
    }
}
