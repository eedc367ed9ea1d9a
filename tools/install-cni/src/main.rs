//! `install-cni`: see the crate docs and `install-cni --help`.

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    install_cni::main(&argv)
}
