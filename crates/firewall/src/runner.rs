//! Running the firewall tools (`iptables`, `iptables-restore`, ...; nf_tables itself is
//! spoken over netlink, see [`crate::nftables`]).
//!
//! Backends talk to a [`Runner`] so that unit tests can record the exact transactions
//! (see the fake in this module's tests helpers) and real tests can run the tools elsewhere.

use crate::Error;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directories searched after `PATH` (CNI runtimes often give plugins a minimal `PATH`).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// What a finished tool run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// True for exit status 0.
    pub success: bool,
    /// Exit status as text, for error messages.
    pub status: String,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
}

/// Runs a firewall tool. Implementations must not go through a shell.
pub trait Runner {
    /// Whether `tool` can be run at all.
    fn has(&self, tool: &str) -> bool;
    /// Run `tool args..`, feeding `stdin` if given; a non-zero exit is *not* an error here.
    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error>;
    /// Contents of `/proc/net/<name>` *of the namespace the tools run in*, `Some("")` when
    /// the file does not exist, `None` when unknown (the caller then assumes the worst).
    /// Used to learn, without spawning anything, whether legacy iptables tables exist.
    fn proc_net(&self, _name: &str) -> Option<String> {
        None
    }
}

impl<R: Runner + ?Sized> Runner for &R {
    fn has(&self, tool: &str) -> bool {
        (**self).has(tool)
    }
    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        (**self).run(tool, args, stdin)
    }
    fn proc_net(&self, name: &str) -> Option<String> {
        (**self).proc_net(name)
    }
}

/// Run and turn a failure status into [`Error::Failed`]; returns stdout.
pub(crate) fn run_ok<R: Runner + ?Sized>(
    runner: &R,
    tool: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let out = runner.run(tool, args, stdin)?;
    if out.success {
        Ok(out.stdout)
    } else {
        if let Some(text) = stdin {
            log::debug!("{tool} input was:\n{text}");
        }
        Err(failed(tool, args, &out))
    }
}

/// Build [`Error::Failed`] from an output.
pub(crate) fn failed(tool: &str, args: &[&str], out: &Output) -> Error {
    Error::Failed {
        tool: tool.to_string(),
        args: args.join(" "),
        status: out.status.clone(),
        stderr: out.stderr.trim().to_string(),
    }
}

/// The real runner: spawns the tool directly (in the calling thread's network namespace),
/// optionally behind a prefix command such as `ip netns exec <ns>`.
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    prefix: Vec<OsString>,
}

impl SystemRunner {
    /// Spawn tools directly in the current network namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawn every tool as `ip netns exec <name> <tool> ..` (tests; needs root).
    pub fn in_named_netns(name: &str) -> Self {
        Self {
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), name.into()],
        }
    }

    /// Locate `tool` on `PATH`, then in `/usr/sbin`, `/sbin`, `/usr/bin`, `/bin`.
    pub fn find(tool: &str) -> Option<PathBuf> {
        if tool.contains('/') {
            return is_executable(Path::new(tool)).then(|| PathBuf::from(tool));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(EXTRA_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(tool))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Runner for SystemRunner {
    fn has(&self, tool: &str) -> bool {
        Self::find(tool).is_some()
    }

    /// Read through `/proc/thread-self/net`: `/proc/net` is the thread-group leader's
    /// namespace, not necessarily the calling thread's (tests run tools from a thread that
    /// unshared its netns). Unknown behind a prefix command (another namespace).
    fn proc_net(&self, name: &str) -> Option<String> {
        if !self.prefix.is_empty() {
            return None;
        }
        match std::fs::read_to_string(Path::new("/proc/thread-self/net").join(name)) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(String::new()),
            Err(_) => None,
        }
    }

    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        let path = Self::find(tool).ok_or_else(|| Error::ToolNotFound {
            tool: tool.to_string(),
        })?;
        let mut cmd = match self.prefix.split_first() {
            None => Command::new(&path),
            Some((first, rest)) => {
                let prog = first
                    .to_str()
                    .and_then(Self::find)
                    .unwrap_or_else(|| PathBuf::from(first));
                let mut c = Command::new(prog);
                c.args(rest).arg(&path);
                c
            }
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| Error::Spawn {
            tool: tool.to_string(),
            source,
        };
        log::debug!("running {tool} {}", args.join(" "));
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(text) = stdin {
            // Take the pipe so it is closed (EOF) before we wait.
            if let Some(mut pipe) = child.stdin.take() {
                // A tool that exits early closes its stdin; its stderr says why.
                match pipe.write_all(text.as_bytes()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(spawn_err(e));
                    }
                    _ => {}
                }
            }
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A scripted runner for unit tests: records every call and answers from a queue.
#[cfg(test)]
pub(crate) mod fake {
    use super::{Output, Runner};
    use crate::Error;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Call {
        pub tool: String,
        pub args: Vec<String>,
        pub stdin: Option<String>,
    }

    /// Answers queued per tool; a tool without queued answers succeeds with empty output.
    #[derive(Default)]
    pub struct FakeRunner {
        pub calls: RefCell<Vec<Call>>,
        answers: RefCell<Vec<(String, VecDeque<Output>)>>,
        pub missing: Vec<String>,
        /// `proc_net` answers by file name; files not listed are unknown (`None`).
        pub proc: Vec<(String, String)>,
    }

    impl FakeRunner {
        pub fn new() -> Self {
            Self::default()
        }

        /// Tools reported as not installed.
        pub fn without(mut self, tools: &[&str]) -> Self {
            self.missing = tools.iter().map(|s| s.to_string()).collect();
            self
        }

        /// Answer `proc_net(name)` with `contents`.
        pub fn with_proc(mut self, name: &str, contents: &str) -> Self {
            self.proc.push((name.to_string(), contents.to_string()));
            self
        }

        /// Queue a successful answer with `stdout` for `tool`.
        pub fn answer(&self, tool: &str, stdout: &str) {
            self.push(
                tool,
                Output {
                    success: true,
                    status: "exit status: 0".into(),
                    stdout: stdout.into(),
                    stderr: String::new(),
                },
            );
        }

        /// Queue a failing answer with `stderr` for `tool`.
        pub fn fail(&self, tool: &str, stderr: &str) {
            self.push(
                tool,
                Output {
                    success: false,
                    status: "exit status: 1".into(),
                    stdout: String::new(),
                    stderr: stderr.into(),
                },
            );
        }

        fn push(&self, tool: &str, out: Output) {
            let mut a = self.answers.borrow_mut();
            match a.iter_mut().find(|(t, _)| t == tool) {
                Some((_, q)) => q.push_back(out),
                None => a.push((tool.to_string(), VecDeque::from([out]))),
            }
        }

        /// Calls rendered as `tool args` lines, each followed by its stdin (if any).
        pub fn transcript(&self) -> String {
            let mut s = String::new();
            for c in self.calls.borrow().iter() {
                s.push_str(&format!("$ {} {}\n", c.tool, c.args.join(" ")));
                if let Some(i) = &c.stdin {
                    s.push_str(i);
                }
            }
            s
        }
    }

    impl Runner for FakeRunner {
        fn has(&self, tool: &str) -> bool {
            !self.missing.iter().any(|m| m == tool)
        }

        fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
            if !self.has(tool) {
                return Err(Error::ToolNotFound { tool: tool.into() });
            }
            self.calls.borrow_mut().push(Call {
                tool: tool.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                stdin: stdin.map(str::to_string),
            });
            let mut a = self.answers.borrow_mut();
            let next = a
                .iter_mut()
                .find(|(t, _)| t == tool)
                .and_then(|(_, q)| q.pop_front());
            Ok(next.unwrap_or(Output {
                success: true,
                status: "exit status: 0".into(),
                ..Output::default()
            }))
        }

        fn proc_net(&self, name: &str) -> Option<String> {
            self.proc
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.clone())
        }
    }
}
