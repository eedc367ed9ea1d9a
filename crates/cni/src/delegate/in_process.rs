//! Running a delegate inside this process, with exactly what its exec would give it.
//!
//! Only when the file found on `CNI_PATH` is provably this build: its build ID
//! ([`super::build_id`]) equals that of the running executable, so its code is ours; and its
//! file name (what the exec'd binary would dispatch on) is one of the [`register`]ed
//! plugins. Then the plugin's [`Entry`] runs on this thread with:
//! * the environment the exec would pass: ours, with the `CNI_*` variables of
//!   [`super::delegate_env`] (read through the dispatcher's lookup; the process environment is
//!   not touched);
//! * `conf` as stdin, its stdout collected, its exit status (0 or 1) as an exit status;
//! * a panic caught by the same guard, which makes it the same error object and status 1;
//! * its log lines on our stderr under its own name and level, in the same order as the exec
//!   path copies a child's stderr (the dispatcher's own stderr writes are collected and
//!   passed on like a child's);
//!
//! so that the caller reads the same bytes either way, through the same code (result parsing,
//! libcni's `fixupResultVersion`, error objects, version conversion).
//!
//! What differs is what a process boundary would contain: a panic *while panicking* or a
//! stack overflow aborts this process, not only the delegate; a panic message names the
//! caller's thread id instead of the child's. The plugins hold nothing process-wide across
//! calls that could leak (locks and sockets are dropped on return; the one lock kind used,
//! `flock`, belongs to an open file, not to a process, so a delegate's lock conflicts with
//! its caller's exactly as across processes).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::sync::OnceLock;

use super::{build_id, delegate_env};
use crate::logging;
use crate::skel::{CmdArgs, Command, Entry};

static PLUGINS: OnceLock<&'static [Entry]> = OnceLock::new();

/// See [`super::register`]. A second call keeps the first table.
pub(super) fn register(plugins: &'static [Entry]) {
    let _ = PLUGINS.set(plugins);
}

/// The registered plugin the file at `path` would run as when exec'd, if it is provably
/// this build.
pub(super) fn entry_for(path: &Path) -> Option<&'static Entry> {
    let plugins = PLUGINS.get()?;
    let name = path.file_name()?.to_str()?;
    let entry = plugins.iter().find(|e| e.name == name)?;
    let own = build_id::own()?;
    match build_id::of_file(path) {
        Some(id) if id == own => Some(entry),
        _ => {
            log::debug!("{} is not this build: exec'd", path.display());
            None
        }
    }
}

/// Runs `entry` as its exec would run; what a child would have left.
pub(super) fn call(entry: &Entry, command: Command, conf: &[u8], args: &CmdArgs) -> Output {
    let vars = delegate_env(command, args);
    let env = |k: &str| -> Option<String> {
        match vars.iter().find(|(name, _)| *name == k) {
            // A child's `std::env::var` of a non-UTF-8 value fails: the same here.
            Some((_, v)) => v.clone().and_then(|v| v.into_string().ok()),
            None => std::env::var(k).ok(),
        }
    };
    let mut stdin = conf;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = {
        let _log = logging::Scope::enter(entry.name);
        entry.call(&env, &mut stdin, &mut stdout, &mut stderr)
    };
    Output {
        // What `exit(status)` leaves for a waiting parent.
        status: ExitStatus::from_raw((status & 0xff) << 8),
        stdout,
        stderr,
    }
}
