//! The disk store, byte-compatible with the reference plugin's `backend/disk`.
//!
//! Crash safety: a process killed at any point leaves a store that both plugins can read.
//! Every write goes through [`atomic_file`]:
//! * a reservation is written and fsynced before it has a name ([`DiskStore::prepare`], done
//!   before the store lock is taken so that concurrent ADDs fsync in parallel), then published
//!   with `link(2)`, which fails when the address is taken: atomic (the file appears complete or
//!   not at all) and exclusive (as `O_CREAT|O_EXCL`);
//! * `last_reserved_ip.<idx>` is replaced by rename, not fsynced: it only steers round robin,
//!   and readers ignore garbage in it;
//! * the directory is fsynced once per command ([`DiskStore::sync`]), after the lock is
//!   released and before the command reports success;
//! * readers tolerate empty, garbage and unreadable reservation files (the reference creates
//!   then writes, so a crash or power cut leaves empty ones): such an address stays taken,
//!   owned by nobody ([`Owner::Unknown`](crate::Owner::Unknown)) until GC reclaims it. Reading
//!   never follows a symlink, never blocks on a FIFO and gives up on oversized files.
//!
//! Finding an attachment's reservations goes through the [owner index](crate::index): an ADD
//! neither lists the directory nor opens a reservation file but its own.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use atomic_file::{Durability, Pending};

use crate::error::StoreError;
use crate::index::{DirStamp, INDEX_FILE, Index, Known, owner_hash};
use crate::ip;
use crate::lock::{FileLock, LockGuard};
use crate::store::{Entry, Store, reservation_content};

/// Default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Prefix of the round-robin files.
pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
/// Name of the lock file.
pub const LOCK_FILE: &str = "lock";
/// Prefix of the temp files of earlier rcni versions (`.tmp-<what>-<pid>`), written only
/// under the store lock: found under the lock, they are leftovers.
const LEGACY_TMP_PREFIX: &str = ".tmp-";
/// Mode of reservation files.
const FILE_MODE: u32 = 0o600;
/// Longer than any reservation (container IDs are file names, at most 255 bytes): such a
/// file is garbage, and is not read whole.
const MAX_CONTENT: u64 = 4096;

/// A network's store directory with its lock file open.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    lock: FileLock,
    /// A locked session changed the directory since the last [`DiskStore::sync`].
    unsynced: AtomicBool,
    /// Temp files made by name, as on filesystems without `O_TMPFILE` (tests).
    named_temps: bool,
}

/// A reservation's file, written and fsynced, waiting for an address
/// ([`DiskStore::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    content: String,
    file: Pending,
}

/// The store while its lock is held: the only way to read or change it.
#[derive(Debug)]
pub struct LockedStore<'a> {
    store: &'a DiskStore,
    staged: Option<Prepared>,
    owners: Option<Owners>,
    changed: bool,
    files_read: usize,
    listings: usize,
    _guard: LockGuard<'a>,
}

/// The owner index as loaded and kept current during one locked session.
#[derive(Debug)]
struct Owners {
    index: Index,
    /// It differs from the file.
    dirty: bool,
    /// It was checked against a listing of the directory in this session.
    listed: bool,
}

/// What reading one reservation file gave.
enum Content {
    /// Its trimmed text.
    Text(String),
    /// Not a regular file, unreadable, oversized.
    Unreadable,
    /// Removed meanwhile.
    Gone,
}

impl Content {
    fn owner(&self) -> Option<u64> {
        match self {
            Content::Text(t) => Some(owner_hash(t)),
            _ => None,
        }
    }
}

/// Confirmed reservations of one attachment: `(file name, address)`.
#[derive(Debug, Default)]
struct Matches {
    /// `<id>\r\n<ifname>` (current format).
    attachment: Vec<(String, IpAddr)>,
    /// `<id>` alone (old format).
    container: Vec<(String, IpAddr)>,
}

impl Matches {
    fn is_empty(&self) -> bool {
        self.attachment.is_empty() && self.container.is_empty()
    }

    /// Every address found, in order.
    fn ips(self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .attachment
            .into_iter()
            .chain(self.container)
            .map(|(_, ip)| ip)
            .collect();
        ips.sort();
        ips
    }
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
        Ok(DiskStore {
            dir,
            lock,
            unsynced: AtomicBool::new(false),
            named_temps: false,
        })
    }

    /// A new temp file for `name` (see [`atomic_file`]).
    fn pending(&self, name: &str, content: &[u8], d: Durability) -> std::io::Result<Pending> {
        if self.named_temps {
            Pending::create_named(&self.dir, name, content, FILE_MODE, d)
        } else {
            Pending::create(&self.dir, name, content, FILE_MODE, d)
        }
    }

    /// Opens `<data_dir>/<network>` only if a plugin made it (the directory and its lock
    /// file exist); `Ok(None)` otherwise. Creates nothing: for tools that only look.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<Self>, StoreError> {
        let dir = data_dir.join(network);
        if !dir.join(LOCK_FILE).is_file() {
            return Ok(None);
        }
        let lock = FileLock::open(&dir.join(LOCK_FILE))?;
        Ok(Some(DiskStore {
            dir,
            lock,
            unsynced: AtomicBool::new(false),
            named_temps: false,
        }))
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
            staged: None,
            owners: None,
            changed: false,
            files_read: 0,
            listings: 0,
            _guard: guard,
        })
    }

    /// Writes and fsyncs the reservation file of `(id, ifname)` before any lock is taken;
    /// [`LockedStore::stage`] hands it to the next reservation. `None` where the file cannot
    /// be made without a name: then it is made under the lock, so that this directory does
    /// not change outside it.
    pub fn prepare(&self, id: &str, ifname: &str) -> Result<Option<Prepared>, StoreError> {
        if self.named_temps {
            return Ok(None);
        }
        let content = reservation_content(id, ifname);
        let file = Pending::create_unnamed(
            &self.dir,
            "reservation",
            content.as_bytes(),
            FILE_MODE,
            Durability::Durable,
        )
        .map_err(StoreError::at("create", &self.dir))?;
        Ok(file.map(|file| Prepared { content, file }))
    }

    /// Makes the changes of the sessions so far survive a power cut (one fsync of the
    /// directory; nothing when nothing changed). Call it before reporting success.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.unsynced.swap(false, Ordering::AcqRel) {
            atomic_file::sync_dir(&self.dir).map_err(|e| {
                self.unsynced.store(true, Ordering::Release);
                StoreError::at("fsync", &self.dir)(e)
            })?;
        }
        Ok(())
    }
}

/// Reads one reservation file without following symlinks or blocking on FIFOs.
fn read_content(path: &Path) -> Content {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Content::Gone,
        Err(_) => return Content::Unreadable,
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= MAX_CONTENT => {}
        _ => return Content::Unreadable,
    }
    let mut data = Vec::new();
    match file.take(MAX_CONTENT + 1).read_to_end(&mut data) {
        Ok(n) if n as u64 <= MAX_CONTENT => {
            Content::Text(String::from_utf8_lossy(&data).trim().to_owned())
        }
        _ => Content::Unreadable,
    }
}

fn store_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    StoreError::at(op, path)
}

fn address(name: &str) -> Option<IpAddr> {
    name.parse::<IpAddr>().ok().map(ip::canonical)
}

impl LockedStore<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.store.dir.join(name)
    }

    /// Hands a prepared reservation file to the next [`Store::reserve`] of its attachment.
    pub fn stage(&mut self, prepared: Option<Prepared>) {
        self.staged = prepared;
    }

    /// Every reservation, read without changing anything: no temp-file sweep, no owner
    /// index written (for tools that only look, such as rcni-doctor). Unreadable files have
    /// an empty content, as in [`Store::list`].
    pub fn peek(&self) -> Result<Vec<Entry>, StoreError> {
        let dir = &self.store.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(store_err("read", dir))? {
            let entry = entry.map_err(store_err("read", dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(address) else {
                continue;
            };
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
                continue;
            }
            let content = match read_content(&entry.path()) {
                Content::Gone => continue,
                Content::Text(t) => t,
                Content::Unreadable => String::new(),
            };
            out.push(Entry { ip, content });
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// Reservation files opened in this session.
    pub fn files_read(&self) -> usize {
        self.files_read
    }

    /// Listings of the store directory in this session.
    pub fn listings(&self) -> usize {
        self.listings
    }

    fn read(&mut self, name: &str) -> Content {
        self.files_read += 1;
        read_content(&self.path(name))
    }

    /// Lists the reservation files (name, inode) and reads those `trusted` does not know
    /// under the same inode (all of them without `trusted`). Temp files seen on the way
    /// (left by a killed writer) are swept.
    fn scan(
        &mut self,
        trusted: Option<&Index>,
    ) -> Result<Vec<(String, u64, Option<Content>)>, StoreError> {
        self.listings += 1;
        let dir = self.store.dir.clone();
        let known: HashMap<&str, Known> = trusted
            .map(|t| t.entries().map(|l| (l.name, l.known)).collect())
            .unwrap_or_default();
        let mut names = Vec::new();
        let mut temps = false;
        for entry in fs::read_dir(&dir).map_err(store_err("read", &dir))? {
            let entry = entry.map_err(store_err("read", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.parse::<IpAddr>().is_err() {
                temps |= name.starts_with(LEGACY_TMP_PREFIX);
                continue;
            }
            // A directory cannot be a reservation (nor be removed as one).
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
                continue;
            }
            names.push((name.to_owned(), entry.ino()));
        }
        let mut out = Vec::with_capacity(names.len());
        for (name, ino) in names {
            let content = match known.get(name.as_str()) {
                Some(k) if k.ino == ino => None,
                _ => match self.read(&name) {
                    Content::Gone => continue,
                    c => Some(c),
                },
            };
            out.push((name, ino, content));
        }
        if temps {
            self.remove_stale_temp_files()?;
        }
        Ok(out)
    }

    /// A new index from a scan (see [`scan`](Self::scan)).
    fn rebuild(&mut self, trusted: Option<&Index>) -> Result<Owners, StoreError> {
        let dir = self.store.dir.clone();
        let stamp = DirStamp::of(&dir).map_err(store_err("stat", &dir))?;
        let old: HashMap<&str, Known> = trusted
            .map(|t| t.entries().map(|l| (l.name, l.known)).collect())
            .unwrap_or_default();
        let mut files = HashMap::new();
        for (name, ino, content) in self.scan(trusted)? {
            let owner = match content {
                Some(c) => c.owner(),
                None => old.get(name.as_str()).and_then(|k| k.owner),
            };
            files.insert(name, Known { ino, owner });
        }
        Ok(Owners {
            index: Index::from_files(stamp, &files),
            dirty: true,
            listed: true,
        })
    }

    /// The owner index: the saved one when the directory is as it describes, else rebuilt
    /// from every file.
    fn owners(&mut self) -> Result<&mut Owners, StoreError> {
        let owners = match self.owners.take() {
            Some(o) => o,
            None => {
                let dir = self.store.dir.clone();
                let stamp = DirStamp::of(&dir).map_err(store_err("stat", &dir))?;
                let saved = fs::read(dir.join(INDEX_FILE))
                    .ok()
                    .and_then(|b| Index::parse(&b));
                match saved {
                    Some(index) if index.stamp == stamp => Owners {
                        index,
                        dirty: false,
                        listed: false,
                    },
                    _ => self.rebuild(None)?,
                }
            }
        };
        Ok(self.owners.insert(owners))
    }

    /// The reservations of `(id, ifname)` and of `id` alone, each confirmed by reading its
    /// file. With `look_harder`, an attachment the index does not know is also looked for
    /// in a listing of the directory (DEL and CHECK; ADD trusts the index).
    fn lookup(&mut self, id: &str, ifname: &str, look_harder: bool) -> Result<Matches, StoreError> {
        let found = match self.confirmed(id, ifname, true)? {
            Some(m) => m,
            None => {
                log::warn!(
                    "{}: the owner index was wrong; reading every reservation",
                    self.store.dir.display()
                );
                let rebuilt = self.rebuild(None)?;
                self.owners = Some(rebuilt);
                self.confirmed(id, ifname, false)?.unwrap_or_default()
            }
        };
        if !found.is_empty() || !look_harder || self.owners()?.listed {
            return Ok(found);
        }
        let current = self.owners.take().map(|o| o.index);
        let relisted = self.rebuild(current.as_ref())?;
        self.owners = Some(relisted);
        Ok(self.confirmed(id, ifname, false)?.unwrap_or_default())
    }

    /// The index's candidates for `(id, ifname)`, confirmed by reading them. `None` when
    /// `strict` and an entry proved wrong.
    fn confirmed(
        &mut self,
        id: &str,
        ifname: &str,
        strict: bool,
    ) -> Result<Option<Matches>, StoreError> {
        let attachment = reservation_content(id, ifname);
        let container = id.trim().to_owned();
        let wanted = [owner_hash(&attachment), owner_hash(&container)];
        let candidates = self.owners()?.index.owned_by(&wanted);
        let mut found = Matches::default();
        for (name, indexed) in candidates {
            let Some(ip) = address(&name) else { continue };
            match self.read(&name) {
                Content::Text(t) if t == attachment => found.attachment.push((name, ip)),
                Content::Text(t) if t == container => found.container.push((name, ip)),
                // A hash collision: the index is right, the file is someone else's.
                Content::Text(t) if owner_hash(&t) == indexed => {}
                _ if !strict => {}
                _ => return Ok(None),
            }
        }
        found.attachment.sort_by_key(|(_, ip)| *ip);
        found.container.sort_by_key(|(_, ip)| *ip);
        Ok(Some(found))
    }

    /// Addresses of `(id, ifname)`, old-format ones of `id` included, looking past the
    /// index before answering "none" (CHECK).
    pub fn find_attachment(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self.lookup(id, ifname, true)?.ips())
    }

    /// What `passes` runs of the reference's `ReleaseByID` release (one per range set): the
    /// attachment's addresses, or when it has none its container's old-format ones; from the
    /// second run on, those old-format ones in any case. Looks past the index before
    /// answering "none" (DEL). Returns the released addresses.
    pub fn release_attachment(
        &mut self,
        id: &str,
        ifname: &str,
        passes: usize,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let m = self.lookup(id, ifname, true)?;
        let chosen = if passes >= 2 || m.attachment.is_empty() {
            m.attachment.into_iter().chain(m.container).collect()
        } else {
            m.attachment
        };
        for (name, _) in &chosen {
            self.remove_reservation(name)?;
        }
        Ok(chosen.into_iter().map(|(_, ip)| ip).collect())
    }

    /// Releases those of `ips` that `(id, ifname)` still holds, reading each one's file: a
    /// failed ADD undoes its own reservations and nothing an earlier ADD made. Returns the
    /// released addresses.
    pub fn release_own(
        &mut self,
        id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, StoreError> {
        let attachment = reservation_content(id, ifname);
        let mut released = Vec::new();
        for ip in ips {
            let name = ip.to_string();
            if matches!(self.read(&name), Content::Text(t) if t == attachment) {
                self.remove_reservation(&name)?;
                released.push(*ip);
            }
        }
        Ok(released)
    }

    fn remove_reservation(&mut self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => self.changed = true,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::at("remove", path)(e)),
        }
        if let Some(o) = &mut self.owners
            && o.index.remove(name)
        {
            o.dirty = true;
        }
        Ok(())
    }

    /// Atomically replaces `last_reserved_ip.<idx>` (a hint: not fsynced). Renamed over the
    /// old one without trying a link first: it is there after the first ADD.
    fn write_last_reserved(&mut self, ip: IpAddr, idx: usize) -> Result<(), StoreError> {
        let name = format!("{LAST_IP_PREFIX}{idx}");
        self.changed = true;
        self.store
            .pending(&name, ip.to_string().as_bytes(), Durability::Hint)
            .and_then(|p| p.rename_as(&name))
            .map_err(StoreError::at("write", self.path(&name)))
    }

    /// Removes temp files whose writer is gone (killed processes). Returns how many were
    /// removed.
    pub fn remove_stale_temp_files(&mut self) -> Result<usize, StoreError> {
        let dir = self.store.dir.clone();
        let swept = atomic_file::sweep(&dir).map_err(store_err("sweep", &dir))?;
        // Earlier versions' temp files: written under this lock, so leftovers.
        let legacy = atomic_file::sweep_legacy(
            &dir,
            |n| n.starts_with(LEGACY_TMP_PREFIX),
            std::time::Duration::ZERO,
        )
        .map_err(store_err("sweep", &dir))?;
        let n = swept.removed.len() + legacy.len();
        if n > 0 {
            self.changed = true;
        }
        Ok(n)
    }

    /// Writes the owner index back if it changed, stamped with the directory as it is after
    /// every change of this session (before the lock goes).
    fn save_owners(&mut self) -> std::io::Result<()> {
        let Some(owners) = &mut self.owners else {
            return Ok(());
        };
        if !owners.dirty && !self.changed {
            return Ok(());
        }
        let dir = &self.store.dir;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(dir.join(INDEX_FILE))?;
        // Taken after the index's own creation, the last change to the directory.
        owners.index.stamp = DirStamp::of(dir)?;
        let bytes = owners.index.render();
        file.write_all_at(&bytes, 0)?;
        file.set_len(bytes.len() as u64)
    }
}

impl Drop for LockedStore<'_> {
    fn drop(&mut self) {
        // An unused prepared file goes first: its temp name, if it has one, is a change.
        drop(self.staged.take());
        if let Err(e) = self.save_owners() {
            log::warn!("{}: saving the owner index: {e}", self.store.dir.display());
        }
        if self.changed {
            self.store.unsynced.store(true, Ordering::Release);
        }
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
        // Loaded before the directory changes, so that the index follows the change.
        self.owners()?;
        let name = ip.to_string();
        let target = self.path(&name);
        let content = reservation_content(id, ifname);
        let mut prepared = match self.staged.take() {
            Some(p) if p.content == content => p,
            _ => Prepared {
                file: self
                    .store
                    .pending("reservation", content.as_bytes(), Durability::Durable)
                    .map_err(StoreError::at("create", &self.store.dir))?,
                content,
            },
        };
        match prepared.file.link_as(&name) {
            Ok(true) => {}
            Ok(false) => {
                self.staged = Some(prepared);
                return Ok(false);
            }
            Err(e) => return Err(StoreError::at("link", &target)(e)),
        }
        self.changed = true;
        let known = Known {
            ino: prepared.file.file().metadata().map_or(0, |m| m.ino()),
            owner: Some(owner_hash(&prepared.content)),
        };
        // Its temp name, if it has one, goes now: before the index is stamped.
        drop(prepared);
        if let Some(o) = &mut self.owners {
            o.index.insert(&name, known);
            o.dirty = true;
        }
        if let Err(e) = self.write_last_reserved(ip, rangeset_idx) {
            // Do not leak the address when the ADD fails.
            if let Err(rm) = self.remove_reservation(&name) {
                log::warn!("{rm}");
            }
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
        self.owners()?;
        self.remove_reservation(&ip.to_string())
    }

    /// Reservation files are the files named by an address; the lock,
    /// `last_reserved_ip.*`, the owner index and temp files are skipped. Empty, garbage
    /// and unreadable ones are listed with an empty content (owned by nobody). Reads every
    /// file (GC), and rebuilds the owner index from them.
    fn list(&mut self) -> Result<Vec<Entry>, StoreError> {
        let dir = self.store.dir.clone();
        let stamp = DirStamp::of(&dir).map_err(store_err("stat", &dir))?;
        let mut files = HashMap::new();
        let mut out = Vec::new();
        for (name, ino, content) in self.scan(None)? {
            let content = content.unwrap_or(Content::Unreadable);
            let known = Known {
                ino,
                owner: content.owner(),
            };
            if let Some(ip) = address(&name) {
                let content = match content {
                    Content::Text(t) => t,
                    _ => String::new(),
                };
                out.push(Entry { ip, content });
            }
            files.insert(name, known);
        }
        self.owners = Some(Owners {
            index: Index::from_files(stamp, &files),
            dirty: true,
            listed: true,
        });
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// The allocator's duplicate check: trusts the index (see [`crate::index`]).
    fn find_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self.lookup(id, ifname, false)?.ips())
    }

    fn release_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        self.release_attachment(id, ifname, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Allocator, RangeSet, RawRange};
    use std::os::unix::fs::PermissionsExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn set(subnet: &str) -> RangeSet {
        let r = RawRange {
            subnet: Some(subnet.into()),
            range_start: None,
            range_end: None,
            gateway: None,
        }
        .parse()
        .expect("range");
        RangeSet::canonicalize(&[r]).expect("set")
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
        assert_eq!(l.last_reserved(0).expect("last"), Some(ip("10.0.0.2")));
        assert_eq!(l.last_reserved(7).expect("last"), None);
        drop(l);
        store.sync().expect("sync");
        // Nothing else: no temp file left behind.
        assert_eq!(
            names(&dir),
            [
                INDEX_FILE,
                "10.0.0.2",
                "fd00::2",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
        );
    }

    #[test]
    fn peek_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "n").expect("open");
        let dir = store.dir().to_owned();
        fs::write(dir.join("10.0.0.5"), "c1\r\neth0").expect("write");
        fs::write(dir.join("10.0.0.6"), "").expect("write");
        fs::write(dir.join(format!("{LEGACY_TMP_PREFIX}10.0.0.7-1")), "x").expect("write");
        let before = names(&dir);
        let entries = store.lock().expect("lock").peek().expect("peek");
        assert_eq!(
            entries,
            [
                Entry {
                    ip: ip("10.0.0.5"),
                    content: "c1\r\neth0".into()
                },
                Entry {
                    ip: ip("10.0.0.6"),
                    content: String::new()
                }
            ]
        );
        assert_eq!(names(&dir), before, "peek changed the store");
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
        fs::write(dir.join("10.0.0.8"), "x".repeat(5000)).expect("write");
        nix::unistd::mkfifo(&dir.join("10.0.0.9"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        std::os::unix::fs::symlink("/etc/hostname", dir.join("10.0.0.10")).expect("symlink");
        fs::create_dir(dir.join("10.0.0.11")).expect("mkdir");
        fs::write(dir.join(".tmp-10.0.0.7-1"), "c9\r\neth0").expect("write");
        fs::write(dir.join("last_reserved_ip.0"), "garbage").expect("write");
        let mut l = store.lock().expect("lock");
        // Nothing blocks (the FIFO) or follows a link.
        let entries = l.list().expect("list");
        let got: Vec<(String, &str)> = entries
            .iter()
            .map(|e| (e.ip.to_string(), e.content.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.5".to_owned(), "old-cid"),
                ("10.0.0.6".to_owned(), ""),
                ("10.0.0.8".to_owned(), ""),
                ("10.0.0.9".to_owned(), ""),
                ("10.0.0.10".to_owned(), ""),
            ]
        );
        assert_eq!(l.last_reserved(0).expect("last"), None);
        assert_eq!(
            l.find_by_id("old-cid", "eth0").expect("find"),
            vec![ip("10.0.0.5")]
        );
        // The empty file still blocks its address.
        assert!(!l.reserve("c1", "eth0", ip("10.0.0.6"), 0).expect("reserve"));
        // The listing saw the leftover temp file and swept it.
        assert!(!dir.join(".tmp-10.0.0.7-1").exists());
        assert_eq!(l.remove_stale_temp_files().expect("clean"), 0);
        assert_eq!(
            l.release_by_id("old-cid", "eth0").expect("rel"),
            vec![ip("10.0.0.5")]
        );
        assert!(!dir.join("10.0.0.5").exists());
        l.release(ip("10.9.9.9")).expect("absent is fine");
        // Unknown owners are released by address (GC).
        for a in ["10.0.0.6", "10.0.0.8", "10.0.0.9", "10.0.0.10"] {
            l.release(ip(a)).expect("release");
        }
        assert!(l.list().expect("list").is_empty());
        assert!(Path::new("/etc/hostname").exists() || !dir.join("10.0.0.10").exists());
    }

    /// README: "if that write fails the reservation is released".
    #[test]
    fn a_failed_last_reserved_write_releases_the_reservation() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "n").expect("open");
        // rename(2) cannot replace a non-empty directory.
        fs::create_dir_all(store.dir().join("last_reserved_ip.0/x")).expect("mkdir");
        let mut l = store.lock().expect("lock");
        let e = l
            .reserve("c1", "eth0", ip("10.0.0.2"), 0)
            .expect_err("must fail");
        assert_eq!(e.op, "write", "{e}");
        assert!(!store.dir().join("10.0.0.2").exists(), "released");
        assert!(l.find_by_id("c1", "eth0").expect("find").is_empty());
        drop(l);
        assert!(
            !names(store.dir()).iter().any(|n| n.starts_with(".tmp-")),
            "{:?}",
            names(store.dir())
        );
    }

    /// Filesystems without `O_TMPFILE` (overlayfs before Linux 6.6, kernels before 3.11):
    /// temp files have names from the start, are made under the store lock, and the store
    /// behaves the same, index included.
    #[test]
    fn without_o_tmpfile() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = DiskStore::open(tmp.path(), "n").expect("open");
        store.named_temps = true;
        let s = set("10.1.0.0/24");
        let a = Allocator::new(&s, 0);
        fill(&store, &s, 5);
        let mut l = store.lock().expect("lock");
        a.get(&mut l, "c", "eth0", None).expect("alloc");
        assert_eq!((l.files_read(), l.listings()), (0, 0));
        assert!(matches!(
            a.get(&mut l, "c", "eth0", None),
            Err(crate::AllocError::Duplicate { .. })
        ));
        assert_eq!(
            l.release_attachment("c", "eth0", 1).expect("del"),
            [ip("10.1.0.7")]
        );
        drop(l);
        store.sync().expect("sync");
        assert!(
            !names(store.dir()).iter().any(|n| n.starts_with(".tmp-")),
            "{:?}",
            names(store.dir())
        );
        assert_eq!(
            fs::read(store.dir().join("10.1.0.2")).expect("read"),
            format!("{:064x}\r\neth0", 0).as_bytes()
        );
    }

    fn fill(store: &DiskStore, set: &RangeSet, n: usize) {
        let a = Allocator::new(set, 0);
        for i in 0..n {
            let id = format!("{i:064x}");
            let p = store.prepare(&id, "eth0").expect("prepare");
            assert_eq!(p.is_some(), !store.named_temps, "O_TMPFILE works here");
            let mut l = store.lock().expect("lock");
            l.stage(p);
            a.get(&mut l, &id, "eth0", None).expect("alloc");
        }
    }

    /// The ADD path must neither read every reservation nor list the directory (issue 11):
    /// its cost would grow with the number of pods.
    #[test]
    fn lookups_open_only_the_attachments_own_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "n").expect("open");
        let s = set("10.1.0.0/16");
        let a = Allocator::new(&s, 0);
        fill(&store, &s, 300);

        let p = store.prepare("new", "eth0").expect("prepare");
        let mut l = store.lock().expect("lock");
        l.stage(p);
        a.get(&mut l, "new", "eth0", None).expect("alloc");
        assert_eq!(
            (l.files_read(), l.listings()),
            (0, 0),
            "ADD of a new attachment"
        );
        drop(l);

        let mut l = store.lock().expect("lock");
        assert!(matches!(
            a.get(&mut l, "new", "eth0", None),
            Err(crate::AllocError::Duplicate { .. })
        ));
        assert_eq!(
            (l.files_read(), l.listings()),
            (1, 0),
            "duplicate ADD: its own file"
        );
        drop(l);

        let mut l = store.lock().expect("lock");
        let id = format!("{:064x}", 7);
        assert_eq!(
            l.release_attachment(&id, "eth0", 2).expect("del"),
            vec![ip("10.1.0.9")]
        );
        assert_eq!((l.files_read(), l.listings()), (1, 0), "DEL: its own file");
        // Nothing known: one listing (no file read) before "nothing to release".
        assert!(
            l.release_attachment(&id, "eth0", 2)
                .expect("del again")
                .is_empty()
        );
        assert_eq!((l.files_read(), l.listings()), (1, 1));
        drop(l);
        let mut l = store.lock().expect("lock");
        assert_eq!(l.list().expect("list").len(), 300);
    }

    #[test]
    fn another_writer_is_seen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DiskStore::open(tmp.path(), "n").expect("open");
        let s = set("10.1.0.0/24");
        fill(&store, &s, 20);
        let dir = store.dir().to_owned();

        // The reference plugin (no index) adds and removes reservations.
        fs::write(dir.join("10.1.0.200"), "go1\r\neth0").expect("write");
        fs::remove_file(dir.join("10.1.0.2")).expect("rm");
        let mut l = store.lock().expect("lock");
        assert_eq!(
            l.find_by_id("go1", "eth0").expect("find"),
            [ip("10.1.0.200")]
        );
        assert!(
            l.find_by_id(&format!("{:064x}", 0), "eth0")
                .expect("find")
                .is_empty()
        );
        assert_eq!(
            (l.files_read(), l.listings()),
            (21, 1),
            "a foreign change: every file read once, then the match"
        );
        drop(l);
        let mut l = store.lock().expect("lock");
        assert_eq!(
            l.find_by_id("go1", "eth0").expect("find"),
            [ip("10.1.0.200")]
        );
        assert_eq!(
            (l.files_read(), l.listings()),
            (1, 0),
            "the index was rebuilt"
        );
        drop(l);

        // Changes in the clock tick of our last one leave the directory's times as they
        // were: DEL and CHECK still find them through a listing.
        let same_tick = |store: &DiskStore, change: &dyn Fn()| {
            let path = store.dir().join(INDEX_FILE);
            let mut idx = Index::parse(&fs::read(&path).expect("read")).expect("index");
            change();
            idx.stamp = DirStamp::of(store.dir()).expect("stamp");
            fs::write(&path, idx.render()).expect("write");
        };
        same_tick(&store, &|| {
            fs::write(dir.join("10.1.0.201"), "go2\r\neth0").expect("write");
            // Replaced under the same name: a new inode.
            fs::write(dir.join("10.1.0.3.new"), "go3\r\neth0").expect("write");
            fs::rename(dir.join("10.1.0.3.new"), dir.join("10.1.0.3")).expect("mv");
        });
        let mut l = store.lock().expect("lock");
        assert_eq!(
            l.find_attachment("go2", "eth0").expect("find"),
            [ip("10.1.0.201")]
        );
        assert_eq!(
            l.release_attachment("go3", "eth0", 1).expect("del"),
            [ip("10.1.0.3")]
        );
        assert_eq!(
            (l.files_read(), l.listings()),
            (4, 1),
            "one listing, the two changed names, then each match"
        );
        drop(l);

        // Rewritten in place (nobody does): a wrong owner is caught when confirmed.
        same_tick(&store, &|| {
            fs::write(dir.join("10.1.0.201"), "go4\r\neth0").expect("write");
        });
        let mut l = store.lock().expect("lock");
        assert!(l.find_attachment("go2", "eth0").expect("find").is_empty());
        assert_eq!(
            l.find_by_id("go4", "eth0").expect("find"),
            [ip("10.1.0.201")]
        );
        drop(l);

        // A torn index is rebuilt.
        fs::write(dir.join(INDEX_FILE), b"rcni host-local owners v1\n1 2").expect("write");
        let mut l = store.lock().expect("lock");
        assert_eq!(
            l.find_by_id("go1", "eth0").expect("find"),
            [ip("10.1.0.200")]
        );
        assert!(l.files_read() >= 20);
    }
}
