//! In-process delegation gives exactly what exec gives: the same stdout bytes, exit status
//! and stderr, for every spec version, every command and the error cases (an error object,
//! a dispatcher error, a result without `cniVersion`, a panic, log lines); and only this
//! very build runs in-process: another build of the same code (a copy with another build
//! ID) and a wrapper script are exec'd.
//!
//! This file is its own multi-call binary (`harness = false`): started as `caller`, `echo`
//! or `sink` (symlinks to it) it is that test plugin; started by cargo it runs the tests,
//! which start the caller with `CNI_PATH` pointing at
//! * `same/`: symlinks to this binary (this build: in-process),
//! * `other/`: a copy with its build ID changed (another build: exec'd),
//! * `wrapped/`: shell scripts that record their call and exec the real plugin (exec'd),
//!
//! and compare. Every plugin run appends its pid and its parent's pid to `RCNI_TEST_RECORD`,
//! which tells in-process (the caller's pid) from exec'd (a child of the caller).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};

use cni::skel::{AddOutput, CmdArgs, Command, Entry, Plugin};
use cni::version::SUPPORTED;
use cni::{CniError, CniResult};
use serde_json::{Value, json};

const RECORD: &str = "RCNI_TEST_RECORD";
const INHERITED: &str = "RCNI_TEST_INHERITED";

fn record(name: &str, args: &CmdArgs) {
    if let Some(path) = std::env::var_os(RECORD) {
        let line = format!(
            "{name} {} pid={} ppid={}\n",
            args.command.as_str(),
            std::process::id(),
            std::os::unix::process::parent_id()
        );
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("record file");
        f.write_all(line.as_bytes()).expect("record");
    }
}

/// A delegate whose behaviour its config chooses: `fail` (an error object), `panic` (a
/// message), `log` (a warning), `env` (report what it was given, without `cniVersion`),
/// `result` (a 1.1.0 result, rendered in the config's version by the dispatcher).
#[derive(Default)]
struct Echo;

impl Echo {
    fn run(args: &CmdArgs) -> Result<Option<AddOutput>, CniError> {
        record(<Echo as Plugin>::NAME, args);
        let o = &args.conf.other;
        if let Some(text) = o.get("log").and_then(Value::as_str) {
            log::warn!("{text}");
            log::debug!("debug: {text}");
        }
        if let Some(msg) = o.get("panic").and_then(Value::as_str) {
            panic!("{msg}");
        }
        if let Some(e) = o.get("fail") {
            return Err(serde_json::from_value(e.clone()).expect("a CNI error in the test"));
        }
        if o.get("env").is_some() {
            return Ok(Some(AddOutput::Raw(json!({
                "command": args.command.as_str(),
                "containerID": args.container_id,
                "netns": args.netns,
                "ifname": args.ifname,
                "args": args.raw_args,
                "path": args.path,
                "stdin": String::from_utf8_lossy(&args.stdin),
                "inherited": std::env::var(INHERITED).ok(),
                "netnsOverride": std::env::var("CNI_NETNS_OVERRIDE").ok(),
            }))));
        }
        match o.get("result") {
            Some(r) => Ok(Some(AddOutput::Result(CniResult::from_json(r, "1.1.0")?))),
            None => Ok(None),
        }
    }
}

impl Plugin for Echo {
    const NAME: &'static str = "echo";
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Ok(Echo::run(args)?.unwrap_or(AddOutput::Raw(json!({}))))
    }
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Echo::run(args).map(drop)
    }
    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Echo::run(args).map(drop)
    }
    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        Echo::run(args).map(drop)
    }
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        Echo::run(args).map(drop)
    }
}

/// A meta plugin: runs the command on `delegate` (its config, or `delegateRaw`, bytes as
/// given) through `cni::delegate`; ADD returns what `delegate::add` parsed and the
/// delegate's exact stdout.
#[derive(Default)]
struct Caller;

impl Caller {
    fn delegate(args: &CmdArgs) -> (String, Vec<u8>) {
        let o = &args.conf.other;
        let bytes = match (o.get("delegate"), o.get("delegateRaw")) {
            (Some(d), _) => serde_json::to_vec(d).expect("json"),
            (None, Some(Value::String(raw))) => raw.clone().into_bytes(),
            _ => panic!("caller needs a delegate"),
        };
        let ty = o
            .get("delegateType")
            .and_then(Value::as_str)
            .unwrap_or("echo")
            .to_owned();
        record(<Caller as Plugin>::NAME, args);
        (ty, bytes)
    }
}

impl Plugin for Caller {
    const NAME: &'static str = "caller";
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        let (ty, bytes) = Caller::delegate(args);
        let parsed = cni::delegate::add(&ty, &bytes, args)?;
        let raw = cni::delegate::exec(&ty, Command::Add, &bytes, args)?;
        Ok(AddOutput::Raw(
            json!({"parsed": parsed, "raw": String::from_utf8_lossy(&raw)}),
        ))
    }
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (ty, bytes) = Caller::delegate(args);
        cni::delegate::del(&ty, &bytes, args)
    }
    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (ty, bytes) = Caller::delegate(args);
        cni::delegate::check(&ty, &bytes, args)
    }
    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (ty, bytes) = Caller::delegate(args);
        cni::delegate::status(&ty, &bytes, args)
    }
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (ty, bytes) = Caller::delegate(args);
        cni::delegate::gc(&ty, &bytes, args)
    }
}

static PLUGINS: &[Entry] = &[Entry::of::<Caller>(), Entry::of::<Echo>()];

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(entry) = PLUGINS.iter().find(|e| e.name == name) {
        cni::delegate::register(PLUGINS);
        entry.run();
    }
    // Started by cargo: the tests (`--list` and filters are not supported; they are quick).
    let tests: &[(&str, fn())] = &[
        (
            "every_version_command_and_error_is_byte_identical",
            every_version_command_and_error_is_byte_identical,
        ),
        ("debug_logs_say_which_way", debug_logs_say_which_way),
        ("a_wrapper_script_is_execd", a_wrapper_script_is_execd),
        (
            "a_delegate_panic_is_the_same_error",
            a_delegate_panic_is_the_same_error,
        ),
    ];
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    for (name, test) in tests {
        test();
        println!("test {name} ... ok");
    }
    // libtest's summary line (a failure panics before it, and the run exits non-zero).
    println!(
        "test result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        tests.len()
    );
}

/// The three `CNI_PATH` layouts of one test.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let exe = std::env::current_exe().expect("exe");
        let mkdir = |d: &str| fs::create_dir(root.join(d)).expect("mkdir");
        for d in ["same", "other", "wrapped"] {
            mkdir(d);
        }
        // same/: this build.
        for name in ["caller", "echo"] {
            std::os::unix::fs::symlink(&exe, root.join("same").join(name)).expect("symlink");
        }
        // other/: the same code under another build ID (as a rebuild or another version
        // would have).
        let mut bytes = fs::read(&exe).expect("read exe");
        let id = cni::delegate::build_id::of_file(&exe).expect("a build ID");
        let at = bytes
            .windows(id.len())
            .position(|w| w == id.as_slice())
            .expect("the ID in the file");
        for b in &mut bytes[at..at + id.len()] {
            *b ^= 0xff;
        }
        let other = root.join("other/echo");
        fs::write(&other, &bytes).expect("write copy");
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_ne!(
            cni::delegate::build_id::of_file(&other).as_deref(),
            Some(id.as_slice())
        );
        // wrapped/: a script that records its call and execs this build's echo.
        let script = format!(
            "#!/bin/sh\necho \"wrapper $CNI_COMMAND\" >> \"${RECORD}\"\nexec {} \"$@\"\n",
            root.join("same/echo").display()
        );
        fs::write(root.join("wrapped/echo"), script).expect("write script");
        fs::set_permissions(root.join("wrapped/echo"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        World { _tmp: tmp, root }
    }

    /// The caller (this build), with `CNI_PATH` = `layout`; its output and what ran.
    fn call(&self, layout: &str, command: &str, conf: &Value, env: &[(&str, &str)]) -> Ran {
        let record = self.root.join(format!("record-{layout}"));
        let _ = fs::remove_file(&record);
        let mut p = Process::new(self.root.join("same/caller"));
        p.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ctr-1")
            .env("CNI_NETNS", "/var/run/netns/not-here")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p")
            .env("CNI_PATH", self.root.join(layout))
            .env(RECORD, &record)
            .env(INHERITED, "from the caller's environment")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = p.spawn().expect("spawn caller");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("wait");
        let ran = fs::read_to_string(&record).unwrap_or_default();
        Ran { output, ran }
    }
}

impl World {
    /// Exit status, stdout and stderr as text, the layout's directory written `$CNI_PATH`.
    fn normalized(&self, ran: &Ran, layout: &str) -> String {
        ran.text()
            .replace(&self.root.join(layout).display().to_string(), "$CNI_PATH")
    }
}

struct Ran {
    output: Output,
    /// The record lines: `<plugin> <command> pid=<pid> ppid=<ppid>`.
    ran: String,
}

impl Ran {
    fn pids(&self, plugin: &str) -> Vec<(u32, u32)> {
        self.ran
            .lines()
            .filter(|l| l.starts_with(&format!("{plugin} ")))
            .map(|l| {
                let num = |k: &str| -> u32 {
                    l.split(' ')
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|n| n.parse().ok())
                        .expect("a pid")
                };
                (num("pid="), num("ppid="))
            })
            .collect()
    }

    /// Every delegate run was in the caller's process (`true`) or a child of it (`false`).
    fn delegates_in_process(&self) -> Option<bool> {
        let caller = self.pids("caller");
        let caller_pid = caller.first()?.0;
        let delegates = self.pids("echo");
        if delegates.is_empty() {
            return None;
        }
        let inside = delegates.iter().all(|(pid, _)| *pid == caller_pid);
        let children = delegates.iter().all(|(_, ppid)| *ppid == caller_pid);
        assert!(inside != children, "mixed: {}", self.ran);
        Some(inside)
    }

    fn text(&self) -> String {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.output.status.code(),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// `thread 'main' (1234) panicked` → `thread 'main' (tid) panicked`.
fn without_thread_id(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut out = String::new();
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("thread 'main' (") {
        let start = at + "thread 'main' (".len();
        out.push_str(&rest[..start]);
        let digits = rest[start..].bytes().take_while(u8::is_ascii_digit).count();
        out.push_str("tid");
        rest = &rest[start + digits..];
    }
    out.push_str(rest);
    out
}

fn result_110() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": "10.1.0.254", "mtu": 1400}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    })
}

/// The delegate configs of the comparison, by what they exercise.
fn delegates(version: &str) -> Vec<(&'static str, Value)> {
    let base = |extra: Value| {
        let mut d = json!({"cniVersion": version, "name": "net", "type": "echo"});
        for (k, v) in extra.as_object().expect("object") {
            d[k] = v.clone();
        }
        d
    };
    vec![
        ("result", base(json!({"result": result_110()}))),
        ("env", base(json!({"env": true}))),
        (
            "error object",
            base(json!({"fail": {"code": 11, "msg": "try later", "details": "busy"}})),
        ),
        (
            "error code 0",
            base(json!({"fail": {"code": 0, "msg": "no code"}})),
        ),
        ("log line", base(json!({"log": "a warning from echo"}))),
        (
            "unsupported version",
            json!({"cniVersion": "9.9.9", "name": "net", "type": "echo"}),
        ),
        (
            "bad name",
            json!({"cniVersion": version, "name": "bad name!", "type": "echo"}),
        ),
    ]
}

fn caller_conf(version: &str, delegate: Value) -> Value {
    json!({"cniVersion": version, "name": "net", "type": "caller", "delegate": delegate})
}

fn every_version_command_and_error_is_byte_identical() {
    let w = World::new();
    let mut compared = 0;
    for version in SUPPORTED {
        for command in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
            let mut cases = delegates(version);
            cases.push((
                "not JSON",
                json!({"cniVersion": version, "name": "net", "type": "caller", "delegateRaw": "{not json"}),
            ));
            for (what, delegate) in cases {
                let conf = if delegate.get("delegateRaw").is_some() {
                    delegate
                } else {
                    caller_conf(version, delegate)
                };
                let inside = w.call("same", command, &conf, &[]);
                let outside = w.call("other", command, &conf, &[]);
                let label = format!("{version} {command} {what}");
                // Byte for byte, but for CNI_PATH itself, which differs by layout.
                assert_eq!(
                    w.normalized(&inside, "same"),
                    w.normalized(&outside, "other"),
                    "{label}"
                );
                // The delegate ran (or the caller's own gate refused first), each its way.
                if let Some(way) = inside.delegates_in_process() {
                    assert!(way, "{label}: not in-process: {}", inside.ran);
                    assert_eq!(
                        outside.delegates_in_process(),
                        Some(false),
                        "{label}: {}",
                        outside.ran
                    );
                    compared += 1;
                }
            }
        }
    }
    // The gates (CHECK below 0.4.0, STATUS and GC below 1.1.0) stop some calls in the
    // caller; everything else reached the delegate both ways.
    assert!(compared >= 90, "only {compared} calls reached a delegate");
    // And the comparison can fail: the successful ADD's bytes are the delegate's own.
    let r = w.call(
        "same",
        "ADD",
        &caller_conf(
            "0.3.1",
            json!({"cniVersion":"0.3.1","name":"net","type":"echo","result": result_110()}),
        ),
        &[],
    );
    let out: Value = serde_json::from_slice(&r.output.stdout).expect("json");
    let raw: Value = serde_json::from_str(out["raw"].as_str().expect("raw")).expect("json");
    assert_eq!(raw["cniVersion"], "0.3.1", "{}", r.text());
    assert_eq!(raw["ips"][0]["version"], "4", "0.3.1 shape: {}", r.text());
    // A result without cniVersion gets the config's (libcni fixupResultVersion), both ways.
    let env = w.call(
        "same",
        "ADD",
        &caller_conf(
            "0.4.0",
            json!({"cniVersion":"0.4.0","name":"net","type":"echo","env": true}),
        ),
        &[],
    );
    let out: Value = serde_json::from_slice(&env.output.stdout).expect("json");
    assert_eq!(out["parsed"]["cniVersion"], "0.4.0", "{}", env.text());
    assert_eq!(out["parsed"]["command"], "ADD");
    assert_eq!(out["parsed"]["inherited"], "from the caller's environment");
    assert_eq!(out["parsed"]["path"], json!([w.root.join("same")]));
}

fn debug_logs_say_which_way() {
    let w = World::new();
    let conf = caller_conf(
        "1.0.0",
        json!({"cniVersion":"1.0.0","name":"net","type":"echo","log":"hello"}),
    );
    let debug = [("CNI_LOG_LEVEL", "debug")];
    let inside = w.call("same", "DEL", &conf, &debug);
    let text = String::from_utf8_lossy(&inside.output.stderr).into_owned();
    assert!(
        text.contains("caller: debug: delegating DEL to echo in-process"),
        "{text}"
    );
    // The delegate's lines carry its own name and level.
    assert!(text.contains("echo: warn: hello"), "{text}");
    assert!(text.contains("echo: debug: debug: hello"), "{text}");
    assert!(!text.contains("caller: warn: hello"), "{text}");
    let outside = w.call("other", "DEL", &conf, &debug);
    let text2 = String::from_utf8_lossy(&outside.output.stderr).into_owned();
    assert!(text2.contains("is not this build: exec'd"), "{text2}");
    assert!(text2.contains("echo: warn: hello"), "{text2}");
    // At the default level (warn) both ways print the same: the delegate's warning.
    let quiet = w.call("same", "DEL", &conf, &[]);
    assert_eq!(
        String::from_utf8_lossy(&quiet.output.stderr),
        "echo: warn: hello\n"
    );
}

fn a_wrapper_script_is_execd() {
    let w = World::new();
    for command in ["ADD", "DEL"] {
        let conf = caller_conf(
            "1.1.0",
            json!({"cniVersion":"1.1.0","name":"net","type":"echo","result": result_110()}),
        );
        let wrapped = w.call("wrapped", command, &conf, &[]);
        let inside = w.call("same", command, &conf, &[]);
        assert!(
            wrapped.ran.contains(&format!("wrapper {command}")),
            "{}",
            wrapped.ran
        );
        assert_eq!(
            wrapped.delegates_in_process(),
            Some(false),
            "{}",
            wrapped.ran
        );
        assert_eq!(inside.delegates_in_process(), Some(true), "{}", inside.ran);
        assert_eq!(wrapped.output.stdout, inside.output.stdout);
        assert_eq!(wrapped.output.status.code(), inside.output.status.code());
    }
}

fn a_delegate_panic_is_the_same_error() {
    let w = World::new();
    for version in ["0.3.1", "1.1.0"] {
        let conf = caller_conf(
            version,
            json!({"cniVersion":version,"name":"net","type":"echo","panic":"boom in echo"}),
        );
        let inside = w.call("same", "ADD", &conf, &[]);
        let outside = w.call("other", "ADD", &conf, &[]);
        assert_eq!(inside.output.status.code(), Some(1), "{}", inside.text());
        let e: Value = serde_json::from_slice(&inside.output.stdout).expect("an error object");
        assert_eq!(e["code"], 999);
        assert_eq!(e["msg"], "plugin panicked");
        assert_eq!(e["details"], "boom in echo");
        assert_eq!(inside.output.stdout, outside.output.stdout);
        // The panic message names the thread by its id: the caller's main thread (the
        // caller's pid) in-process, the child's main thread when exec'd. Nothing else differs.
        let (a, b) = (
            without_thread_id(&inside.output.stderr),
            without_thread_id(&outside.output.stderr),
        );
        assert!(a.contains("thread 'main' (tid) panicked at"), "{a}");
        assert_eq!(a, b);
        assert_eq!(inside.delegates_in_process(), Some(true));
        // The caller goes on after its delegate's panic: its own record line came first,
        // and it answered with the delegate's error.
        assert_eq!(inside.pids("caller").len(), 1);
    }
}
