//! `portmap` binary: see the library crate for what it does.

fn main() {
    cni::skel::Entry::of::<portmap::Portmap>().run()
}
