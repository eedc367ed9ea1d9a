//! The crate's error type.

use std::fmt;

/// Everything that can go wrong while programming masquerade or spoof-check rules.
///
/// The bridge plugin maps these to CNI error codes (`UnknownBackend` and
/// `InvalidSpoofCheckId` are config errors, the rest are internal/I-O failures).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ipMasqBackend` holds a value we do not know (message as the Go plugin's).
    #[error("unknown ipmasq backend {0:?}")]
    UnknownBackend(String),

    /// The spoof-check attachment id (`<cid>-<ifname>`) holds characters that are not safe
    /// in an nft chain name.
    #[error(
        "macspoofchk: container ID and ifname {0:?} must only contain letters, digits, '_', '-' and '.'"
    )]
    InvalidSpoofCheckId(String),

    /// The tool is neither on `PATH` nor in `/usr/sbin` or `/sbin`.
    #[error("{tool} not found in PATH, /usr/sbin or /sbin")]
    ToolNotFound {
        /// Binary name, e.g. `nft`.
        tool: String,
    },

    /// The tool exists but could not be started (or its pipes failed).
    #[error("failed to run {tool}: {source}")]
    Spawn {
        /// Binary name.
        tool: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The tool ran and exited with a failure status.
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Failed {
        /// Binary name.
        tool: String,
        /// Arguments, space-joined.
        args: String,
        /// Exit status as text (`exit status: 1`, `signal: 9`).
        status: String,
        /// Trimmed stderr of the tool (nft/iptables-restore name the failing line there).
        stderr: String,
    },

    /// The tool's output could not be understood.
    #[error("cannot parse output of {tool}: {reason}")]
    Parse {
        /// Binary name.
        tool: String,
        /// What was wrong.
        reason: String,
    },

    /// CHECK found an attachment's rules missing or different (the text says what).
    #[error("{0}")]
    Check(String),

    /// Several independent steps failed (e.g. both backends during `teardown_all`).
    #[error("{}", ErrorList(.0))]
    Multiple(Vec<Error>),
}

struct ErrorList<'a>(&'a [Error]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Error {
    /// True when this error only says that a binary is missing.
    pub fn is_tool_not_found(&self) -> bool {
        match self {
            Error::ToolNotFound { .. } => true,
            Error::Multiple(v) => !v.is_empty() && v.iter().all(Error::is_tool_not_found),
            _ => false,
        }
    }

    /// Turn a list of errors into a result: none → `Ok`, one → that error, more → `Multiple`.
    /// Nested `Multiple`s are flattened.
    pub fn collect(errors: Vec<Error>) -> Result<(), Error> {
        let mut flat = Vec::with_capacity(errors.len());
        for e in errors {
            match e {
                Error::Multiple(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(Error::Multiple(flat)),
        }
    }

    /// Drop `ToolNotFound` errors (nested ones too); `None` when nothing else is left.
    pub(crate) fn without_missing_tools(self) -> Option<Error> {
        match self {
            Error::ToolNotFound { .. } => None,
            Error::Multiple(v) => {
                let rest: Vec<Error> = v
                    .into_iter()
                    .filter_map(Error::without_missing_tools)
                    .collect();
                Error::collect(rest).err()
            }
            other => Some(other),
        }
    }
}
