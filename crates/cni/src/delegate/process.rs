//! Running a delegate by exec, as libcni's `RawExec` does.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command as Process, Output, Stdio};
use std::time::Duration;

use super::delegate_env;
use crate::error::{CniError, code};
use crate::skel::{CmdArgs, Command};

/// libcni retries `text file busy` (ETXTBSY: the binary is being written, e.g. by an
/// installer) up to 5 times.
const BUSY_RETRIES: u32 = 5;
/// First retry delay; doubled each time (50+100+200+400+800 ms). libcni waits 1 s each time,
/// which only slows the common case of a short copy.
const BUSY_BACKOFF: Duration = Duration::from_millis(50);

/// Execs `plugin` (retrying `text file busy`, waiting with `sleep`) and collects its output;
/// an error when it cannot be executed at all (code 5).
pub(super) fn run(
    plugin: &Path,
    command: Command,
    conf: &[u8],
    args: &CmdArgs,
    sleep: &mut dyn FnMut(Duration),
) -> Result<Output, CniError> {
    let mut delay = BUSY_BACKOFF;
    let mut attempt = 0;
    loop {
        match run_once(plugin, command, conf, args) {
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && attempt < BUSY_RETRIES => {
                attempt += 1;
                log::info!("{} is busy, retrying in {delay:?}", plugin.display());
                sleep(delay);
                delay *= 2;
            }
            Err(e) => {
                return Err(CniError::new(
                    code::IO_FAILURE,
                    format!("failed to execute plugin {}: {e}", plugin.display()),
                ));
            }
            Ok(out) => return Ok(out),
        }
    }
}

fn run_once(
    plugin: &Path,
    command: Command,
    conf: &[u8],
    args: &CmdArgs,
) -> std::io::Result<Output> {
    let mut cmd = Process::new(plugin);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in delegate_env(command, args) {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn()?;
    // Feed stdin from a thread so a delegate writing a lot before reading cannot deadlock us.
    let stdin = child.stdin.take();
    let conf = conf.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            // A delegate may exit without reading stdin; EPIPE is not our failure.
            let _ = s.write_all(&conf);
        }
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    out
}
