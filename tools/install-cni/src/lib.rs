//! install-cni: puts the rcni plugins and a CNI config onto a node, atomically.
//!
//! kube-flannel's install containers run `cp -f /flannel /opt/cni/bin/flannel` and
//! `cp -f /etc/kube-flannel/cni-conf.json /etc/cni/net.d/10-flannel.conflist`. `cp -f`
//! truncates and rewrites in place: a kubelet that reads the config or execs the plugin
//! at that moment sees half a file, and a bad ConfigMap replaces a working config. Here
//! every file goes through [`install::install_file`] (temp file in the same directory,
//! fsync, rename, fsync of the directory), the config is validated first
//! ([`validate::validate`]), and binaries land before the config, so the runtime never
//! sees a config whose plugins are not there yet.
//!
//! The plugins are one multi-call binary ([`Suite`]): it is installed once, then each
//! plugin's name becomes a symlink to it ([`install::install_link`], renamed into place
//! like a file), replacing whatever held the name (an older per-plugin copy, the
//! reference's binary). Symlinks, not hard links or copies: one rename of the binary
//! switches every name to the new version at once; `ls -l` tells our names from a
//! reference plugin installed beside them; the runtimes' lookup (libcni `FindInPath`,
//! `os.Stat`) follows them; and whoever replaces a name by rename (`install`, `tar`,
//! dpkg, this tool) replaces only that name. (Writing *through* a name in place, as
//! `cp` onto an existing file does, would rewrite the binary behind every name: the
//! same is true of hard links, and copies cost the size of the binary per name.)

pub mod args;
mod error;
pub mod install;
pub mod validate;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use args::USAGE;
pub use args::{Action, Options};
pub use error::Error;
use install::{BIN_MODE, CONF_MODE, Outcome};
use nix::sys::signal::{SigSet, Signal};

/// What the multi-call binary is, as its `main` hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Suite<'a> {
    /// Its file name in the source and bin directories (`rcni`).
    pub binary: &'a str,
    /// The names a node runs it under, in install order: the default of `--plugins`, and
    /// the only names `--plugins` accepts.
    pub names: &'a [&'a str],
}

/// The command: `argv` without the program name, the `INSTALL_CNI_*` variables from the
/// process environment; the exit code (0 installed, 1 failed, 2 bad usage).
pub fn main(argv: &[String], suite: &Suite<'_>) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    match real_main(argv, &env, suite) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("install-cni: error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn real_main(
    argv: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    suite: &Suite<'_>,
) -> Result<(), Error> {
    let opts = match args::parse(argv, env)? {
        Action::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Action::Version => {
            println!("install-cni rcni v{}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Action::Install(o) => o,
    };
    // Block the stop signals before installing, so a SIGTERM that arrives mid-install
    // waits for the install to finish, and so we can wait for them below. This also works
    // as a container's PID 1, where the kernel ignores a SIGTERM left at its default action.
    let stop = if opts.sleep {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block().map_err(Error::Signal)?;
        Some(set)
    } else {
        None
    };
    run(&opts, suite, &mut std::io::stderr())?;
    if let Some(set) = stop {
        eprintln!("install-cni: done; sleeping until SIGTERM");
        let sig = set.wait().map_err(Error::Signal)?;
        eprintln!("install-cni: got {sig}, exiting");
    }
    Ok(())
}

/// Installs what `o` asks for, writing one line per file to `log`.
pub fn run(o: &Options, suite: &Suite<'_>, log: &mut dyn Write) -> Result<(), Error> {
    // 1. Read and check everything first: a failure here installs nothing.
    let conf = match &o.conf_file {
        Some(path) => {
            let bytes = fs::read(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let summary = validate::validate(&bytes, &o.conf_name).map_err(|reason| {
                Error::InvalidConfig {
                    path: path.clone(),
                    reason,
                }
            })?;
            Some((bytes, summary))
        }
        None => None,
    };
    let names: Vec<&str> = match &o.plugins {
        None => suite.names.to_vec(),
        Some(list) => list.iter().map(String::as_str).collect(),
    };
    if let Some(unknown) = names.iter().find(|n| !suite.names.contains(n)) {
        return Err(Error::Usage(format!(
            "--plugins: {} holds no {unknown:?} (it holds {})",
            suite.binary,
            suite.names.join(", ")
        )));
    }
    let binary = if names.is_empty() {
        None
    } else {
        Some(read_binary(&source_dir(o)?, suite.binary)?)
    };

    // 2. The binary, its names, then the config.
    if let Some(bytes) = &binary {
        install::remove_stale_temps(&o.bin_dir);
        let outcome = install::install_file(bytes, &o.bin_dir, suite.binary, BIN_MODE)?;
        report(log, &o.bin_dir.join(suite.binary), outcome, BIN_MODE);
        for name in &names {
            let outcome = install::install_link(&o.bin_dir, name, suite.binary)?;
            report_link(log, &o.bin_dir.join(name), suite.binary, outcome);
        }
        install::sync_bin_dir(&o.bin_dir)?;
    }
    if let Some((bytes, summary)) = &conf {
        install::remove_stale_temps(&o.conf_dir);
        let outcome = install::install_file(bytes, &o.conf_dir, &o.conf_name, CONF_MODE)?;
        report(log, &o.conf_dir.join(&o.conf_name), outcome, CONF_MODE);
        // The runtime will look the plugin types up in the bin dir: say what is missing
        // (e.g. `bandwidth`, which comes from containernetworking-plugins).
        for ty in &summary.plugin_types {
            if !o.bin_dir.join(ty).is_file() {
                let _ = writeln!(
                    log,
                    "install-cni: warning: network {:?} uses plugin {ty:?}, which is not in {} \
                     (install it there, e.g. from containernetworking-plugins)",
                    summary.name,
                    o.bin_dir.display()
                );
            }
        }
    }
    Ok(())
}

fn report_link(log: &mut dyn Write, path: &Path, target: &str, outcome: Outcome) {
    let _ = match outcome {
        Outcome::Installed => {
            writeln!(log, "install-cni: installed {} -> {target}", path.display())
        }
        Outcome::Unchanged => writeln!(log, "install-cni: {} is up to date", path.display()),
    };
}

fn report(log: &mut dyn Write, path: &Path, outcome: Outcome, mode: u32) {
    let _ = match outcome {
        Outcome::Installed => writeln!(
            log,
            "install-cni: installed {} ({mode:04o})",
            path.display()
        ),
        Outcome::Unchanged => writeln!(log, "install-cni: {} is up to date", path.display()),
    };
}

/// `--src-dir`, else the directory this executable lives in (the image ships the binary
/// under its own name and install-cni's).
fn source_dir(o: &Options) -> Result<PathBuf, Error> {
    if let Some(d) = &o.src_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().map_err(Error::SelfDir)?;
    exe.parent().map(Path::to_path_buf).ok_or_else(|| {
        Error::SelfDir(std::io::Error::other(format!(
            "{} has no parent directory",
            exe.display()
        )))
    })
}

/// The binary from the source directory: a non-empty regular file.
fn read_binary(src_dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    let path = src_dir.join(name);
    let meta = fs::metadata(&path).map_err(|source| Error::MissingBinary {
        name: name.to_owned(),
        path: path.clone(),
        source,
    })?;
    let invalid = |what: &str| Error::Read {
        path: path.clone(),
        source: std::io::Error::other(what.to_owned()),
    };
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    let bytes = fs::read(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    // A zero-byte "binary" is what an interrupted copy leaves behind: never spread it.
    if bytes.is_empty() {
        return Err(invalid("the file is empty"));
    }
    Ok(bytes)
}
