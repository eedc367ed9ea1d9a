//! The build ID that proves a delegate on `CNI_PATH` is this very build (see
//! `cni::delegate::build_id`): a SHA-1 of the linked file, in its `.note.gnu.build-id`. Most
//! toolchains write one by default; asked for explicitly so that none leaves it out.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--build-id=sha1");
}
