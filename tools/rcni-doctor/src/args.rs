//! Command line parsing (hand-written: a handful of flags, as install-cni).

use std::path::PathBuf;

/// Where flanneld writes the node's lease.
pub const DEFAULT_SUBNET_FILE: &str = flannel_state::DEFAULT_SUBNET_FILE;
/// Where the runtime reads CNI configs.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Where the runtime finds the plugins (`CNI_PATH`).
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// libcni's cache directory (its results cache is `results/` under it).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

pub const USAGE: &str = "\
usage: rcni-doctor [--json] [--fix] [--subnet-file PATH] [--conf-dir DIR] [--bin-dir DIR]
                   [--cache-dir DIR] [--network NAME]

Checks this node (run it as root in the node's network namespace) for what keeps pods
on a flannel network from getting an address or reaching each other, root cause
first, and says how to fix each finding. Nothing is changed without --fix.

options:
  --json              one JSON object on stdout:
                      {\"healthy\": bool, \"findings\": [{\"id\", \"severity\", \"message\", \"fix\"}]}
  --fix               repair what is safe (see below) and say what was done
  --subnet-file PATH  flanneld's lease (default: the config's subnetFile, else
                      /run/flannel/subnet.env)
  --conf-dir DIR      CNI configs (default /etc/cni/net.d)
  --bin-dir DIR       CNI plugins (default /opt/cni/bin)
  --cache-dir DIR     libcni's cache, results in DIR/results (default /var/lib/cni)
  --network NAME      the config named NAME (default: the first file in --conf-dir,
                      as the runtime picks it)
  -h, --help          this text
  -V, --version       the version

--fix: IP forwarding off → on; a bridge holding an old lease's address and no ports →
deleted (the next pod recreates it); reservations, saved configs, masquerade and
port-mapping rules of pods that are gone → a CNI GC of the network with the live pods
as valid attachments.
Nothing else: no bridge with ports is deleted, no rule or reservation that cannot be
attributed to a pod of this network is touched.

exit codes: 0 no error found, 1 an error found, 2 bad usage or something could not be checked";

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub json: bool,
    pub fix: bool,
    /// None: the config's `subnetFile`, else [`DEFAULT_SUBNET_FILE`].
    pub subnet_file: Option<PathBuf>,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub network: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            json: false,
            fix: false,
            subnet_file: None,
            conf_dir: PathBuf::from(DEFAULT_CONF_DIR),
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            network: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Check(Options),
    Help,
    Version,
}

/// A command line that cannot be run (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (see --help)")]
pub struct UsageError(pub String);

/// Parses the arguments (without argv\[0\]).
pub fn parse(args: &[String]) -> Result<Action, UsageError> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, UsageError> {
            let v = inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))?;
            if v.is_empty() {
                return Err(UsageError(format!("{flag} must not be empty")));
            }
            Ok(v)
        };
        match flag {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--subnet-file" => o.subnet_file = Some(PathBuf::from(value()?)),
            "--conf-dir" => o.conf_dir = PathBuf::from(value()?),
            "--bin-dir" => o.bin_dir = PathBuf::from(value()?),
            "--cache-dir" => o.cache_dir = PathBuf::from(value()?),
            "--network" => o.network = Some(value()?),
            "--json" | "--fix" if inline.is_some() => {
                return Err(UsageError(format!("{flag} takes no value")));
            }
            "--json" => o.json = true,
            "--fix" => o.fix = true,
            other => return Err(UsageError(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Action::Check(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_are_a_real_nodes() {
        assert_eq!(
            parse(&[]).expect("parse"),
            Action::Check(Options {
                json: false,
                fix: false,
                subnet_file: None,
                conf_dir: "/etc/cni/net.d".into(),
                bin_dir: "/opt/cni/bin".into(),
                cache_dir: "/var/lib/cni".into(),
                network: None,
            })
        );
    }

    #[test]
    fn every_flag() {
        let Action::Check(o) = parse(&argv(&[
            "--json",
            "--fix",
            "--subnet-file",
            "/s.env",
            "--conf-dir=/c",
            "--bin-dir",
            "/b",
            "--cache-dir=/k",
            "--network",
            "cbr0",
        ]))
        .expect("parse") else {
            panic!("not a check");
        };
        assert!(o.json && o.fix);
        assert_eq!(o.subnet_file, Some(PathBuf::from("/s.env")));
        assert_eq!(o.conf_dir, PathBuf::from("/c"));
        assert_eq!(o.bin_dir, PathBuf::from("/b"));
        assert_eq!(o.cache_dir, PathBuf::from("/k"));
        assert_eq!(o.network.as_deref(), Some("cbr0"));
        assert_eq!(parse(&argv(&["-h"])).expect("help"), Action::Help);
        assert_eq!(parse(&argv(&["--version"])).expect("v"), Action::Version);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--bogus"][..],
            &["--conf-dir"],
            &["--conf-dir="],
            &["--network", ""],
            &["--json=yes"],
            &["check"],
        ] {
            assert!(parse(&argv(bad)).is_err(), "{bad:?}");
        }
    }
}
