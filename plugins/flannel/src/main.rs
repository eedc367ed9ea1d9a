//! `flannel` binary: see the library crate for what it does.

fn main() {
    cni::skel::Entry::of::<flannel::Flannel>().run()
}
