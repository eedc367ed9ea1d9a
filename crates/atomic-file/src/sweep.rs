//! Removal of temp files whose writer is gone.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;

use crate::temp::{self, Born};

/// How long a temp file born unlocked (named before it was locked: filesystems without
/// `O_TMPFILE`) is kept even when unlocked. Its writer locks it right after creating it.
pub const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// What [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Names removed (their writers were gone).
    pub removed: Vec<String>,
    /// Temp files kept because a live writer holds them (or may, see [`UNLOCKED_GRACE`]).
    pub kept: usize,
}

/// Removes the temp files in `dir` whose writer is gone. Safe to run at any time, alongside
/// writers: a file whose lock is held is never touched.
pub fn sweep(dir: &Path) -> io::Result<Swept> {
    let mut swept = Swept::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(born) = temp::parse(name) else {
            continue;
        };
        match dead_writer(&entry.path(), born) {
            Ok(true) => swept.removed.push(name.to_owned()),
            Ok(false) => swept.kept += 1,
            // Gone meanwhile: published or removed by its writer or another sweep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(swept)
}

/// Removes `path` if its writer is gone; `Ok(true)` when removed.
fn dead_writer(path: &Path, born: Born) -> io::Result<bool> {
    // Never follow a symlink or block on a FIFO someone put there: only our regular files.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(false);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => {
            log::debug!("flock {}: {e}", path.display());
            return Ok(false);
        }
    }
    if born == Born::Unlocked && !older_than(&meta, UNLOCKED_GRACE) {
        return Ok(false);
    }
    // Still the file we locked, not a new one under the same name (its writer may have
    // published it and finished between our open and our lock).
    let now = fs::symlink_metadata(path)?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Ok(false);
    }
    fs::remove_file(path)?;
    drop::<File>(file);
    Ok(true)
}

/// Removes the files in `dir` that `is_legacy` recognises as temp files of writers that held
/// no lock (earlier versions' formats) once they are older than `age`: only their age tells
/// that the writer is gone. Returns the names removed.
pub fn sweep_legacy(
    dir: &Path,
    is_legacy: impl Fn(&str) -> bool,
    age: Duration,
) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if temp::parse(name).is_some() || !is_legacy(name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if (age.is_zero() || older_than(&meta, age)) && !meta.is_dir() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name.to_owned()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a > age)
}
