//! The plugin's error type and its mapping to CNI error codes.
//!
//! Every failure carries what we were doing ("failed to create bridge \"cni0\"") and the
//! typed cause. The CNI code is chosen only at the edge ([`From<Error> for CniError`]):
//! config problems are 7, I/O failures 5, kernel/netlink failures 999 (what the Go plugin
//! reports for them, through skel's `ErrInternal` wrapping), and errors of delegated plugins
//! keep the delegate's own code.

use cni::{CniError, code};

/// Result alias of this plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the bridge plugin can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network configuration (or CNI_ARGS) is invalid.
    #[error("{0}")]
    Config(String),

    /// A netlink, netns or sysctl operation failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What we were doing.
        context: String,
        /// The kernel's answer (keeps its errno).
        #[source]
        source: netlink::Error,
    },

    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Programming the masquerade rules failed.
    #[error("{context}: {source}")]
    Firewall {
        /// What we were doing.
        context: String,
        /// The firewall crate's error.
        #[source]
        source: firewall::Error,
    },

    /// A delegated (IPAM) plugin failed, or the cni crate reported an error: the code is kept.
    #[error("{0}")]
    Cni(CniError),

    /// A state the plugin cannot work with (address conflict, CHECK mismatch, port state...).
    #[error("{0}")]
    State(String),

    /// Several independent cleanup steps failed (DEL keeps going and reports them all).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<Error>),
}

impl Error {
    /// The CNI error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::Config(_) => code::INVALID_NETWORK_CONFIG,
            Error::Io { .. } => code::IO_FAILURE,
            Error::Firewall { source, .. } => match source {
                firewall::Error::UnknownBackend(_) => code::INVALID_NETWORK_CONFIG,
                _ => code::INTERNAL,
            },
            Error::Netlink { .. } | Error::State(_) => code::INTERNAL,
            Error::Cni(e) => e.code,
            Error::Multiple(v) => v.first().map_or(code::INTERNAL, Error::code),
        }
    }

    /// Maps an error of the firewall crate's spoof check (`what`: "setup" or "teardown"):
    /// an unsafe attachment id is a config error (7), anything the kernel refused an
    /// internal one (999), with the kernel's reason in the message.
    pub fn spoofcheck(what: &str, e: firewall::Error) -> Error {
        match e {
            firewall::Error::InvalidSpoofCheckId(_) => Error::Config(e.to_string()),
            other => Error::Firewall {
                context: format!("failed to {what} spoof-check"),
                source: other,
            },
        }
    }

    /// Turns a list of errors into a result: none → `Ok`, one → itself, more → `Multiple`.
    pub fn collect(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }
}

impl From<CniError> for Error {
    fn from(e: CniError) -> Self {
        Error::Cni(e)
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        match e {
            // Keep the delegate's code, message and details untouched.
            Error::Cni(inner) => inner,
            other => CniError::new(other.code(), other.to_string()),
        }
    }
}

/// Adds "what we were doing" to an error: of the crates we build on (wrapped), or our own
/// (prepended to its message, keeping its type and code). The one way errors get context.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| {
            let what = context.into();
            match e {
                Error::Netlink { context, source } => Error::Netlink {
                    context: format!("{what}: {context}"),
                    source,
                },
                Error::State(m) => Error::State(format!("{what}: {m}")),
                other => other,
            }
        })
    }
}

impl<T> Context<T> for std::result::Result<T, netlink::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Netlink {
            context: context.into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, firewall::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Firewall {
            context: context.into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Error::Config("x".into()).code(), 7);
        assert_eq!(Error::State("x".into()).code(), 999);
        let delegate = CniError::new(11, "busy").with_details("d");
        let back: CniError = Error::from(delegate.clone()).into();
        assert_eq!(back, delegate);
        let multi = Error::Multiple(vec![Error::Config("a".into()), Error::State("b".into())]);
        assert_eq!(multi.code(), 7);
        assert_eq!(multi.to_string(), "a; b");
    }

    #[test]
    fn spoofcheck_errors_keep_their_codes() {
        let invalid =
            Error::spoofcheck("setup", firewall::Error::InvalidSpoofCheckId("a b".into()));
        assert_eq!(invalid.code(), 7);
        assert!(
            invalid
                .to_string()
                .starts_with("macspoofchk: container ID and ifname")
        );
        let refused = Error::spoofcheck(
            "teardown",
            firewall::Error::Refused(vec![firewall::Refused {
                index: Some(0),
                what: "delete chain bridge nat x".into(),
                errno: 16,
                detail: None,
            }]),
        );
        assert_eq!(refused.code(), 999);
        let msg = refused.to_string();
        assert!(
            msg.starts_with("failed to teardown spoof-check: nftables: delete chain bridge nat x: Device or resource busy"),
            "{msg}"
        );
    }
}
