//! The flannel plugin's errors and the CNI error code each one maps to.
//!
//! Codes (Go returns untyped errors, which its skel turns into 999; we pick meaningful ones):
//! * 6 `DECODING_FAILURE`: the flannel config does not decode (`failed to load netconf: ...`).
//! * 7 `INVALID_NETWORK_CONFIG`: a refused `delegate` key, bad `ipam.routes`, and a subnet.env
//!   that exists but is malformed or incomplete (flanneld writes it atomically, so that is not
//!   a transient state).
//! * 11 `TRY_AGAIN_LATER`: subnet.env does not exist yet: flanneld has not got its lease on
//!   this node. The runtime (kubelet) retries pod creation anyway; the code says so explicitly.
//! * 5 `IO_FAILURE`: reading subnet.env or the saved delegate configs, writing them.
//! * 4 `INVALID_ENVIRONMENT`: a container ID that cannot be a file name.
//! * STATUS reports every subnet.env problem as 50 `PLUGIN_NOT_AVAILABLE` (see `plugin.rs`).
//! * Delegate failures keep the delegate's own code.

use std::io;
use std::path::PathBuf;

use cni::{CniError, code};

use flannel_state::subnet_env::SubnetEnvError;

/// Everything that can fail inside the flannel plugin itself.
#[derive(Debug, thiserror::Error)]
pub enum FlannelError {
    #[error("failed to load netconf: {0}")]
    Decode(String),
    #[error("'delegate' dictionary, if present, must have (string) 'type' field")]
    DelegateTypeNotString,
    #[error("'delegate' dictionary must not have 'name' field, it'll be set by flannel")]
    DelegateHasName,
    #[error("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")]
    DelegateHasIpam,
    #[error("failed to assemble Delegate IPAM: failed to read IPAM routes: {0}")]
    IpamRoutes(String),
    #[error(transparent)]
    SubnetEnv(#[from] SubnetEnvError),
    #[error("invalid container ID {0:?} for a file name")]
    BadContainerId(String),
    #[error("failed to save the delegate config {}: {source}", path.display())]
    Save { path: PathBuf, source: io::Error },
    #[error("failed to read the saved delegate config {}: {source}", path.display())]
    Load { path: PathBuf, source: io::Error },
    #[error("failed to remove the saved delegate config {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("failed to list the saved delegate configs in {}: {source}", path.display())]
    List { path: PathBuf, source: io::Error },
}

impl FlannelError {
    /// The CNI error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            FlannelError::Decode(_) => code::DECODING_FAILURE,
            FlannelError::DelegateTypeNotString
            | FlannelError::DelegateHasName
            | FlannelError::DelegateHasIpam
            | FlannelError::IpamRoutes(_) => code::INVALID_NETWORK_CONFIG,
            FlannelError::SubnetEnv(e) => match e {
                SubnetEnvError::NotFound { .. } => code::TRY_AGAIN_LATER,
                SubnetEnvError::Io { .. } => code::IO_FAILURE,
                SubnetEnvError::Invalid { .. } | SubnetEnvError::Missing { .. } => {
                    code::INVALID_NETWORK_CONFIG
                }
            },
            FlannelError::BadContainerId(_) => code::INVALID_ENVIRONMENT,
            FlannelError::Save { .. }
            | FlannelError::Load { .. }
            | FlannelError::Remove { .. }
            | FlannelError::List { .. } => code::IO_FAILURE,
        }
    }
}

impl From<FlannelError> for CniError {
    fn from(e: FlannelError) -> Self {
        CniError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn codes() {
        let missing = SubnetEnvError::NotFound {
            path: Path::new("/run/flannel/subnet.env").to_owned(),
        };
        let e: CniError = FlannelError::from(missing).into();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("Check the flannel pod log for this node."));

        let e: CniError = FlannelError::DelegateHasName.into();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        let e: CniError = FlannelError::Decode("x".into()).into();
        assert_eq!(e.code, code::DECODING_FAILURE);
        let e: CniError = FlannelError::Save {
            path: PathBuf::from("/x"),
            source: io::Error::other("disk full"),
        }
        .into();
        assert_eq!(e.code, code::IO_FAILURE);
    }
}
