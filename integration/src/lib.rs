//! Fixtures for the root-only integration tests.
//!
//! Every test builds its own world out of network namespaces: a "node" netns that
//! plays the host (bridges, masquerade rules and sysctls land there) and one netns
//! per pod. The real plugin binaries run inside the node netns with the `CNI_*`
//! environment a runtime would give them. Nothing here touches the machine's own
//! network namespace, and every namespace is deleted on drop, also when a test
//! panics.
//!
//! These tests need root. They fail loudly without it: a root-only test that
//! silently passes would hide a broken suite.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod echo;
mod flannel_node;
pub use flannel_node::FlannelNode;

/// Panics unless we run as root: network namespaces need it.
pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "the integration tests need root (network namespaces); run them with sudo: they never touch the host's own network"
    );
}

/// Directory of the built plugin binaries: `RCNI_BIN_DIR`, else `<repo>/target/bin`
/// (what `scripts/build.sh` fills).
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("RCNI_BIN_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bin"),
        PathBuf::from,
    );
    assert!(
        dir.join("host-local").exists(),
        "plugin binaries not found in {}: run scripts/build.sh first (or set RCNI_BIN_DIR)",
        dir.display()
    );
    dir
}

/// Path of one of our built binaries.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Directory of the Debian reference plugins (containernetworking-plugins).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Path of a reference plugin; panics with the install hint when missing.
pub fn reference_bin(name: &str) -> PathBuf {
    let p = Path::new(REFERENCE_DIR).join(name);
    assert!(
        p.exists(),
        "reference plugin {} missing: apt-get install -y containernetworking-plugins",
        p.display()
    );
    p
}

/// The spec versions every plugin test runs against.
pub const ALL_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for netns and link names.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command, returning its output; panics only when it cannot be spawned.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made by the test (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
}

impl TestNetns {
    /// Creates `rcni-<prefix><unique>` with `lo` up.
    pub fn new(prefix: &str) -> Self {
        require_root();
        let name = unique(&format!("rcni-{prefix}"));
        run_ok("ip", &["netns", "add", &name]);
        let ns = TestNetns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted netns file, what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// Runs a command inside this namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside this namespace; it must succeed. Returns stdout.
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.exec(cmd, args);
        assert!(
            out.status.success(),
            "in netns {}: {cmd} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -j <args>` inside this namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", self.name.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = run_ok("ip", &full);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad ip -j output {out:?}: {e}"))
    }

    /// The link `name` as `ip -d -j link show` reports it, or None.
    pub fn link(&self, name: &str) -> Option<Value> {
        let out = run(
            "ip",
            &["-n", &self.name, "-d", "-j", "link", "show", "dev", name],
        );
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// Every link name in this namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The addresses (`ip/prefix`) on `dev`, of every family.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        self.ip_json(&["addr", "show", "dev", dev])
            .as_array()
            .and_then(|a| a.first().cloned())
            .and_then(|l| l["addr_info"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect()
    }

    /// The routes of one family (`-4` or `-6`) as `ip -j route show` reports them.
    pub fn routes(&self, family: &str) -> Vec<Value> {
        let v = self.ip_json(&[family, "route", "show", "table", "all"]);
        v.as_array().cloned().unwrap_or_default()
    }

    /// A sysctl value read inside this namespace (`net.ipv4.ip_forward` form).
    pub fn sysctl(&self, key: &str) -> String {
        self.exec_ok("sysctl", &["-n", key]).trim().to_owned()
    }

    /// One ICMP echo to `addr` from this namespace: true when answered.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec("ping", &["-c", "1", "-W", "2", "-n", "-q", addr])
            .status
            .success()
    }

    /// The `nft list ruleset` text inside this namespace. Panics when `nft` fails: an empty
    /// text must mean "no rules", never "could not look".
    pub fn nft_ruleset(&self) -> String {
        self.exec_ok("nft", &["list", "ruleset"])
    }

    /// The `iptables-save -t nat` text inside this namespace. Panics when it fails, as
    /// [`TestNetns::nft_ruleset`].
    pub fn iptables_nat(&self) -> String {
        self.exec_ok("iptables-save", &["-t", "nat"])
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the netns takes its links (veth peers included) with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair between two namespaces, for "node on a LAN" fixtures.
pub fn veth_between(a: &TestNetns, a_if: &str, b: &TestNetns, b_if: &str) {
    let tmp_a = unique("va");
    let tmp_b = unique("vb");
    run_ok(
        "ip",
        &[
            "link",
            "add",
            &tmp_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &tmp_b,
            "netns",
            b.name(),
        ],
    );
    a.exec_ok("ip", &["link", "set", &tmp_a, "name", a_if]);
    b.exec_ok("ip", &["link", "set", &tmp_b, "name", b_if]);
    a.exec_ok("ip", &["link", "set", a_if, "up"]);
    b.exec_ok("ip", &["link", "set", b_if, "up"]);
}

/// One plugin invocation, with the environment a runtime would set.
#[derive(Debug, Clone)]
pub struct Call {
    pub bin: PathBuf,
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_args: String,
    pub cni_path: String,
    pub config: Value,
    /// Run inside this netns (the "node"); None = the test's own netns.
    pub node: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// What a plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Stdout parsed as JSON; panics with the whole reply when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the parsed result (or Null for empty stdout).
    pub fn expect_ok(&self) -> Value {
        assert!(self.ok(), "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code`: exit status 1 (a crash or a signal is not the
    /// expected failure) and the error object on stdout. Returns the error object.
    pub fn expect_err(&self, code: u64) -> Value {
        assert!(!self.ok(), "plugin should have failed: {self:?}");
        assert_eq!(self.code, 1, "a failure is exit status 1: {self:?}");
        let v = self.json();
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "unexpected error code: {self:?}"
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {self:?}"
        );
        v
    }
}

impl Call {
    /// A call of `bin` with `command`; `CNI_PATH` defaults to our bin dir.
    pub fn new(bin: impl Into<PathBuf>, command: &str, config: Value) -> Self {
        Call {
            bin: bin.into(),
            command: command.to_owned(),
            container_id: String::new(),
            netns: String::new(),
            ifname: "eth0".to_owned(),
            cni_args: String::new(),
            cni_path: bin_dir().to_string_lossy().into_owned(),
            config,
            node: None,
            env: BTreeMap::new(),
        }
    }

    pub fn container(mut self, id: &str) -> Self {
        self.container_id = id.to_owned();
        self
    }

    pub fn netns(mut self, ns: &TestNetns) -> Self {
        self.netns = ns.path_str().to_owned();
        self
    }

    pub fn netns_path(mut self, p: &str) -> Self {
        self.netns = p.to_owned();
        self
    }

    pub fn ifname(mut self, i: &str) -> Self {
        self.ifname = i.to_owned();
        self
    }

    pub fn args(mut self, a: &str) -> Self {
        self.cni_args = a.to_owned();
        self
    }

    pub fn path(mut self, p: &str) -> Self {
        self.cni_path = p.to_owned();
        self
    }

    pub fn in_node(mut self, node: &TestNetns) -> Self {
        self.node = Some(node.name().to_owned());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.to_owned(), v.to_owned());
        self
    }

    pub fn command(mut self, c: &str) -> Self {
        self.command = c.to_owned();
        self
    }

    /// Runs the plugin with a clean environment (only `PATH` and the `CNI_*` set).
    ///
    /// Always inside a namespace the test made: the node given with [`Call::in_node`],
    /// or else a throwaway one for this call, so that no plugin, whatever its config,
    /// can ever touch the machine's own network namespace.
    pub fn run(&self) -> Reply {
        self.spawn().wait()
    }

    /// Starts the plugin as [`Call::run`] does and returns at once: the caller can watch
    /// (or kill) the process and its children before it [`Running::wait`]s for the reply.
    /// The plugin's pid is [`Running::pid`] (`ip netns exec` execs it in place).
    pub fn spawn(&self) -> Running {
        let sandbox = match &self.node {
            Some(_) => None,
            None => Some(TestNetns::new("sbx")),
        };
        let node = self
            .node
            .as_deref()
            .or(sandbox.as_ref().map(TestNetns::name))
            .unwrap_or_default()
            .to_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node]).arg(&self.bin);
        // A process group of its own: a test can find (and wait for) every process of this
        // invocation, a killed plugin's orphans included.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.cni_args)
            .env("CNI_PATH", &self.cni_path)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let input = serde_json::to_vec(&self.config).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit before reading stdin (VERSION): ignore EPIPE.
            let _ = stdin.write_all(&input);
        }
        // Read while it runs: a caller polling for the exit must not leave a full pipe.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Running {
            child,
            stdout,
            stderr,
            bin: self.bin.clone(),
            _sandbox: sandbox,
        }
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// A plugin started by [`Call::spawn`].
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    bin: PathBuf,
    _sandbox: Option<TestNetns>,
}

impl Running {
    /// The plugin's pid, which is also its process group's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (it is then reaped by [`Running::wait`]).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it and returns what it printed; `code` is -1 when a signal ended it.
    pub fn wait(mut self) -> Reply {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.bin.display()));
        let text = |h: std::thread::JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Reply {
            code: status.code().unwrap_or(-1),
            stdout: text(self.stdout),
            stderr: text(self.stderr),
        }
    }
}

/// Waits until `cond` holds, for work the kernel finishes asynchronously (a deleted
/// netns is torn down by a workqueue, taking its veth peers with it a little later).
/// Checks at once and then every 10 ms; panics naming `what` after 10 s. This waits
/// on the condition itself, never for a fixed time.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Files in `dir` (names), sorted; empty when it does not exist.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A fresh temporary directory removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rcni-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}
