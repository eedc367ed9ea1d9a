//! The store lock: `flock(LOCK_EX)` on `<dir>/lock`.
//!
//! std's `File::lock` is `flock(2)` on Linux, the same primitive as Go's
//! go-filemutex used by the reference plugin, so both plugins exclude each
//! other when they share a store. The lock dies with the process (a killed
//! plugin never leaves it held).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// An open lock file.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a FileLock,
}

impl FileLock {
    /// Opens (creating it if needed, mode 0644 like go-filemutex under the
    /// usual umask) the lock file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(StoreError::at("open", path))?;
        Ok(FileLock {
            file,
            path: path.to_owned(),
        })
    }

    /// Blocks until the exclusive lock is held.
    pub fn lock(&self) -> Result<LockGuard<'_>, StoreError> {
        self.file
            .lock()
            .map_err(StoreError::at("lock", &self.path))?;
        Ok(LockGuard { lock: self })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.lock.file.unlock() {
            log::warn!("unlock {}: {e}", self.lock.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_handle_cannot_lock_while_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let a = FileLock::open(&path).expect("open a");
        let b = FileLock::open(&path).expect("open b");
        let guard = a.lock().expect("lock a");
        assert!(matches!(
            b.file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(guard);
        b.file.try_lock().expect("free after unlock");
    }
}
