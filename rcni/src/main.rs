//! `rcni`: every rcni plugin and tool in one binary (busybox-style). It runs as the program
//! named by the file it was started from: `/opt/cni/bin/bridge`, a symlink to it, runs the
//! bridge plugin. `rcni <name> [args]` does the same by subcommand, for debugging
//! (`CNI_COMMAND=VERSION rcni bridge`). The plugins are libraries with one entry point
//! each ([`cni::skel::Entry`]); this file is only the table of names and the dispatch. The
//! table also goes to the delegation layer: flannel → bridge → host-local is one process
//! when the delegates found on `CNI_PATH` are this very build.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use cni::skel::Entry;
use cni::{CniError, code};

/// The binary's own name: its file in `/opt/cni/bin`, the name the links point to.
const BINARY: &str = "rcni";

/// The CNI plugins it holds; also what a delegation may run in-process (see
/// [`cni::delegate::register`]).
static PLUGINS: &[Entry] = &[
    Entry::of::<bridge::Bridge>(),
    Entry::of::<flannel::Flannel>(),
    Entry::of::<host_local::HostLocal>(),
    Entry::of::<loopback::Loopback>(),
    Entry::of::<portmap::Portmap>(),
];

/// A tool: its name and its `main(argv without the program name)`.
type Tool = (&'static str, fn(&[String]) -> ExitCode);

/// The tools it holds.
static TOOLS: &[Tool] = &[
    ("install-cni", install_cni),
    ("rcni-doctor", rcni_doctor::main),
];

/// The names a node runs it under, in install order (install-cni's default): every plugin
/// (delegates before the plugins that call them), then the doctor. install-cni itself runs
/// from the DaemonSet's image, not from the node.
const NODE_NAMES: &[&str] = &[
    "host-local",
    "loopback",
    "bridge",
    "flannel",
    "portmap",
    "rcni-doctor",
];

fn install_cni(argv: &[String]) -> ExitCode {
    install_cni::main(
        argv,
        &install_cni::Suite {
            binary: BINARY,
            names: NODE_NAMES,
        },
    )
}

fn main() -> ExitCode {
    cni::delegate::register(PLUGINS);
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let name = program_name(&argv0);
    if name == BINARY || name.is_empty() {
        return subcommand(&rest);
    }
    run(&name, &rest)
}

/// The file name the program was started as (argv\[0\]'s last component).
fn program_name(argv0: &OsString) -> String {
    Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the plugin or tool `name`; a plugin never returns.
fn run(name: &str, argv: &[String]) -> ExitCode {
    if let Some(plugin) = PLUGINS.iter().find(|p| p.name == name) {
        plugin.run()
    }
    if let Some((_, main)) = TOOLS.iter().find(|(n, _)| *n == name) {
        return main(argv);
    }
    unknown(name)
}

/// `rcni <name> [args]`, `rcni --help`, `rcni --version`.
fn subcommand(argv: &[String]) -> ExitCode {
    match argv.first().map(String::as_str) {
        Some("-h" | "--help") => {
            eprintln!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            eprintln!("{BINARY} v{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(name) => run(name, &argv[1..]),
        None => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}

fn names() -> Vec<&'static str> {
    PLUGINS
        .iter()
        .map(|p| p.name)
        .chain(TOOLS.iter().map(|(n, _)| *n))
        .collect()
}

fn usage() -> String {
    format!(
        "usage: {BINARY} NAME [ARGS...], or run it as NAME (a link to it)\n\
         NAME: {}\n\
         A plugin reads the CNI_* variables and its config on stdin (CNI_COMMAND=VERSION {BINARY} bridge).",
        names().join(", ")
    )
}

/// A name this binary does not hold: a CNI error object when a runtime called (the link's
/// name is not one of ours), usage otherwise.
fn unknown(name: &str) -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some_and(|c| !c.is_empty()) {
        let e = CniError::new(
            code::INVALID_NETWORK_CONFIG,
            format!("{BINARY} holds no plugin named {name:?}"),
        )
        .with_details(format!("it holds: {}", names().join(", ")));
        println!("{}", e.to_json_string());
        return ExitCode::from(1);
    }
    eprintln!("{BINARY}: no program named {name:?}\n{}", usage());
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_name_is_held_and_every_plugin_is_installed() {
        let held = names();
        for n in NODE_NAMES {
            assert!(held.contains(n), "{n} is installed but not held");
        }
        for p in PLUGINS {
            assert!(NODE_NAMES.contains(&p.name), "{} is not installed", p.name);
        }
        let mut sorted = held.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), held.len(), "a name twice: {held:?}");
        assert!(!held.contains(&BINARY));
    }

    #[test]
    fn program_name_is_the_last_component() {
        assert_eq!(program_name(&"/opt/cni/bin/bridge".into()), "bridge");
        assert_eq!(program_name(&"host-local".into()), "host-local");
        assert_eq!(program_name(&"".into()), "");
    }
}
