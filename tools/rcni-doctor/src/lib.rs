//! `rcni-doctor`: run as root in a flannel node's network namespace, it says why pods on the
//! node get no address or cannot reach each other, root cause first, and with `--fix` repairs
//! what is safe.
//!
//! It reads what the plugins and flanneld write (the CNI config, `subnet.env`, host-local's
//! store, flannel's saved configs, libcni's results cache) and the kernel's state (links,
//! addresses, routes and sysctls over netlink and `/proc/sys`; the pods' masquerade and
//! port-mapping rules through the firewall crate's listings; the forward hook with `nft` and
//! `iptables`), and changes nothing unless asked to. Modules: [`args`], [`network`] (the
//! active config), [`attachments`] (live pods), [`node`] (the kernel), [`checks`] (one per
//! finding id, in report order), [`fix`] and [`report`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod args;
pub mod attachments;
pub mod checks;
pub mod finding;
pub mod fix;
pub mod network;
pub mod node;
pub mod report;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use flannel_state::{SubnetEnv, SubnetEnvError};
use ipam_store::{DiskStore, Entry};

use crate::args::{Action, Options, USAGE};
use crate::attachments::Runtime;
use crate::finding::{Outcome, Report};
use crate::network::{Config, Network};
use crate::node::{Kernel, PathRunner};

/// flanneld's lease, as far as it could be read.
#[derive(Debug, Clone)]
pub enum Lease {
    /// The network does not use flannel.
    NotFlannel,
    Loaded {
        path: PathBuf,
        env: SubnetEnv,
    },
    /// The file does not exist.
    Missing {
        path: PathBuf,
    },
    /// It exists but cannot be read, does not parse, or does not add up.
    Invalid {
        path: PathBuf,
        why: String,
    },
}

/// Everything the checks look at, read once.
#[derive(Debug)]
pub struct Context {
    pub opts: Options,
    pub config: Config,
    pub net: Network,
    pub lease: Lease,
    pub kernel: Result<Kernel, String>,
    pub runtime: Result<Runtime, String>,
    /// host-local's reservations of the network (none when it has no store yet).
    pub reservations: Result<Vec<Entry>, String>,
    pub runner: PathRunner,
}

impl Context {
    /// Reads the node.
    pub fn gather(opts: &Options) -> Context {
        let config = Config::select(&opts.conf_dir, opts.network.as_deref());
        let net = Network::of(&config, opts);
        let lease = match &net.flannel {
            None => Lease::NotFlannel,
            Some(f) => read_lease(f.subnet_file.clone()),
        };
        let reservations = match (&net.name, &net.ipam_dir) {
            (Some(name), Some(dir)) => read_store(dir, name),
            _ => Ok(Vec::new()),
        };
        Context {
            opts: opts.clone(),
            config,
            net,
            lease,
            kernel: Kernel::read(),
            runtime: Runtime::read(&opts.cache_dir),
            reservations,
            runner: PathRunner,
        }
    }

    /// The lease, or the outcome of a check that needs it and cannot have it.
    pub fn env(&self) -> Result<&SubnetEnv, Outcome> {
        match &self.lease {
            Lease::Loaded { env, .. } => Ok(env),
            Lease::NotFlannel => Err(Outcome::Skipped(
                "not checked: the network does not use flannel".into(),
            )),
            Lease::Missing { .. } | Lease::Invalid { .. } => Err(Outcome::Skipped(
                "not checked: needs flanneld's lease (see above)".into(),
            )),
        }
    }

    /// The kernel's state, or the outcome of a check that cannot read it.
    pub fn kernel(&self) -> Result<&Kernel, Outcome> {
        self.kernel
            .as_ref()
            .map_err(|e| Outcome::Unchecked(e.clone()))
    }

    /// The network name, or the outcome of a check that needs a config.
    pub fn network_name(&self) -> Result<&str, Outcome> {
        self.net
            .name
            .as_deref()
            .ok_or_else(|| Outcome::Skipped("not checked: needs the network's config".into()))
    }
}

fn read_lease(path: PathBuf) -> Lease {
    match SubnetEnv::load(&path) {
        Ok(env) => {
            let problems = env.inconsistencies();
            if problems.is_empty() {
                Lease::Loaded { path, env }
            } else {
                Lease::Invalid {
                    why: problems.join("; "),
                    path,
                }
            }
        }
        Err(SubnetEnvError::NotFound { .. }) => Lease::Missing { path },
        Err(e) => Lease::Invalid {
            why: e.to_string(),
            path,
        },
    }
}

/// host-local's reservations for `network`, read under the store's lock; none when the
/// plugin never made the store. Creates nothing.
fn read_store(dir: &std::path::Path, network: &str) -> Result<Vec<Entry>, String> {
    let what = || format!("host-local's store {}", dir.join(network).display());
    let store = DiskStore::open_existing(dir, network)
        .map_err(|e| format!("cannot open {}: {e}", what()))?;
    let Some(store) = store else {
        return Ok(Vec::new());
    };
    let entries = store
        .lock()
        .and_then(|l| l.peek())
        .map_err(|e| format!("cannot read {}: {e}", what()))?;
    Ok(entries)
}

/// Runs every check on `ctx`, in report order.
pub fn diagnose(ctx: &Context) -> Report {
    Report {
        context: report::context_lines(ctx),
        checks: checks::all(ctx),
    }
}

/// The command: `argv` without the program name; the exit code (see `--help`).
pub fn main(argv: &[String]) -> ExitCode {
    let opts = match args::parse(argv) {
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
    let code = run(&opts, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}

/// The whole program after argument parsing: check, print, maybe fix and check again.
/// Returns the exit code.
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let ctx = Context::gather(opts);
    let before = diagnose(&ctx);
    if !opts.fix {
        report::print(&before, opts.json, out, err);
        return before.exit_code();
    }
    if !opts.json {
        report::print_text(&before, out);
    }
    let done = fix::apply(&ctx, &before);
    if done.is_empty() {
        if opts.json {
            report::print(&before, true, out, err);
        } else {
            let _ = writeln!(out, "\n--fix: nothing that --fix repairs was found");
        }
        return before.exit_code();
    }
    let log: &mut dyn Write = if opts.json { &mut *err } else { &mut *out };
    let _ = writeln!(log, "\n--fix:");
    for line in &done {
        let _ = writeln!(log, "  {line}");
    }
    let after = diagnose(&Context::gather(opts));
    if opts.json {
        report::print(&after, true, out, err);
    } else {
        let _ = writeln!(out, "\nafter the fixes:");
        report::print(&after, false, out, err);
    }
    after.exit_code()
}
