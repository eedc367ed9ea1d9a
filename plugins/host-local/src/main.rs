//! `host-local`: IPAM plugin handing out addresses from local ranges, with
//! its state in `<dataDir>/<network>/` (compatible with the reference Go
//! plugin's store).

mod cmd;
mod config;
mod dns;
mod error;

fn main() {
    cni::init_logging("host-local");
    let info = cni::skel::PluginInfo {
        about: format!("CNI host-local plugin rcni v{}", env!("CARGO_PKG_VERSION")),
        supported: cni::version::SUPPORTED,
    };
    cni::skel::run(&cmd::HostLocal, &info)
}
