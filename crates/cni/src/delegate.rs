//! Running another plugin (a delegate: IPAM, or flannel's bridge) as libcni's `pkg/invoke` does.
//!
//! The delegate is looked up on `CNI_PATH` ([`find_in_path`]), executed with our environment
//! but the `CNI_*` variables taken from the [`CmdArgs`] (so it also works when the dispatcher was
//! driven by an injected environment) and `CNI_COMMAND` replaced, and fed `conf` on stdin. Its
//! stderr is copied to ours. A failure comes back as the delegate's own error object; with an
//! empty stdout, as libcni's `netplugin failed: "<stderr>"`.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::time::Duration;

use crate::error::{CniError, code};
use crate::skel::{CmdArgs, Command};

/// libcni retries `text file busy` (ETXTBSY: the binary is being written, e.g. by an
/// installer) up to 5 times.
const BUSY_RETRIES: u32 = 5;
/// First retry delay; doubled each time (50+100+200+400+800 ms). libcni waits 1 s each time,
/// which only slows the common case of a short copy.
const BUSY_BACKOFF: Duration = Duration::from_millis(50);

/// Find an executable named `plugin_type` on the given `CNI_PATH` dirs (libcni
/// `invoke.FindInPath`: the first regular file wins).
///
/// Errors are code 7 (the config names a plugin we cannot run), with libcni's messages:
/// `no plugin name provided`, `invalid plugin name: a/b`, `no paths provided`,
/// `failed to find plugin "x" in path [/a /b]`.
pub fn find_in_path(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    let err = |msg: String| CniError::new(code::INVALID_NETWORK_CONFIG, msg);
    if plugin_type.is_empty() {
        return Err(err("no plugin name provided".into()));
    }
    // A type with a separator would escape CNI_PATH.
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(err(format!("invalid plugin name: {plugin_type}")));
    }
    if path.is_empty() {
        return Err(err("no paths provided".into()));
    }
    for dir in path {
        let full = dir.join(plugin_type);
        if std::fs::metadata(&full).is_ok_and(|m| m.is_file()) {
            return Ok(full);
        }
    }
    let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    Err(err(format!(
        "failed to find plugin {plugin_type:?} in path [{}]",
        dirs.join(" ")
    )))
}

/// Exec the delegate for ADD; returns its result as JSON (a missing `cniVersion` is filled with
/// the version of `conf`, as libcni's `fixupResultVersion`).
pub fn add(plugin_type: &str, conf: &[u8], args: &CmdArgs) -> Result<serde_json::Value, CniError> {
    let stdout = exec(plugin_type, Command::Add, conf, args)?;
    let mut result: serde_json::Value = serde_json::from_slice(&stdout).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("failed to parse the result of delegate {plugin_type:?}: {e}"),
        )
    })?;
    let obj = result.as_object_mut().ok_or_else(|| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the result of delegate {plugin_type:?} is not a JSON object"),
        )
    })?;
    let missing = obj
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty);
    if missing {
        obj.insert("cniVersion".into(), conf_version(conf).into());
    }
    Ok(result)
}

/// Exec the delegate for DEL.
pub fn del(plugin_type: &str, conf: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    exec(plugin_type, Command::Del, conf, args).map(drop)
}

/// Exec the delegate for CHECK.
pub fn check(plugin_type: &str, conf: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    exec(plugin_type, Command::Check, conf, args).map(drop)
}

/// Exec the delegate for STATUS (SPEC: a plugin must forward STATUS to its IPAM).
pub fn status(plugin_type: &str, conf: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    exec(plugin_type, Command::Status, conf, args).map(drop)
}

/// Exec the delegate for GC (SPEC: GC must be forwarded to delegated plugins).
pub fn gc(plugin_type: &str, conf: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    exec(plugin_type, Command::Gc, conf, args).map(drop)
}

/// The `cniVersion` of a config, `""` -> 0.1.0.
fn conf_version(conf: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(conf)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(String::from)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| crate::version::DEFAULT_CONFIG_VERSION.to_string())
}

/// Finds and runs the delegate; returns its stdout on success.
pub fn exec(
    plugin_type: &str,
    command: Command,
    conf: &[u8],
    args: &CmdArgs,
) -> Result<Vec<u8>, CniError> {
    let plugin = find_in_path(plugin_type, &args.path)?;
    exec_path(&plugin, command, conf, args)
}

/// Runs the plugin binary at `plugin`; returns its stdout on success.
pub fn exec_path(
    plugin: &Path,
    command: Command,
    conf: &[u8],
    args: &CmdArgs,
) -> Result<Vec<u8>, CniError> {
    exec_retrying(plugin, command, conf, args, &mut std::thread::sleep)
}

/// [`exec_path`] with the wait between `text file busy` retries injected (tests).
fn exec_retrying(
    plugin: &Path,
    command: Command,
    conf: &[u8],
    args: &CmdArgs,
    sleep: &mut dyn FnMut(Duration),
) -> Result<Vec<u8>, CniError> {
    log::debug!("delegating {} to {}", command.as_str(), plugin.display());
    let mut delay = BUSY_BACKOFF;
    let mut attempt = 0;
    let output = loop {
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
            Ok(out) => break out,
        }
    };
    // stderr is informational: pass it on, as libcni does.
    if !output.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&output.stderr);
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(plugin_error(&output))
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
        .stderr(Stdio::piped())
        .env("CNI_COMMAND", command.as_str());
    let path = std::env::join_paths(&args.path).unwrap_or_default();
    let vars = [
        ("CNI_CONTAINERID", args.container_id.as_str().into()),
        (
            "CNI_NETNS",
            args.netns
                .as_ref()
                .map(|p| p.as_os_str().to_owned())
                .unwrap_or_default(),
        ),
        ("CNI_IFNAME", args.ifname.as_str().into()),
        ("CNI_ARGS", args.raw_args.as_str().into()),
        ("CNI_PATH", path),
    ];
    for (k, v) in vars {
        // Empty means "not given": unset it rather than inherit a stale value.
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
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

/// libcni `RawExec.pluginErr`.
fn plugin_error(output: &Output) -> CniError {
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        let msg = if output.stderr.is_empty() {
            format!("netplugin failed with no error message: {}", output.status)
        } else {
            format!(
                "netplugin failed: {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        return CniError::internal(msg);
    }
    match serde_json::from_slice::<CniError>(&output.stdout) {
        // Code 0 is not an error code; keep the message, report it as internal.
        Ok(e) if e.code == 0 => CniError {
            code: code::INTERNAL,
            ..e
        },
        Ok(e) => e,
        Err(perr) => CniError::internal(format!(
            "netplugin failed but error parsing its diagnostic message {:?}: {perr}",
            String::from_utf8_lossy(&output.stdout)
        )),
    }
}

#[cfg(test)]
mod tests;
