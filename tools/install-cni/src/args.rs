//! Command line parsing (hand-written: a handful of flags).

use std::path::PathBuf;

use crate::Error;

/// Where the binaries go by default (kubelet's and containerd's `CNI_PATH`).
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Where the runtime reads CNI configs.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// The file name kube-flannel installs.
pub const DEFAULT_CONF_NAME: &str = "10-flannel.conflist";
/// Where kube-flannel mounts its ConfigMap's `cni-conf.json`.
pub const DEFAULT_CONF_FILE: &str = "/etc/kube-flannel/cni-conf.json";
pub const USAGE: &str = "\
usage: install-cni [options]

Installs the CNI plugins and a CNI config onto a node, as kube-flannel's
install-cni container does (cp -f /flannel /opt/cni/bin/flannel; cp -f
/etc/kube-flannel/cni-conf.json /etc/cni/net.d/10-flannel.conflist), but safely.
The plugins are one binary, rcni, installed once, and a symlink to it under each
plugin's name (bridge -> rcni, ...), which replaces whatever held that name (an
older per-plugin copy, the reference's binary). Every file and link is made
under a temporary name in its target directory (files fsynced) and renamed into
place, so a kubelet never execs half a binary or reads half a config. The config
is validated first; a bad one is refused and nothing is installed. What is
already in place is left alone. Binaries are installed before the config.

options (each also read from the environment variable shown; flags win):
  --src-dir DIR     where the rcni binary is            [INSTALL_CNI_SRC_DIR]
                    (default: the directory of this executable)
  --bin-dir DIR     where to install it                 [INSTALL_CNI_BIN_DIR]
                    (default: /opt/cni/bin)
  --plugins LIST    comma-separated names to install    [INSTALL_CNI_PLUGINS]
                    (default: every plugin, and rcni-doctor; \"\" = none)
  --conf-file FILE  the CNI config to install          [INSTALL_CNI_CONF_FILE]
                    (default: /etc/kube-flannel/cni-conf.json)
  --conf-dir DIR    where to install it                 [INSTALL_CNI_CONF_DIR]
                    (default: /etc/cni/net.d)
  --conf-name NAME  its file name there                 [INSTALL_CNI_CONF_NAME]
                    (default: 10-flannel.conflist)
  --no-conf         install the binaries only           [INSTALL_CNI_NO_CONF=true]
                    (the last of --conf-file/--no-conf wins)
  --sleep           after installing, wait until SIGTERM/SIGINT, then exit 0
                    (for a DaemonSet container)         [INSTALL_CNI_SLEEP=true]
  -h, --help        this text
  -V, --version     the version

exit codes: 0 installed (or already up to date), 1 install failed, 2 bad usage";

/// A parsed, complete set of install options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// None: the directory of the running executable.
    pub src_dir: Option<PathBuf>,
    pub bin_dir: PathBuf,
    /// The names to install; None: every name the binary holds for a node.
    pub plugins: Option<Vec<String>>,
    /// None: `--no-conf`.
    pub conf_file: Option<PathBuf>,
    pub conf_dir: PathBuf,
    pub conf_name: String,
    pub sleep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            src_dir: None,
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
            plugins: None,
            conf_file: Some(PathBuf::from(DEFAULT_CONF_FILE)),
            conf_dir: PathBuf::from(DEFAULT_CONF_DIR),
            conf_name: DEFAULT_CONF_NAME.to_owned(),
            sleep: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Install(Options),
    Help,
    Version,
}

/// Parses the arguments (without argv\[0\]); `env` looks up the `INSTALL_CNI_*` variables.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Action, Error> {
    let mut o = Options::default();
    // Environment first, flags override.
    if let Some(v) = env("INSTALL_CNI_SRC_DIR").filter(|v| !v.is_empty()) {
        o.src_dir = Some(PathBuf::from(v));
    }
    if let Some(v) = env("INSTALL_CNI_BIN_DIR").filter(|v| !v.is_empty()) {
        o.bin_dir = PathBuf::from(v);
    }
    if let Some(v) = env("INSTALL_CNI_PLUGINS") {
        o.plugins = Some(plugin_list(&v)?);
    }
    if let Some(v) = env("INSTALL_CNI_CONF_FILE").filter(|v| !v.is_empty()) {
        o.conf_file = Some(PathBuf::from(v));
    }
    if let Some(v) = env("INSTALL_CNI_CONF_DIR").filter(|v| !v.is_empty()) {
        o.conf_dir = PathBuf::from(v);
    }
    if let Some(v) = env("INSTALL_CNI_CONF_NAME").filter(|v| !v.is_empty()) {
        o.conf_name = v;
    }
    if env_flag(env, "INSTALL_CNI_NO_CONF")? {
        o.conf_file = None;
    }
    o.sleep = env_flag(env, "INSTALL_CNI_SLEEP")?;

    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, Error> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(Error::Usage(format!("{name} needs a value"))),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--src-dir" => o.src_dir = Some(PathBuf::from(nonempty(flag, value(flag)?)?)),
            "--bin-dir" => o.bin_dir = PathBuf::from(nonempty(flag, value(flag)?)?),
            "--plugins" => o.plugins = Some(plugin_list(&value(flag)?)?),
            "--conf-file" => o.conf_file = Some(PathBuf::from(nonempty(flag, value(flag)?)?)),
            "--conf-dir" => o.conf_dir = PathBuf::from(nonempty(flag, value(flag)?)?),
            "--conf-name" => o.conf_name = nonempty(flag, value(flag)?)?,
            "--no-conf" | "--sleep" if inline.is_some() => {
                return Err(Error::Usage(format!("{flag} takes no value")));
            }
            "--no-conf" => o.conf_file = None,
            "--sleep" => o.sleep = true,
            other => return Err(Error::Usage(format!("unknown argument {other:?}"))),
        }
    }
    check_file_name("--conf-name", &o.conf_name)?;
    Ok(Action::Install(o))
}

fn nonempty(flag: &str, v: String) -> Result<String, Error> {
    if v.is_empty() {
        Err(Error::Usage(format!("{flag} must not be empty")))
    } else {
        Ok(v)
    }
}

fn env_flag(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<bool, Error> {
    match env(key).as_deref() {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(Error::Usage(format!(
            "{key}={other:?}: expected true or false"
        ))),
    }
}

/// A comma-separated list of plugin names; "" is the empty list.
fn plugin_list(v: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        check_file_name("--plugins", name)?;
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// A bare file name: no directory part, not hidden (our temporary files are hidden).
fn check_file_name(flag: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
        return Err(Error::Usage(format!(
            "{flag}: {name:?} is not a plain file name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn opts(a: &[&str]) -> Options {
        match parse(&argv(a), &no_env).expect("parse") {
            Action::Install(o) => o,
            other => panic!("not an install: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_kube_flannels() {
        let o = opts(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(o.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(o.conf_name, "10-flannel.conflist");
        assert_eq!(
            o.conf_file,
            Some(PathBuf::from("/etc/kube-flannel/cni-conf.json"))
        );
        assert_eq!(o.plugins, None, "every name the binary holds");
        assert_eq!(o.src_dir, None);
        assert!(!o.sleep);
    }

    #[test]
    fn flags_with_space_or_equals() {
        let o = opts(&[
            "--src-dir",
            "/s",
            "--bin-dir=/b",
            "--plugins",
            "flannel, bridge,,flannel",
            "--conf-file=/c.json",
            "--conf-dir",
            "/d",
            "--conf-name=99-x.conf",
            "--sleep",
        ]);
        assert_eq!(o.src_dir, Some(PathBuf::from("/s")));
        assert_eq!(o.bin_dir, PathBuf::from("/b"));
        assert_eq!(o.plugins, Some(vec!["flannel".into(), "bridge".into()]));
        assert_eq!(o.conf_file, Some(PathBuf::from("/c.json")));
        assert_eq!(o.conf_dir, PathBuf::from("/d"));
        assert_eq!(o.conf_name, "99-x.conf");
        assert!(o.sleep);
    }

    #[test]
    fn empty_plugin_list_and_no_conf() {
        let o = opts(&["--plugins", "", "--no-conf"]);
        assert_eq!(o.plugins, Some(vec![]));
        assert_eq!(o.conf_file, None);
        // The last of --conf-file / --no-conf wins.
        assert_eq!(opts(&["--conf-file", "/x", "--no-conf"]).conf_file, None);
        let o = opts(&["--no-conf", "--conf-file", "/x"]);
        assert_eq!(o.conf_file, Some(PathBuf::from("/x")));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(
            parse(&argv(&["--help"]), &no_env).expect("help"),
            Action::Help
        );
        assert_eq!(
            parse(&argv(&["-V"]), &no_env).expect("version"),
            Action::Version
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--bogus"][..],
            &["--bin-dir"],
            &["--bin-dir", ""],
            &["--plugins", "../evil"],
            &["--plugins", ".hidden"],
            &["--conf-name", "a/b.conf"],
            &["--sleep=yes"],
        ] {
            let err = parse(&argv(bad), &no_env).expect_err("should fail");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn environment_then_flags() {
        let env = |k: &str| -> Option<String> {
            match k {
                "INSTALL_CNI_BIN_DIR" => Some("/env-bin".into()),
                "INSTALL_CNI_CONF_DIR" => Some("/env-conf".into()),
                "INSTALL_CNI_PLUGINS" => Some("flannel".into()),
                "INSTALL_CNI_SLEEP" => Some("true".into()),
                _ => None,
            }
        };
        let Action::Install(o) = parse(&argv(&["--conf-dir", "/flag"]), &env).expect("parse")
        else {
            panic!("not an install");
        };
        assert_eq!(o.bin_dir, PathBuf::from("/env-bin"));
        assert_eq!(o.conf_dir, PathBuf::from("/flag"));
        assert_eq!(o.plugins, Some(vec!["flannel".into()]));
        assert!(o.sleep);
        let bad = |k: &str| (k == "INSTALL_CNI_SLEEP").then(|| "maybe".to_owned());
        assert!(parse(&[], &bad).is_err());
    }
}
