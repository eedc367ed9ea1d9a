//! The plugin's error type and its CNI codes: config problems are 7, undecodable input 6,
//! firewall and kernel failures 999 (what the Go plugin reports, through skel's
//! `ErrInternal`); errors of the cni crate keep their code.

use cni::{CniError, code};

/// Result alias of this plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the portmap plugin can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network configuration is invalid.
    #[error("{0}")]
    Config(String),

    /// The configuration is not the JSON we expect.
    #[error("{0}")]
    Decode(String),

    /// Programming or checking the rules failed.
    #[error("{context}: {source}")]
    Firewall {
        /// What we were doing.
        context: String,
        /// The firewall crate's error.
        #[source]
        source: firewall::Error,
    },

    /// A netlink or sysctl operation failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What we were doing.
        context: String,
        /// The kernel's answer.
        #[source]
        source: netlink::Error,
    },

    /// An error of the cni crate (prevResult parsing, GC input): its code is kept.
    #[error("{0}")]
    Cni(CniError),
}

impl Error {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            Error::Config(_) => code::INVALID_NETWORK_CONFIG,
            Error::Decode(_) => code::DECODING_FAILURE,
            Error::Firewall { .. } | Error::Netlink { .. } => code::INTERNAL,
            Error::Cni(e) => e.code,
        }
    }

    /// Prefix the message (the reference wraps ADD/DEL config errors in
    /// `failed to parse config: ..`), keeping the code.
    pub fn prefixed(self, what: &str) -> Error {
        match self {
            Error::Config(m) => Error::Config(format!("{what}: {m}")),
            Error::Decode(m) => Error::Decode(format!("{what}: {m}")),
            Error::Cni(e) => Error::Cni(e.context(what)),
            other => other,
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
            Error::Cni(inner) => inner,
            other => CniError::new(other.code(), other.to_string()),
        }
    }
}

/// Adds "what we were doing" to the errors of the crates we build on.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, firewall::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Firewall {
            context: context.into(),
            source,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Error::Config("x".into()).code(), 7);
        assert_eq!(Error::Decode("x".into()).code(), 6);
        let f: Result<()> = Err(firewall::Error::Check("gone".into())).context("check");
        let f = f.unwrap_err();
        assert_eq!(f.code(), 999);
        assert_eq!(f.to_string(), "check: gone");
        let c: CniError = Error::Config("bad".into())
            .prefixed("failed to parse config")
            .into();
        assert_eq!((c.code, c.msg.as_str()), (7, "failed to parse config: bad"));
        let kept = CniError::new(1, "v");
        assert_eq!(CniError::from(Error::from(kept.clone())), kept);
    }
}
