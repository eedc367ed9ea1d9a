//! `host-local`: IPAM plugin handing out addresses from local ranges, with
//! its state in `<dataDir>/<network>/` (compatible with the reference Go
//! plugin's store).
//!
//! A library, so that the multi-call binary holds it and the fuzz targets (`fuzz/`) run the real
//! config loader.

pub mod cmd;
pub mod config;
pub mod dns;
pub mod error;

pub use cmd::HostLocal;
