//! `host-local`: IPAM plugin handing out addresses from local ranges (see the library).

fn main() {
    cni::init_logging("host-local");
    cni::skel::run(&host_local::cmd::HostLocal, &host_local::info())
}
