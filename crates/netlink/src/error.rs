//! The crate's error type. Kernel errors keep their errno so that callers can tell
//! "already exists" and "not found" apart from real failures.

use std::io;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of netlink, netns and sysctl operations.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The kernel answered a request with a negative errno (NLMSG_ERROR).
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*.errno), detail_suffix(.detail))]
    Kernel {
        /// What we asked for, e.g. `create bridge "cni0"`.
        op: String,
        /// Positive errno value.
        errno: i32,
        /// Extended ACK message of the kernel, if it sent one.
        detail: Option<String>,
    },
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: String,
        /// The underlying error (keeps the errno).
        #[source]
        source: io::Error,
    },
    /// The kernel sent something we could not decode or did not expect.
    #[error("netlink protocol error: {0}")]
    Protocol(String),
    /// A dump kept being interrupted by concurrent changes (NLM_F_DUMP_INTR).
    #[error("{op}: dump interrupted {attempts} times in a row")]
    DumpInterrupted {
        /// What we were dumping.
        op: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An nf_tables batch was refused (nothing of it was applied); one entry per refused
    /// message.
    #[error("nf_tables transaction refused: {}", failure_list(.failures))]
    Batch {
        /// The refused messages, in the order the kernel reported them.
        failures: Vec<crate::nfnetlink::MessageError>,
    },
    /// A MAC address string could not be parsed.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// The kernel accepted a request but ignored a feature of it that it does not know.
    #[error("{0}")]
    Unsupported(String),
}

/// Formats the kernel's extended-ACK text as ` (text)`.
fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

fn failure_list(failures: &[crate::nfnetlink::MessageError]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl Error {
    /// Wraps an io error with what we were doing.
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    /// Sets the operation description of a kernel/io error (requests are built generically,
    /// the typed methods know what they were doing).
    pub(crate) fn context(self, what: impl Into<String>) -> Self {
        match self {
            Error::Kernel { errno, detail, .. } => Error::Kernel {
                op: what.into(),
                errno,
                detail,
            },
            Error::Io { source, .. } => Error::Io {
                op: what.into(),
                source,
            },
            Error::DumpInterrupted { attempts, .. } => Error::DumpInterrupted {
                op: what.into(),
                attempts,
            },
            other => other,
        }
    }

    /// The errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            Error::DumpInterrupted { .. } => Some(libc::EINTR),
            Error::Batch { failures } => failures.first().map(|f| f.errno),
            _ => None,
        }
    }

    /// True for EEXIST (link/address/route already present).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True for ENOENT, ENODEV and ESRCH: the kernel uses all three for "no such object"
    /// (ENODEV for links, EADDRNOTAVAIL is *not* included: it means a missing address,
    /// which callers check for explicitly with [`Error::errno`]).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = Error::Kernel {
            op: "x".into(),
            errno: libc::EEXIST,
            detail: None,
        };
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.errno(), Some(libc::EEXIST));
        for errno in [libc::ENOENT, libc::ENODEV, libc::ESRCH] {
            let e = Error::io("y", io::Error::from_raw_os_error(errno));
            assert!(e.is_not_found(), "{errno}");
        }
        assert_eq!(Error::InvalidMac("z".into()).errno(), None);
    }

    #[test]
    fn display_has_op_and_strerror() {
        let e = Error::Kernel {
            op: String::new(),
            errno: libc::ENODEV,
            detail: None,
        }
        .context("delete link 7");
        assert_eq!(e.to_string(), "delete link 7: No such device (os error 19)");
    }
}
