//! `host-local` binary: see the library crate for what it does.

fn main() {
    cni::skel::Entry::of::<host_local::HostLocal>().run()
}
