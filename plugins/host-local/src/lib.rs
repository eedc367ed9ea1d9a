//! `host-local`: IPAM plugin handing out addresses from local ranges, with
//! its state in `<dataDir>/<network>/` (compatible with the reference Go
//! plugin's store).

pub mod cmd;
pub mod config;
pub mod dns;
pub mod error;

pub use cmd::HostLocal;
