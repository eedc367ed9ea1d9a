//! The one error type of install-cni.

use std::io;
use std::path::PathBuf;

/// Everything that stops an install. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line (exit code 2).
    #[error("{0} (see --help)")]
    Usage(String),

    /// The executable's own directory, the default `--src-dir`, is unknown.
    #[error("cannot find the directory of the install-cni executable (pass --src-dir): {0}")]
    SelfDir(#[source] io::Error),

    /// The binary to install is missing from the source directory.
    #[error("{name:?} not found: {path} ({source}); pass --src-dir, or --plugins=\"\"")]
    MissingBinary {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A source file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The CNI config was refused; nothing was installed.
    #[error("refusing to install {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },

    /// One step of the atomic write failed; the target was left as it was.
    #[error("cannot install {target}: {step}: {source}")]
    Install {
        target: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// `--sleep`: waiting for the stop signal failed.
    #[error("cannot wait for SIGTERM: {0}")]
    Signal(#[source] nix::Error),
}

impl Error {
    /// The process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}
