//! `bridge` binary: see the library crate for what it does.

fn main() {
    cni::init_logging("bridge");
    cni::skel::run(&bridge::Bridge, &bridge::info());
}
