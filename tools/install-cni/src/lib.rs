//! install-cni: puts the rcni plugin binaries and a CNI config onto a node, atomically.
//!
//! kube-flannel's install containers run `cp -f /flannel /opt/cni/bin/flannel` and
//! `cp -f /etc/kube-flannel/cni-conf.json /etc/cni/net.d/10-flannel.conflist`. `cp -f`
//! truncates and rewrites in place: a kubelet that reads the config or execs the plugin
//! at that moment sees half a file, and a bad ConfigMap replaces a working config. Here
//! every file goes through [`install::install_file`] (temp file in the same directory,
//! fsync, rename, fsync of the directory), the config is validated first
//! ([`validate::validate`]), and binaries land before the config, so the runtime never
//! sees a config whose plugins are not there yet.

pub mod args;
mod error;
pub mod install;
pub mod validate;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use args::{Action, Options};
pub use error::Error;
use install::{BIN_MODE, CONF_MODE, Outcome};

/// Installs what `o` asks for, writing one line per file to `log`.
pub fn run(o: &Options, log: &mut dyn Write) -> Result<(), Error> {
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
    let binaries = if o.plugins.is_empty() {
        Vec::new()
    } else {
        let src_dir = source_dir(o)?;
        o.plugins
            .iter()
            .map(|name| read_plugin(&src_dir, name).map(|b| (name, b)))
            .collect::<Result<Vec<_>, _>>()?
    };

    // 2. Binaries, then the config.
    if !binaries.is_empty() {
        install::remove_stale_temps(&o.bin_dir);
    }
    for (name, bytes) in &binaries {
        let outcome = install::install_file(bytes, &o.bin_dir, name, BIN_MODE)?;
        report(log, &o.bin_dir.join(name), outcome, BIN_MODE);
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

/// `--src-dir`, else the directory this executable lives in (the image ships install-cni
/// next to the plugins).
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

/// A plugin binary from the source directory: a non-empty regular file.
fn read_plugin(src_dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    let path = src_dir.join(name);
    let meta = fs::metadata(&path).map_err(|source| Error::MissingPlugin {
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
