//! `bridge` binary: see the library crate for what it does.

fn main() {
    cni::skel::Entry::of::<bridge::Bridge>().run()
}
