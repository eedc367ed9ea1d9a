//! A file written and locked, waiting to be published under its name.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};

use crate::Durability;
use crate::temp::{self, Born};

/// How [`Pending::publish`] put a file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The name was free: the file was linked to it.
    Created,
    /// The name existed: the file was renamed over it.
    Replaced,
}

/// Distinguishes the temp names of one process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Tries before giving up on finding a free temp name (each taken one is a leftover of an
/// earlier process that had our pid).
const NAME_TRIES: u32 = 1000;

/// How the temp file is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// `O_TMPFILE`, locked, then linked to a name (needs `/proc/self/fd`).
    Unnamed,
    /// Created by name, then locked (filesystems or kernels without `O_TMPFILE`).
    Named,
}

fn proc_fd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Errors that mean "this filesystem or kernel has no `O_TMPFILE`" (before 3.11 the flag
/// reads as `O_DIRECTORY` and opening a directory for writing fails with `EISDIR`).
fn no_tmpfile(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
    )
}

/// Errors of `link(2)` on filesystems without hard links.
fn no_hard_links(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(Errno::EMLINK as i32)
}

/// A file with its contents written (and, when durable, synced), held locked until it is
/// published with [`link_as`](Pending::link_as) or [`rename_as`](Pending::rename_as) or
/// dropped. Dropping it removes its temp name, if it has one, before the lock goes.
#[derive(Debug)]
pub struct Pending {
    file: File,
    dir: PathBuf,
    hint: String,
    /// Its temp name, while it has one.
    temp: Option<PathBuf>,
    /// Whether the lock was taken before the file had a name.
    born: Born,
    durability: Durability,
    published: bool,
}

impl Pending {
    /// Writes `contents` with `mode` to a new temp file in `dir` (in the filesystem of its
    /// future name), fsynced when `durability` says so. `hint` names the temp file.
    pub fn create(
        dir: &Path,
        hint: &str,
        contents: &[u8],
        mode: u32,
        durability: Durability,
    ) -> io::Result<Self> {
        let strategy = if proc_fd_available() {
            Strategy::Unnamed
        } else {
            Strategy::Named
        };
        Self::create_with(dir, hint, contents, mode, durability, strategy)
    }

    /// As [`create`](Pending::create), always by name (what filesystems without `O_TMPFILE`
    /// get): for tests of that path in the crates that use this one.
    pub fn create_named(
        dir: &Path,
        hint: &str,
        contents: &[u8],
        mode: u32,
        durability: Durability,
    ) -> io::Result<Self> {
        Self::create_with(dir, hint, contents, mode, durability, Strategy::Named)
    }

    /// As [`create`](Pending::create), but `None` where the file cannot be made without a
    /// name (no `O_TMPFILE` or no `/proc`): then nothing was created, the directory did not
    /// change.
    pub fn create_unnamed(
        dir: &Path,
        hint: &str,
        contents: &[u8],
        mode: u32,
        durability: Durability,
    ) -> io::Result<Option<Self>> {
        if !proc_fd_available() {
            return Ok(None);
        }
        match Self::open_unnamed(dir, hint, mode) {
            Ok(p) => p.fill(contents, mode, durability).map(Some),
            Err(e) if no_tmpfile(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn create_with(
        dir: &Path,
        hint: &str,
        contents: &[u8],
        mode: u32,
        durability: Durability,
        strategy: Strategy,
    ) -> io::Result<Self> {
        let p = match strategy {
            Strategy::Unnamed => match Self::open_unnamed(dir, hint, mode) {
                Err(e) if no_tmpfile(&e) => Self::open_named(dir, hint, mode)?,
                other => other?,
            },
            Strategy::Named => Self::open_named(dir, hint, mode)?,
        };
        p.fill(contents, mode, durability)
    }

    fn fill(mut self, contents: &[u8], mode: u32, durability: Durability) -> io::Result<Self> {
        // The umask may have narrowed the create mode.
        self.file.set_permissions(Permissions::from_mode(mode))?;
        self.file.write_all(contents)?;
        self.durability = durability;
        if durability == Durability::Durable {
            self.file.sync_data()?;
        }
        Ok(self)
    }

    fn open_unnamed(dir: &Path, hint: &str, mode: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(mode)
            .custom_flags(OFlag::O_TMPFILE.bits())
            .open(dir)?;
        // Nobody else can see it yet: this never waits.
        let born = match file.lock() {
            Ok(()) => Born::Locked,
            Err(e) => {
                log::debug!("flock on a temp file in {}: {e}", dir.display());
                Born::Unlocked
            }
        };
        Ok(Pending {
            file,
            dir: dir.to_owned(),
            hint: hint.to_owned(),
            temp: None,
            born,
            durability: Durability::Hint,
            published: false,
        })
    }

    fn open_named(dir: &Path, hint: &str, mode: u32) -> io::Result<Self> {
        for _ in 0..NAME_TRIES {
            let path = dir.join(temp::name(
                hint,
                SEQ.fetch_add(1, Ordering::Relaxed),
                Born::Unlocked,
            ));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // A sweeper may hold it for an instant (it finds it young and lets go): wait.
            if let Err(e) = file.lock() {
                log::debug!("flock on {}: {e}", path.display());
            }
            return Ok(Pending {
                file,
                dir: dir.to_owned(),
                hint: hint.to_owned(),
                temp: Some(path),
                born: Born::Unlocked,
                durability: Durability::Hint,
                published: false,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temp file name in {}", dir.display()),
        ))
    }

    /// The open file (e.g. for its inode number).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// Links the unnamed file to `to`; `Ok(false)` when `to` exists.
    fn link_unnamed(&self, to: &Path) -> io::Result<bool> {
        match nix::unistd::linkat(
            AT_FDCWD,
            self.proc_path().as_str(),
            AT_FDCWD,
            to,
            AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn already_published() -> io::Error {
        io::Error::other("temp file already published")
    }

    /// Publishes the file as `dir/name` unless that exists (`Ok(false)`: the file stays
    /// pending and can be tried under another name).
    pub fn link_as(&mut self, name: &str) -> io::Result<bool> {
        if self.published {
            return Err(Self::already_published());
        }
        let target = self.dir.join(name);
        let linked = match &self.temp {
            None => self.link_unnamed(&target),
            Some(temp) => match fs::hard_link(temp, &target) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
        };
        let linked = match linked {
            Err(e) if no_hard_links(&e) => self.create_in_place(&target),
            other => other,
        }?;
        self.published = linked;
        Ok(linked)
    }

    /// Filesystems without hard links: `O_CREAT|O_EXCL` on the target and a copy of the
    /// contents. A crash can leave it short, which readers of such files tolerate.
    fn create_in_place(&self, target: &Path) -> io::Result<bool> {
        let mode = self.file.metadata()?.permissions().mode() & 0o7777;
        let mut out = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(target)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        };
        let copied = self
            .read_all()
            .and_then(|c| out.write_all(&c))
            .and_then(|()| out.set_permissions(Permissions::from_mode(mode)))
            .and_then(|()| match self.durability {
                Durability::Durable => out.sync_data(),
                Durability::Hint => Ok(()),
            });
        if let Err(e) = copied {
            let _ = fs::remove_file(target);
            return Err(e);
        }
        Ok(true)
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = self.file.metadata()?.len() as usize;
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Publishes the file as `dir/name`, atomically replacing what is there.
    pub fn rename_as(mut self, name: &str) -> io::Result<()> {
        if self.published {
            return Err(Self::already_published());
        }
        if self.temp.is_none() {
            self.temp = Some(self.name_unnamed()?);
        }
        if let Some(temp) = &self.temp {
            fs::rename(temp, self.dir.join(name))?;
        }
        self.temp = None;
        self.published = true;
        Ok(())
    }

    /// Publishes the file as `dir/name`: linked when the name is free (then a writer killed
    /// at any point leaves no temp name behind), else renamed over what is there.
    pub fn publish(mut self, name: &str) -> io::Result<Published> {
        if self.link_as(name)? {
            Ok(Published::Created)
        } else {
            self.rename_as(name).map(|()| Published::Replaced)
        }
    }

    /// Gives the unnamed (locked) file a temp name, so that it can be renamed.
    fn name_unnamed(&self) -> io::Result<PathBuf> {
        for _ in 0..NAME_TRIES {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(temp::name(&self.hint, seq, self.born));
            if self.link_unnamed(&path)? {
                return Ok(path);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temp file name in {}", self.dir.display()),
        ))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Still locked here: a sweeper never sees this name unlocked.
        if let Some(temp) = self.temp.take()
            && let Err(e) = fs::remove_file(&temp)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("remove {}: {e}", temp.display());
        }
    }
}

#[cfg(test)]
impl Pending {
    /// The state of [`Pending::rename_as`] between naming and renaming.
    pub(crate) fn name_unnamed_for_test(&mut self) -> String {
        let path = self.name_unnamed().expect("name");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.temp = Some(path);
        name
    }
}
