//! The plugin's errors and their CNI error codes.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{CniError, code};
use ipam_store::{AllocError, ConfigError, StoreError};

/// Everything `host-local` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Already a CNI error (`CNI_ARGS` checks of the `cni` crate).
    #[error(transparent)]
    Cni(#[from] CniError),
    /// Invalid configuration (reference messages).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A range set could not hand out an address.
    #[error("failed to allocate for range {idx}: {source}")]
    Alloc {
        /// Range set index.
        idx: usize,
        /// Why.
        #[source]
        source: AllocError,
    },
    /// Requested addresses that no range set holds.
    #[error("failed to allocate all requested IPs:{}", .0.iter().map(|ip| format!(" {ip}")).collect::<String>())]
    RequestedLeftover(Vec<IpAddr>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// DEL failures of several range sets, joined with `;`.
    #[error("{}", .0.join(";"))]
    Release(Vec<String>),
    /// CHECK found no reservation of the attachment.
    #[error("host-local: Failed to find address added by container {0}")]
    NotFound(String),
    /// `resolvConf` could not be read.
    #[error("open {}: {source}", path.display())]
    ResolvConf {
        /// The configured file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// STATUS: the store cannot be used.
    #[error("host-local store {} is not usable", dir.display())]
    Unavailable {
        /// `<dataDir>/<network>`.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
}

impl From<PluginError> for CniError {
    /// Codes: config 7, I/O 5, STATUS 50. Allocation failures (exhausted,
    /// taken, duplicate, leftovers) and CHECK misses keep the reference's 999
    /// (Go's skel wraps every untyped error in `ErrInternal`).
    fn from(e: PluginError) -> CniError {
        let msg = e.to_string();
        match e {
            PluginError::Cni(c) => c,
            PluginError::Config(_) => CniError::new(code::INVALID_NETWORK_CONFIG, msg),
            PluginError::Alloc {
                source: AllocError::Store(_),
                ..
            }
            | PluginError::Store(_)
            | PluginError::Release(_)
            | PluginError::ResolvConf { .. } => CniError::new(code::IO_FAILURE, msg),
            PluginError::Alloc { .. }
            | PluginError::RequestedLeftover(_)
            | PluginError::NotFound(_) => CniError::new(code::INTERNAL, msg),
            PluginError::Unavailable { source, .. } => {
                CniError::new(code::PLUGIN_NOT_AVAILABLE, msg).with_details(source.to_string())
            }
        }
    }
}
