//! Running another plugin (a delegate: IPAM, or flannel's bridge) as libcni's `pkg/invoke` does.
//!
//! The delegate is looked up on `CNI_PATH` ([`find_in_path`]), run with our environment but
//! the `CNI_*` variables taken from the [`CmdArgs`] (so it also works when the dispatcher was
//! driven by an injected environment) and `CNI_COMMAND` replaced, and fed `conf` on stdin. Its
//! stderr is passed on to ours. A failure comes back as the delegate's own error object; with
//! an empty stdout, as libcni's `netplugin failed: "<stderr>"`.
//!
//! Two ways to run it, one outcome (exit status, stdout, stderr) read the same way:
//! * [`mod@process`]: exec the file, as libcni does;
//! * [`in_process`]: when the file found is provably this build (its build ID is ours, see
//!   [`build_id`]) and names one of the plugins [`register`]ed by the multi-call binary's
//!   `main`, that plugin's dispatcher runs in this process, with the environment, stdin and
//!   exit status the exec would have given it. A wrapper script, another version, the Go
//!   plugins, anything else: exec'd.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::error::{CniError, code};
use crate::skel::{CmdArgs, Command, Entry};

pub mod build_id;
mod in_process;
mod process;

/// Hands the delegation layer the plugins this binary holds (the multi-call binary's `main`
/// does, once, before it dispatches): a delegate found on `CNI_PATH` that is one of them and
/// provably this build runs in-process. Without it every delegate is exec'd.
pub fn register(plugins: &'static [Entry]) {
    in_process::register(plugins);
}

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
    let output = match in_process::entry_for(plugin) {
        Some(entry) => {
            log::debug!(
                "delegating {} to {} in-process ({} is this build)",
                command.as_str(),
                entry.name,
                plugin.display()
            );
            in_process::call(entry, command, conf, args)
        }
        None => {
            log::debug!("delegating {} to {}", command.as_str(), plugin.display());
            process::run(plugin, command, conf, args, sleep)?
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

/// The `CNI_*` variables a delegate gets, whichever way it runs: `CNI_COMMAND`, and the
/// others from `args`; `None` means unset (empty means "not given": never inherit a stale
/// value). Everything else comes from our own environment.
fn delegate_env(command: Command, args: &CmdArgs) -> [(&'static str, Option<OsString>); 6] {
    let given = |v: OsString| (!v.is_empty()).then_some(v);
    [
        ("CNI_COMMAND", Some(command.as_str().into())),
        ("CNI_CONTAINERID", given(args.container_id.as_str().into())),
        (
            "CNI_NETNS",
            given(
                args.netns
                    .as_ref()
                    .map(|p| p.as_os_str().to_owned())
                    .unwrap_or_default(),
            ),
        ),
        ("CNI_IFNAME", given(args.ifname.as_str().into())),
        ("CNI_ARGS", given(args.raw_args.as_str().into())),
        (
            "CNI_PATH",
            given(std::env::join_paths(&args.path).unwrap_or_default()),
        ),
    ]
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
