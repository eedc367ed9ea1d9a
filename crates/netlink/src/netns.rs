//! Network namespaces: open handles and run code inside one.
//!
//! [`run_in`] is the only place in the project that calls `setns`. It does so on a fresh
//! scoped thread that ends inside the target netns, so there is nothing to restore and a
//! failure can never leave the plugin's main thread in the wrong namespace (the Go
//! reference's `ns.Do` has to restore and lock OS threads for the same job).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result};

/// The calling thread's netns file. `/proc/self/ns/net` would be the *main* thread's netns,
/// which is wrong after a thread-level `unshare`/`setns` (tests, [`run_in`]). Named through
/// the thread id rather than `/proc/thread-self`, which kernels before 3.17 lack.
fn thread_netns_path() -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/task/{}/ns/net",
        nix::unistd::gettid().as_raw()
    ))
}

/// An open network namespace (an fd to an nsfs file such as `/run/netns/x` or
/// `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens the netns at `path`. A missing path gives an error with
    /// [`Error::is_not_found`] true (CNI DEL treats that as success).
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("open netns {}", path.display()), e))?;
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's current netns.
    pub fn current() -> Result<Self> {
        Self::open(&thread_netns_path())
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Runs `f` on a scoped thread that first entered `ns`, and returns its value.
///
/// Use it to create sockets inside a netns ([`crate::Netlink::in_netns`]) and for
/// `/proc/sys/net` access, which is resolved against the netns of the thread that opens the
/// file. Not for `/sys/class/net`: sysfs shows the netns it was mounted in, whatever the thread.
/// A panic in `f` is propagated to the caller.
pub fn run_in<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T> {
    let joined = std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::io(
                    format!("setns into {}", ns.path().display()),
                    std::io::Error::from(e),
                )
            })?;
            Ok(f())
        })
        .join()
    });
    match joined {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
