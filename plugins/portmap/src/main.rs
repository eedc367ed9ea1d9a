//! `portmap` binary: see the library crate for what it does.

fn main() {
    cni::init_logging("portmap");
    cni::skel::run(&portmap::Portmap, &portmap::info());
}
