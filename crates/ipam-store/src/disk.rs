//! The disk store, byte-compatible with the reference plugin's
//! `backend/disk`.
//!
//! Crash safety: a process killed at any point must leave a store that both
//! plugins can read. Hence:
//!
//! * a reservation is written completely to `<dir>/.tmp-<ip>-<pid>` and then
//!   published with `link(2)` to `<dir>/<ip>`. `link` fails with `EEXIST`
//!   when the target exists, so publishing is both atomic (the file appears
//!   with its full content or not at all) and exclusive (the same guarantee
//!   as `O_CREAT|O_EXCL`), without `renameat2(RENAME_NOREPLACE)` which would
//!   need `unsafe` FFI. A kill before the link leaves only a temp file,
//!   whose name is not an address: every reader ignores it and GC removes it;
//! * `last_reserved_ip.<idx>` is written to a temp file and renamed over the
//!   old one, so it is never torn;
//! * readers still tolerate empty or garbage reservation files (the
//!   reference plugin creates then writes): such addresses stay taken, are
//!   owned by nobody ([`Owner::Unknown`](crate::Owner::Unknown)) and GC
//!   reclaims them.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::ip;
use crate::lock::{FileLock, LockGuard};
use crate::store::{Entry, Store, reservation_content};

/// Default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Prefix of the round-robin files.
pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
/// Name of the lock file.
pub const LOCK_FILE: &str = "lock";
/// Prefix of our temp files (never a valid address).
pub const TMP_PREFIX: &str = ".tmp-";

/// A network's store directory with its lock file open.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    lock: FileLock,
}

/// The store while its lock is held: the only way to read or change it.
#[derive(Debug)]
pub struct LockedStore<'a> {
    store: &'a DiskStore,
    _guard: LockGuard<'a>,
}

impl DiskStore {
    /// Opens `<data_dir>/<network>`, creating it (mode 0755) and its lock
    /// file when missing.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, StoreError> {
        let dir = data_dir.join(network);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(StoreError::at("mkdir", &dir))?;
        let lock = FileLock::open(&dir.join(LOCK_FILE))?;
        Ok(DiskStore { dir, lock })
    }

    /// Opens `<data_dir>/<network>` only if a plugin made it (the directory and its lock
    /// file exist); `Ok(None)` otherwise. Creates nothing: for tools that only look.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<Self>, StoreError> {
        let dir = data_dir.join(network);
        if !dir.join(LOCK_FILE).is_file() {
            return Ok(None);
        }
        let lock = FileLock::open(&dir.join(LOCK_FILE))?;
        Ok(Some(DiskStore { dir, lock }))
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store lock (blocking).
    pub fn lock(&self) -> Result<LockedStore<'_>, StoreError> {
        let guard = self.lock.lock()?;
        Ok(LockedStore {
            store: self,
            _guard: guard,
        })
    }
}

/// Writes `content` to a fresh file at `path` with `mode`.
fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(StoreError::at("create", path))?;
    f.write_all(content).map_err(StoreError::at("write", path))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        log::warn!("remove {}: {e}", path.display());
    }
}

impl LockedStore<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.store.dir.join(name)
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        self.path(&format!("{TMP_PREFIX}{what}-{}", std::process::id()))
    }

    /// Publishes `content` at `target` exclusively (see the module doc).
    /// `Ok(false)` when `target` already exists.
    fn create_exclusive(
        &self,
        target: &Path,
        what: &str,
        content: &[u8],
    ) -> Result<bool, StoreError> {
        let tmp = self.tmp_path(what);
        write_file(&tmp, content, 0o600)?;
        let linked = fs::hard_link(&tmp, target);
        remove_quietly(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            // Filesystems without hard links: plain O_CREAT|O_EXCL.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Unsupported | ErrorKind::PermissionDenied
                ) =>
            {
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(target)
                {
                    Ok(mut f) => {
                        if let Err(e) = f.write_all(content) {
                            remove_quietly(target);
                            return Err(StoreError::at("write", target)(e));
                        }
                        Ok(true)
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(StoreError::at("create", target)(e)),
                }
            }
            Err(e) => Err(StoreError::at("link", target)(e)),
        }
    }

    /// Atomically replaces `last_reserved_ip.<idx>` (temp file + rename).
    fn write_last_reserved(&self, ip: IpAddr, idx: usize) -> Result<(), StoreError> {
        let name = format!("{LAST_IP_PREFIX}{idx}");
        let target = self.path(&name);
        let tmp = self.tmp_path(&name);
        write_file(&tmp, ip.to_string().as_bytes(), 0o600)?;
        fs::rename(&tmp, &target).map_err(|e| {
            remove_quietly(&tmp);
            StoreError::at("rename", &target)(e)
        })
    }

    /// Removes temp files left by killed processes (ours only: `.tmp-*`).
    /// Returns how many were removed.
    pub fn remove_stale_temp_files(&mut self) -> Result<usize, StoreError> {
        let dir = &self.store.dir;
        let mut n = 0;
        for entry in fs::read_dir(dir).map_err(StoreError::at("read", dir))? {
            let entry = entry.map_err(StoreError::at("read", dir))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                remove_quietly(&entry.path());
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Store for LockedStore<'_> {
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        rangeset_idx: usize,
    ) -> Result<bool, StoreError> {
        let name = ip.to_string();
        let target = self.path(&name);
        // Cheap pre-check: most candidates of a busy range are taken.
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(false);
        }
        let content = reservation_content(id, ifname);
        if !self.create_exclusive(&target, &name, content.as_bytes())? {
            return Ok(false);
        }
        if let Err(e) = self.write_last_reserved(ip, rangeset_idx) {
            // Do not leak the address when the ADD fails.
            remove_quietly(&target);
            return Err(e);
        }
        Ok(true)
    }

    fn last_reserved(&mut self, rangeset_idx: usize) -> Result<Option<IpAddr>, StoreError> {
        let path = self.path(&format!("{LAST_IP_PREFIX}{rangeset_idx}"));
        match fs::read(&path) {
            Ok(data) => Ok(String::from_utf8_lossy(&data)
                .trim()
                .parse::<IpAddr>()
                .ok()
                .map(ip::canonical)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::at("read", path)(e)),
        }
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        let path = self.path(&ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::at("remove", path)(e)),
            _ => Ok(()),
        }
    }

    /// Reservation files are the regular files named by an address; the
    /// lock, `last_reserved_ip.*` and temp files are skipped. Unreadable
    /// files are skipped too (as the reference does).
    fn list(&mut self) -> Result<Vec<Entry>, StoreError> {
        let dir = &self.store.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(StoreError::at("read", dir))? {
            let entry = entry.map_err(StoreError::at("read", dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
                continue;
            }
            let Ok(data) = fs::read(entry.path()) else {
                continue;
            };
            out.push(Entry {
                ip: ip::canonical(ip),
                content: String::from_utf8_lossy(&data).trim().to_owned(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn file_format() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "net1").expect("open");
        let mut l = store.lock().expect("lock");
        assert!(
            l.reserve(" c1 ", "eth0", ip("10.0.0.2"), 0)
                .expect("reserve")
        );
        assert!(!l.reserve("c2", "eth0", ip("10.0.0.2"), 0).expect("reserve"));
        assert!(l.reserve("c3", "eth0", ip("fd00::2"), 1).expect("reserve"));
        let dir = tmp.path().join("net1");
        assert_eq!(fs::read(dir.join("10.0.0.2")).expect("read"), b"c1\r\neth0");
        assert_eq!(fs::read(dir.join("fd00::2")).expect("read"), b"c3\r\neth0");
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).expect("read"),
            b"10.0.0.2"
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.1")).expect("read"),
            b"fd00::2"
        );
        let mode = fs::metadata(dir.join("10.0.0.2"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(dir.join("lock").exists());
        // No temp file left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(TMP_PREFIX)),
            "{names:?}"
        );
        assert_eq!(l.last_reserved(0).expect("last"), Some(ip("10.0.0.2")));
        assert_eq!(l.last_reserved(7).expect("last"), None);
    }

    #[test]
    fn open_existing_creates_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(
            DiskStore::open_existing(tmp.path(), "n")
                .expect("open")
                .is_none()
        );
        assert!(!tmp.path().join("n").exists());
        DiskStore::open(tmp.path(), "n").expect("open");
        let s = DiskStore::open_existing(tmp.path(), "n").expect("open");
        assert_eq!(s.expect("made by open").dir(), tmp.path().join("n"));
    }

    #[test]
    fn tolerant_readers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "n").expect("open");
        let dir = store.dir().to_owned();
        fs::write(dir.join("10.0.0.5"), "old-cid\n").expect("write");
        fs::write(dir.join("10.0.0.6"), "").expect("write");
        fs::write(dir.join(".tmp-10.0.0.7-1"), "c9\r\neth0").expect("write");
        fs::write(dir.join("last_reserved_ip.0"), "garbage").expect("write");
        let mut l = store.lock().expect("lock");
        let mut entries = l.list().expect("list");
        entries.sort_by_key(|e| e.ip);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].content, "old-cid");
        assert_eq!(entries[1].content, "");
        assert_eq!(l.last_reserved(0).expect("last"), None);
        assert_eq!(
            l.find_by_id("old-cid", "eth0").expect("find"),
            vec![ip("10.0.0.5")]
        );
        // The empty file still blocks its address.
        assert!(!l.reserve("c1", "eth0", ip("10.0.0.6"), 0).expect("reserve"));
        assert_eq!(l.remove_stale_temp_files().expect("clean"), 1);
        assert_eq!(
            l.release_by_id("old-cid", "eth0").expect("rel"),
            vec![ip("10.0.0.5")]
        );
        assert!(!dir.join("10.0.0.5").exists());
        l.release(ip("10.9.9.9")).expect("absent is fine");
    }
}
