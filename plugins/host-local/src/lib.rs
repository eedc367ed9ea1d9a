//! `host-local`: IPAM plugin handing out addresses from local ranges, with
//! its state in `<dataDir>/<network>/` (compatible with the reference Go
//! plugin's store).
//!
//! A library as well as the binary, so that the fuzz targets (`fuzz/`) run the real
//! config loader.

pub mod cmd;
pub mod config;
pub mod dns;
pub mod error;

/// What VERSION reports.
pub fn info() -> cni::skel::PluginInfo {
    cni::skel::PluginInfo {
        about: format!("CNI host-local plugin rcni v{}", env!("CARGO_PKG_VERSION")),
        supported: cni::version::SUPPORTED,
    }
}
