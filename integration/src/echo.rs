//! Traffic end points for the port-mapping tests: an echo server inside a test namespace and
//! one-shot clients, all run from the `rcni-echo` binary of this crate (tests pass its path,
//! `env!("CARGO_BIN_EXE_rcni-echo")`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::TestNetns;

/// A running `rcni-echo serve` in a namespace; killed on drop.
#[derive(Debug)]
pub struct EchoServer {
    child: Child,
}

impl EchoServer {
    /// Starts a server answering `id PEER` on every TCP and UDP port given (both families),
    /// and returns once it listens (it prints `ready`): no sleeping.
    pub fn start(bin: &Path, ns: &TestNetns, id: &str, tcp: &[u16], udp: &[u16]) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()]).arg(bin);
        cmd.args(["serve", "--id", id]);
        for p in tcp {
            cmd.args(["--tcp", &p.to_string()]);
        }
        for p in udp {
            cmd.args(["--udp", &p.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let server = EchoServer { child };
        assert_eq!(line.trim(), "ready", "echo server {id} did not start");
        server
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo client of a test: the binary and the namespace it runs in.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    bin: PathBuf,
    ns: &'a TestNetns,
}

impl<'a> Client<'a> {
    /// A client running `bin` in `ns`.
    pub fn new(bin: &Path, ns: &'a TestNetns) -> Self {
        Client {
            bin: bin.to_path_buf(),
            ns,
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec![self.bin.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        let out = self.ns.exec(full[0], &full[1..]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// One TCP connection to `to` (`10.0.0.1:80`, `[fd00::1]:80`): the server's `id PEER`.
    pub fn tcp(&self, to: &str) -> Result<String, String> {
        self.run(&["tcp", to])
    }

    /// One UDP datagram to `to` and its answer, from source port `sport` (0: any).
    pub fn udp(&self, to: &str, sport: u16) -> Result<String, String> {
        self.run(&["udp", to, "--sport", &sport.to_string()])
    }
}
