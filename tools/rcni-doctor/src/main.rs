//! `rcni-doctor`: see the crate docs and `rcni-doctor --help`.

use std::process::ExitCode;

use rcni_doctor::args::{self, Action, USAGE};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let opts = match args::parse(&argv) {
        Ok(Action::Check(o)) => o,
        Ok(Action::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("rcni-doctor rcni v{}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rcni-doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rcni_doctor::run(&opts, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
