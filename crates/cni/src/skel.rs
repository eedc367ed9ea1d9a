//! The dispatcher: environment and stdin in, one JSON document (or nothing) out.
//!
//! Mirrors the Go `pkg/skel` (`pluginMain`), check for check and message for message:
//!
//! 1. The `CNI_*` variables ([`mod@env`] table, in Go's order): a present, required variable is
//!    validated at once (container ID, interface name); then every missing required variable is
//!    reported in one error (code 4, `required env variables [CNI_NETNS,CNI_PATH] missing`).
//!    With `CNI_COMMAND` unset, the about text and the supported versions go to stderr, exit 0.
//! 2. `VERSION` prints `{"cniVersion":"<CURRENT>","supportedVersions":[...]}` and ignores stdin.
//! 3. stdin is read (code 5) and checked: JSON (code 6 `error unmarshall network config: ..`),
//!    a valid network `name` (code 7).
//! 4. Per command: `CHECK` needs a config >= 0.4.0 (`config version does not allow CHECK`),
//!    `STATUS`/`GC` >= 1.1.0; then the config version must be one the plugin supports (code 1
//!    `incompatible CNI versions`, details `config is "9.9.9", plugin supports ["0.1.0" ...]`).
//!    Unknown commands: code 4 `unknown CNI_COMMAND: FOO`.
//! 5. ADD/DEL (and CHECK): `CNI_NETNS` must not be the plugin's own netns (code 8) unless
//!    `CNI_NETNS_OVERRIDE` is `1`/`true`.
//! 6. The plugin is called; ADD's result is printed in the config's `cniVersion`; any error is
//!    printed as the CNI error object on stdout, exit 1.
//!
//! Only this module writes to stdout, and only once per run.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::args::CniArgs;
use crate::config::NetConf;
use crate::error::{CniError, code};
use crate::result::CniResult;
use crate::version::{CURRENT, DEFAULT_CONFIG_VERSION, SpecVersion};

pub mod env;

pub use env::{
    is_valid_name, validate_container_id, validate_interface_name, validate_network_name,
};

/// The CNI operations (`CNI_COMMAND`, SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `ADD`: attach a container to the network.
    Add,
    /// `DEL`: detach; idempotent and best effort.
    Del,
    /// `CHECK` (0.4.0+): verify an attachment.
    Check,
    /// `STATUS` (1.1.0+): is the plugin ready to serve ADDs.
    Status,
    /// `GC` (1.1.0+): release resources of attachments not listed as valid.
    Gc,
    /// `VERSION`: report supported versions.
    Version,
}

impl Command {
    /// Parses the exact (case-sensitive, as Go) `CNI_COMMAND` value.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The `CNI_COMMAND` spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// Everything a command handler gets. Built by the dispatcher from env + stdin.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    /// The command being run.
    pub command: Command,
    /// `CNI_CONTAINERID`; `""` when not given (STATUS/GC).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when empty/unset.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`; `""` when not given.
    pub ifname: String,
    /// `CNI_ARGS`, parsed (malformed pairs are reported by [`CniArgs::check_known`]).
    pub args: CniArgs,
    /// `CNI_ARGS` as given.
    pub raw_args: String,
    /// `CNI_PATH` split on `:` (empty entries dropped).
    pub path: Vec<PathBuf>,
    /// The exact config bytes from stdin.
    pub stdin: Vec<u8>,
    /// The shared config keys, parsed.
    pub conf: NetConf,
    /// The config's `cniVersion` (`""` -> 0.1.0); always one the plugin supports.
    pub version: SpecVersion,
}

/// What ADD returns.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutput {
    /// Rendered in the config's `cniVersion`.
    Result(CniResult),
    /// Printed as-is (flannel returns the delegate's result unchanged).
    Raw(serde_json::Value),
}

impl From<CniResult> for AddOutput {
    fn from(r: CniResult) -> Self {
        AddOutput::Result(r)
    }
}

/// A CNI plugin: one method per command. `STATUS` and `GC` default to success.
pub trait Plugin {
    /// The name the plugin is installed and run under (`bridge`): the multi-call binary
    /// dispatches on it, and it names the plugin in its about text and its log lines.
    const NAME: &'static str;
    /// ADD (SPEC §2).
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError>;
    /// DEL (SPEC §2): must succeed when resources are already gone.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// CHECK (SPEC §2).
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// STATUS (SPEC §2, 1.1.0): `Err` with code 50/51 when not ready.
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    /// GC (SPEC §2, 1.1.0): input in `args.conf.valid_attachments()`.
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// [`Plugin`]'s commands behind a vtable, so that the dispatcher is compiled once for every
/// plugin of the multi-call binary, not once per plugin (`Plugin` itself has a `const`, which
/// a trait object cannot have).
trait Commands {
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError>;
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn status(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError>;
}

impl<P: Plugin> Commands for P {
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Plugin::add(self, args)
    }
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Plugin::del(self, args)
    }
    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Plugin::check(self, args)
    }
    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        Plugin::status(self, args)
    }
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        Plugin::gc(self, args)
    }
}

/// Static facts about a plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Printed on stderr when `CNI_COMMAND` is unset, e.g. `"CNI host-local plugin rcni v0.1.0"`.
    pub about: String,
    /// The spec versions the plugin accepts (usually [`crate::version::SUPPORTED`]).
    pub supported: &'static [&'static str],
}

impl PluginInfo {
    /// An rcni plugin's: about text `CNI <name> plugin rcni v<version>`, every spec version.
    pub fn named(name: &str) -> PluginInfo {
        PluginInfo {
            about: format!("CNI {name} plugin rcni v{}", env!("CARGO_PKG_VERSION")),
            supported: crate::version::SUPPORTED,
        }
    }
}

/// The environment lookup the dispatcher reads the `CNI_*` variables through.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A plugin's one entry point, as the multi-call binary holds it: the name it runs under and
/// the guarded dispatcher on it. The same entry serves a process ([`Entry::run`]) and a
/// delegation inside one ([`Entry::call`], see [`crate::delegate`]).
#[derive(Clone, Copy)]
pub struct Entry {
    /// [`Plugin::NAME`].
    pub name: &'static str,
    dispatch: fn(Env<'_>, &mut dyn Read, &mut dyn Write, &mut dyn Write) -> i32,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).finish()
    }
}

impl Entry {
    /// The entry of plugin `P`.
    pub const fn of<P: Plugin + Default>() -> Entry {
        Entry {
            name: P::NAME,
            dispatch: dispatch_default::<P>,
        }
    }

    /// [`dispatch_guarded`] on this plugin with the given environment and IO; the exit code.
    pub fn call(
        &self,
        env: Env<'_>,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> i32 {
        (self.dispatch)(env, stdin, stdout, stderr)
    }

    /// The process's entry point: logging under the plugin's name, the process's environment
    /// and standard streams, then exit with the dispatcher's status.
    pub fn run(&self) -> ! {
        crate::init_logging(self.name);
        let env = |k: &str| std::env::var(k).ok();
        let mut stdout = std::io::stdout().lock();
        let status = self.call(
            &env,
            &mut std::io::stdin().lock(),
            &mut stdout,
            &mut std::io::stderr(),
        );
        let status = match stdout.flush() {
            Ok(()) => status,
            Err(e) => {
                log::error!("failed to write to stdout: {e}");
                1
            }
        };
        std::process::exit(status)
    }
}

fn dispatch_default<P: Plugin + Default>(
    env: Env<'_>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let info = PluginInfo::named(P::NAME);
    dispatch_guarded(&P::default(), &info, env, stdin, stdout, stderr)
}

/// Renders JSON as Go's `json.MarshalIndent(v, "", "    ")` does (4-space indent).
pub fn to_go_json(v: &serde_json::Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        // Serializing a Value cannot fail in practice; compact output is still valid JSON.
        Err(_) => v.to_string(),
    }
}

/// [`dispatch`], with a panic turned into a CNI error object on `stdout` (code 999,
/// `plugin panicked`, the panic message in `details`) and exit status 1, never a half-written
/// result. Release builds unwind (`panic = "unwind"` in the workspace profile) so that this
/// holds there too, and so that the plugins' undo lists, which are drop guards, roll a failed
/// ADD back while the panic unwinds. The panic hook still prints where it happened on stderr.
pub fn dispatch_guarded<P: Plugin>(
    plugin: &P,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    guarded(plugin, info, env, stdin, stdout, stderr)
}

fn guarded(
    plugin: &dyn Commands,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let mut out = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        unguarded(plugin, info, env, stdin, &mut out, stderr)
    }));
    let status = match outcome {
        Ok(status) => status,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            out = CniError::internal("plugin panicked")
                .with_details(what)
                .to_json_string()
                .into_bytes();
            1
        }
    };
    match stdout.write_all(&out) {
        Ok(()) => status,
        Err(e) => {
            let _ = writeln!(stderr, "failed to write to stdout: {e}");
            1
        }
    }
}

/// Testable core: injected env lookup and IO, returns the exit code. Never panics on bad input.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    unguarded(plugin, info, env, stdin, stdout, stderr)
}

fn unguarded(
    plugin: &dyn Commands,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    match dispatch_inner(plugin, info, env, stdin, stderr) {
        Ok(None) => 0,
        Ok(Some(text)) => match stdout.write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(stderr, "failed to write the result to stdout: {e}");
                1
            }
        },
        Err(e) => {
            log::debug!("returning error: {e}");
            if let Err(werr) = stdout.write_all(e.to_json_string().as_bytes()) {
                let _ = writeln!(stderr, "Error writing error JSON to stdout: {werr}");
            }
            1
        }
    }
}

/// The environment, as read through the table.
struct RawEnv {
    command: String,
    container_id: String,
    netns: String,
    ifname: String,
    args: String,
    path: String,
    netns_override: String,
}

fn read_env(env: &dyn Fn(&str) -> Option<String>) -> Result<RawEnv, CniError> {
    let get = |k: &str| env(k).unwrap_or_default();
    let command = get("CNI_COMMAND");
    let cmd = Command::parse(&command);
    let mut missing = Vec::new();
    for var in env::ENV_TABLE {
        let value = get(var.name);
        let required =
            var.name == "CNI_COMMAND" || cmd.is_some_and(|c| var.required_for.contains(&c));
        if value.is_empty() {
            if required {
                missing.push(var.name);
            }
        } else if required && let Some(validate) = var.validate {
            validate(&value)?;
        }
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    Ok(RawEnv {
        command,
        container_id: get("CNI_CONTAINERID"),
        netns: get("CNI_NETNS"),
        ifname: get("CNI_IFNAME"),
        args: get("CNI_ARGS"),
        path: get("CNI_PATH"),
        netns_override: get("CNI_NETNS_OVERRIDE"),
    })
}

fn decode_error(e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::DECODING_FAILURE,
        format!("error unmarshall network config: {e}"),
    )
}

/// Go `skel.validateConfig`: valid JSON with a valid `name`.
fn validate_config(stdin: &[u8]) -> Result<serde_json::Value, CniError> {
    let v: serde_json::Value = serde_json::from_slice(stdin).map_err(decode_error)?;
    let name = match &v {
        serde_json::Value::Null => "",
        serde_json::Value::Object(m) => match m.get("name") {
            None | Some(serde_json::Value::Null) => "",
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => return Err(decode_error("\"name\" must be a string")),
        },
        _ => return Err(decode_error("the network config must be a JSON object")),
    };
    validate_network_name(name)?;
    Ok(v)
}

/// Go `version.ConfigDecoder.Decode`: the `cniVersion` text, `""` -> 0.1.0.
fn config_version(conf: &serde_json::Value) -> Result<String, CniError> {
    match conf.get("cniVersion") {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_CONFIG_VERSION.to_string()),
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            Ok(DEFAULT_CONFIG_VERSION.to_string())
        }
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(CniError::new(
            code::DECODING_FAILURE,
            "decoding version from network config: \"cniVersion\" must be a string",
        )),
    }
}

/// Go `version.Reconciler.Check`: the config version must be listed exactly.
fn reconcile(config_version: &str, info: &PluginInfo) -> Result<SpecVersion, CniError> {
    if !info.supported.contains(&config_version) {
        let quoted: Vec<String> = info.supported.iter().map(|v| format!("{v:?}")).collect();
        return Err(
            CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!(
                    "config is {config_version:?}, plugin supports [{}]",
                    quoted.join(" ")
                ),
            ),
        );
    }
    SpecVersion::parse(config_version)
}

/// The version gate of CHECK/STATUS/GC (Go `pluginMain`): the config must be at least `floor`,
/// and the plugin must support some version >= the config's.
fn gate(
    cmd: Command,
    config_version: &str,
    floor: SpecVersion,
    info: &PluginInfo,
) -> Result<(), CniError> {
    let cv = SpecVersion::parse(config_version)?;
    if cv < floor {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {}", cmd.as_str()),
        ));
    }
    for pv in info.supported {
        if SpecVersion::parse(pv)? >= cv {
            return Ok(());
        }
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("plugin version does not allow {}", cmd.as_str()),
    ))
}

/// The test switch that forces the old-kernel paths (the `netlink` crate's
/// `compat::FALLBACKS_ENV`, the same variable): here, doing without `/proc/thread-self`.
const KERNEL_FALLBACKS_ENV: &str = "RCNI_TEST_KERNEL_FALLBACKS";

/// The netns of the calling thread: `/proc/thread-self` (3.17); on older kernels the
/// process's, which is the same in a plugin (the dispatcher runs on the main thread).
fn own_netns() -> std::io::Result<std::fs::Metadata> {
    let forced = std::env::var_os(KERNEL_FALLBACKS_ENV).is_some_and(|v| v == "1");
    match std::fs::metadata("/proc/thread-self/ns/net") {
        Ok(m) if !forced => Ok(m),
        _ => std::fs::metadata("/proc/self/ns/net"),
    }
}

/// Go `ns.CheckNetNS`: is `CNI_NETNS` the netns this process runs in? A path that does not
/// exist or cannot be inspected is left for the plugin to judge.
fn is_own_netns(netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), Ok(own)) = (std::fs::metadata(netns), own_netns()) else {
        return false;
    };
    target.dev() == own.dev() && target.ino() == own.ino()
}

/// Returns the text to print on stdout, if any.
fn dispatch_inner(
    plugin: &dyn Commands,
    info: &PluginInfo,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stderr: &mut dyn Write,
) -> Result<Option<String>, CniError> {
    let raw = match read_env(env) {
        Ok(raw) => raw,
        Err(e) => {
            let unset = env("CNI_COMMAND").unwrap_or_default().is_empty();
            if e.code == code::INVALID_ENVIRONMENT && unset && !info.about.is_empty() {
                let _ = writeln!(stderr, "{}", info.about);
                let _ = writeln!(
                    stderr,
                    "CNI protocol versions supported: {}",
                    info.supported.join(", ")
                );
                return Ok(None);
            }
            return Err(e);
        }
    };
    let cmd = Command::parse(&raw.command);
    if cmd == Some(Command::Version) {
        // Go prints version.Current(), not the version given on stdin (see the crate docs).
        let v = serde_json::json!({"cniVersion": CURRENT, "supportedVersions": info.supported});
        return Ok(Some(format!("{v}\n")));
    }

    // A config is a few hundred bytes to a few KiB: start with room for it so the read is
    // one syscall, not a run of small probes (an empty Vec makes read_to_end probe 32 bytes).
    let mut data = Vec::with_capacity(16 * 1024);
    stdin
        .read_to_end(&mut data)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}")))?;
    let value = validate_config(&data)?;

    let Some(cmd) = cmd else {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND: {}", raw.command),
        ));
    };
    let cv = config_version(&value)?;
    match cmd {
        Command::Check => gate(cmd, &cv, SpecVersion::V0_4_0, info)?,
        Command::Status | Command::Gc => gate(cmd, &cv, SpecVersion::V1_1_0, info)?,
        _ => {}
    }
    let version = reconcile(&cv, info)?;
    let conf: NetConf = serde_json::from_value(value).map_err(decode_error)?;

    let override_netns =
        raw.netns_override == "1" || raw.netns_override.eq_ignore_ascii_case("true");
    if matches!(cmd, Command::Add | Command::Del | Command::Check)
        && !raw.netns.is_empty()
        && !override_netns
        && is_own_netns(&raw.netns)
    {
        return Err(CniError::new(
            code::INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        ));
    }

    let args = CmdArgs {
        command: cmd,
        container_id: raw.container_id,
        netns: (!raw.netns.is_empty()).then(|| PathBuf::from(&raw.netns)),
        ifname: raw.ifname,
        args: CniArgs::parse_lenient(&raw.args),
        raw_args: raw.args,
        path: raw
            .path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        stdin: data,
        conf,
        version,
    };
    log::debug!(
        "{} container={} ifname={} netns={:?}",
        cmd.as_str(),
        args.container_id,
        args.ifname,
        args.netns
    );

    match cmd {
        Command::Add => {
            let value = match plugin.add(&args)? {
                AddOutput::Result(r) => r.to_json(&args.version.as_str())?,
                AddOutput::Raw(v) => v,
            };
            Ok(Some(to_go_json(&value)))
        }
        Command::Del => plugin.del(&args).map(|()| None),
        Command::Check => plugin.check(&args).map(|()| None),
        Command::Status => plugin.status(&args).map(|()| None),
        Command::Gc => plugin.gc(&args).map(|()| None),
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests;
