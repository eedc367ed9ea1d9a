//! Error types of the store, the range validation and the allocator.
//!
//! Messages are the reference plugin's, word for word: runtimes, tests and
//! people grep logs for them.

use std::net::IpAddr;
use std::path::PathBuf;

/// An I/O failure of the disk store.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct StoreError {
    /// What was attempted (`open`, `create`, `read`, `write`, `lock`, ...).
    pub op: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl StoreError {
    /// Builds a closure for `map_err` that records `op` on `path`.
    pub fn at(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError { op, path, source }
    }
}

/// An invalid range or range set (the config is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Wraps any message.
    pub fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }
}

/// Why one range set could not hand out an address.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The requested address is the range's gateway.
    #[error("requested ip {0} is subnet's gateway")]
    RequestedGateway(IpAddr),
    /// The requested address is outside every range of the set.
    #[error("{ip} not in range set {set}")]
    NotInRangeSet {
        /// Requested address.
        ip: IpAddr,
        /// The set, as `start-end[,start-end]`.
        set: String,
    },
    /// The requested address is already reserved.
    #[error("requested IP address {ip} is not available in range set {set}")]
    Unavailable {
        /// Requested address.
        ip: IpAddr,
        /// The set, as `start-end[,start-end]`.
        set: String,
    },
    /// The attachment already owns an address of this set.
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate {
        /// The address it owns.
        ip: IpAddr,
        /// The container ID.
        id: String,
    },
    /// Every address of the set is taken.
    #[error("no IP addresses available in range set: {set}")]
    Exhausted {
        /// The set, as `start-end[,start-end]`.
        set: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
