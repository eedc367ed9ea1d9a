//! `install-cni`: see the crate docs and `install-cni --help`.

use std::process::ExitCode;

use install_cni::args::{self, Action, USAGE};
use install_cni::{Error, run};
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = |k: &str| std::env::var(k).ok();
    match real_main(&argv, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("install-cni: error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn real_main(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<(), Error> {
    let opts = match args::parse(argv, env)? {
        Action::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Action::Version => {
            println!("install-cni rcni v{}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Action::Install(o) => o,
    };
    // Block the stop signals before installing, so a SIGTERM that arrives mid-install
    // waits for the install to finish, and so we can wait for them below. This also works
    // as a container's PID 1, where the kernel ignores a SIGTERM left at its default action.
    let stop = if opts.sleep {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block().map_err(Error::Signal)?;
        Some(set)
    } else {
        None
    };
    run(&opts, &mut std::io::stderr())?;
    if let Some(set) = stop {
        eprintln!("install-cni: done; sleeping until SIGTERM");
        let sig = set.wait().map_err(Error::Signal)?;
        eprintln!("install-cni: got {sig}, exiting");
    }
    Ok(())
}
