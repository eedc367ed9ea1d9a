//! Dispatcher tests, driven through injected env/stdin/stdout/stderr with a fake plugin.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::result::IpConfig;
use crate::version::SUPPORTED;

/// (command, container ID, netns, ifname, path, version) of one call.
type Call = (
    Command,
    String,
    Option<PathBuf>,
    String,
    Vec<PathBuf>,
    String,
);

/// Records what it was called with; fails with `fail_with`; ADD returns `raw` if set.
#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<Call>>,
    fail_with: Option<CniError>,
    raw: Option<Value>,
    /// Panics with this message when called.
    panic_with: Option<&'static str>,
}

impl Fake {
    fn record(&self, a: &CmdArgs) -> Result<(), CniError> {
        self.calls.borrow_mut().push((
            a.command,
            a.container_id.clone(),
            a.netns.clone(),
            a.ifname.clone(),
            a.path.clone(),
            a.version.as_str(),
        ));
        if let Some(msg) = self.panic_with {
            panic!("{msg}");
        }
        match &self.fail_with {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Plugin for Fake {
    const NAME: &'static str = "fake";
    fn add(&self, a: &CmdArgs) -> Result<AddOutput, CniError> {
        self.record(a)?;
        if let Some(v) = &self.raw {
            return Ok(AddOutput::Raw(v.clone()));
        }
        let mut ip = IpConfig::new("10.1.0.5/24".parse().map_err(|_| CniError::internal("x"))?);
        ip.gateway = Some("10.1.0.1".parse().map_err(|_| CniError::internal("x"))?);
        Ok(CniResult {
            ips: vec![ip],
            ..CniResult::default()
        }
        .into())
    }
    fn del(&self, a: &CmdArgs) -> Result<(), CniError> {
        self.record(a)
    }
    fn check(&self, a: &CmdArgs) -> Result<(), CniError> {
        self.record(a)
    }
    fn status(&self, a: &CmdArgs) -> Result<(), CniError> {
        self.record(a)
    }
    fn gc(&self, a: &CmdArgs) -> Result<(), CniError> {
        self.record(a)
    }
}

fn info() -> PluginInfo {
    PluginInfo {
        about: "CNI fake plugin rcni v0.1.0".into(),
        supported: SUPPORTED,
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap()
    }
    /// Asserts an error outcome and returns (code, msg, details).
    fn error(&self) -> (u64, String, String) {
        assert_eq!(self.code, 1, "stdout: {}", self.stdout);
        let v = self.json();
        assert!(v.get("cniVersion").is_none());
        (
            v["code"].as_u64().unwrap(),
            v["msg"].as_str().unwrap().to_string(),
            v.get("details")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_string(),
        )
    }
}

fn run_with(plugin: &Fake, env: &[(&str, &str)], stdin: &str) -> Outcome {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| env.get(k).cloned();
    let mut input = stdin.as_bytes();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = dispatch_guarded(plugin, &info(), &lookup, &mut input, &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn run(env: &[(&str, &str)], stdin: &str) -> Outcome {
    run_with(&Fake::default(), env, stdin)
}

const CONF: &str = r#"{"cniVersion":"1.1.0","name":"net1","type":"fake"}"#;

fn conf(version: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"net1","type":"fake"}}"#)
}

fn full_env(cmd: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", "/var/run/netns/nonexistent-rcni-test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ]
}

fn with(
    mut env: Vec<(&'static str, &'static str)>,
    k: &'static str,
    v: &'static str,
) -> Vec<(&'static str, &'static str)> {
    env.retain(|(name, _)| *name != k);
    env.push((k, v));
    env
}

fn without(
    mut env: Vec<(&'static str, &'static str)>,
    k: &str,
) -> Vec<(&'static str, &'static str)> {
    env.retain(|(name, _)| *name != k);
    env
}

#[test]
fn add_prints_result_in_config_version() {
    let fake = Fake::default();
    let o = run_with(&fake, &full_env("ADD"), &conf("0.3.1"));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(
        o.json(),
        json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.5/24",
               "gateway": "10.1.0.1"}], "dns": {}})
    );
    // Go-like 4-space indentation.
    assert!(o.stdout.contains("\n    \"cniVersion\""), "{}", o.stdout);
    let calls = fake.calls.borrow();
    assert_eq!(calls.len(), 1);
    let (cmd, cid, netns, ifname, path, version) = &calls[0];
    assert_eq!(*cmd, Command::Add);
    assert_eq!(cid, "ctr1");
    assert_eq!(
        netns.as_deref(),
        Some(std::path::Path::new("/var/run/netns/nonexistent-rcni-test"))
    );
    assert_eq!(ifname, "eth0");
    assert_eq!(
        path,
        &vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
    assert_eq!(version, "0.3.1");
}

#[test]
fn add_without_version_is_010() {
    let fake = Fake::default();
    let o = run_with(&fake, &full_env("ADD"), r#"{"name":"net1","type":"fake"}"#);
    assert_eq!(o.code, 0);
    assert_eq!(o.json()["cniVersion"], "0.1.0");
    assert_eq!(o.json()["ip4"]["ip"], "10.1.0.5/24");
    assert_eq!(fake.calls.borrow()[0].5, "0.1.0");
}

#[test]
fn add_raw_output_is_printed_as_is() {
    let raw = json!({"cniVersion": "0.3.1", "whatever": [1, 2]});
    let fake = Fake {
        raw: Some(raw.clone()),
        ..Fake::default()
    };
    let o = run_with(&fake, &full_env("ADD"), &conf("1.0.0"));
    assert_eq!(o.code, 0);
    assert_eq!(o.json(), raw);
}

#[test]
fn plugin_error_is_printed_with_its_code() {
    let fake = Fake {
        fail_with: Some(CniError::new(11, "busy").with_details("try later")),
        ..Fake::default()
    };
    for cmd in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
        let o = run_with(&fake, &full_env(cmd), CONF);
        assert_eq!(o.error(), (11, "busy".into(), "try later".into()), "{cmd}");
    }
}

#[test]
fn del_check_status_gc_print_nothing() {
    for cmd in ["DEL", "CHECK", "STATUS", "GC"] {
        let fake = Fake::default();
        let o = run_with(&fake, &full_env(cmd), CONF);
        assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{cmd}");
        assert_eq!(fake.calls.borrow().len(), 1, "{cmd}");
    }
}

#[test]
fn missing_env_vars_are_listed_together() {
    let o = run(&[("CNI_COMMAND", "ADD")], CONF);
    assert_eq!(
        o.error(),
        (
            4,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing".into(),
            String::new()
        )
    );
    let o = run(
        &without(without(full_env("ADD"), "CNI_NETNS"), "CNI_PATH"),
        CONF,
    );
    assert_eq!(
        o.error().1,
        "required env variables [CNI_NETNS,CNI_PATH] missing"
    );
    // An empty value counts as missing.
    let o = run(&with(full_env("CHECK"), "CNI_IFNAME", ""), CONF);
    assert_eq!(o.error().1, "required env variables [CNI_IFNAME] missing");
}

#[test]
fn del_does_not_need_netns() {
    let fake = Fake::default();
    let o = run_with(&fake, &without(full_env("DEL"), "CNI_NETNS"), CONF);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(fake.calls.borrow()[0].2, None);
}

#[test]
fn status_and_gc_need_only_command_and_path() {
    for cmd in ["STATUS", "GC"] {
        let fake = Fake::default();
        let o = run_with(
            &fake,
            &[("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")],
            CONF,
        );
        assert_eq!(o.code, 0, "{cmd}: {}", o.stdout);
        assert_eq!(fake.calls.borrow()[0].1, "");
        let o = run(&[("CNI_COMMAND", cmd)], CONF);
        assert_eq!(o.error().1, "required env variables [CNI_PATH] missing");
    }
    // Garbage in the variables STATUS does not use is not validated.
    let o = run(
        &[
            ("CNI_COMMAND", "STATUS"),
            ("CNI_PATH", "/x"),
            ("CNI_CONTAINERID", "bad id"),
            ("CNI_IFNAME", "a/b"),
        ],
        CONF,
    );
    assert_eq!(o.code, 0);
}

#[test]
fn bad_container_id() {
    let o = run(&with(full_env("ADD"), "CNI_CONTAINERID", "bad/id"), CONF);
    assert_eq!(
        o.error(),
        (
            4,
            "invalid characters in containerID".into(),
            "bad/id".into()
        )
    );
    // Go validates while walking the table: this comes before the missing-variable report.
    let o = run(
        &without(with(full_env("DEL"), "CNI_CONTAINERID", "-x"), "CNI_PATH"),
        CONF,
    );
    assert_eq!(o.error().1, "invalid characters in containerID");
}

#[test]
fn bad_ifname() {
    let cases = [
        (
            "eth0123456789abc",
            "interface name is too long",
            "interface name should be less than 16 characters",
        ),
        ("..", "interface name is . or ..", ""),
        (
            "eth 0",
            "interface name contains / or : or whitespace characters",
            "",
        ),
        (
            "eth:0",
            "interface name contains / or : or whitespace characters",
            "",
        ),
    ];
    for (name, msg, details) in cases {
        let o = run(&with(full_env("ADD"), "CNI_IFNAME", name), CONF);
        assert_eq!(o.error(), (4, msg.into(), details.into()), "{name}");
    }
}

#[test]
fn bad_json() {
    let o = run(&full_env("ADD"), "{not json");
    let (c, msg, _) = o.error();
    assert_eq!(c, 6);
    assert!(
        msg.starts_with("error unmarshall network config: "),
        "{msg}"
    );
    let o = run(&full_env("ADD"), "");
    assert_eq!(o.error().0, 6);
    let o = run(&full_env("ADD"), "[1]");
    assert_eq!(o.error().0, 6);
    // Wrong type for a shared key.
    let o = run(&full_env("ADD"), r#"{"name":"n","ipam":"x"}"#);
    assert_eq!(o.error().0, 6);
}

#[test]
fn bad_network_name() {
    let o = run(&full_env("ADD"), r#"{"cniVersion":"1.0.0","type":"fake"}"#);
    assert_eq!(o.error(), (7, "missing network name".into(), String::new()));
    let o = run(&full_env("ADD"), r#"{"cniVersion":"1.0.0","name":"a b"}"#);
    assert_eq!(
        o.error(),
        (
            7,
            "invalid characters found in network name".into(),
            "a b".into()
        )
    );
}

#[test]
fn version_mismatch() {
    let o = run(&full_env("ADD"), &conf("9.9.9"));
    assert_eq!(
        o.error(),
        (
            1,
            "incompatible CNI versions".into(),
            r#"config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#.into()
        )
    );
    // Not parseable at all: still "incompatible" for ADD/DEL (Go reconciles by string).
    assert_eq!(run(&full_env("DEL"), &conf("abc")).error().0, 1);
    // Not parseable for CHECK: decoding failure, with Go's message.
    let (c, msg, _) = run(&full_env("CHECK"), &conf("abc")).error();
    assert_eq!(c, 6);
    assert!(
        msg.starts_with("failed to convert major version part \"abc\""),
        "{msg}"
    );
    // A config newer than anything the plugin supports.
    assert_eq!(
        run(&full_env("CHECK"), &conf("9.9.9")).error().1,
        "plugin version does not allow CHECK"
    );
    assert_eq!(
        run(&full_env("GC"), &conf("9.9.9")).error().1,
        "plugin version does not allow GC"
    );
}

#[test]
fn check_needs_040() {
    let fake = Fake::default();
    let o = run_with(&fake, &full_env("CHECK"), &conf("0.3.1"));
    assert_eq!(
        o.error(),
        (
            1,
            "config version does not allow CHECK".into(),
            String::new()
        )
    );
    assert!(fake.calls.borrow().is_empty());
    assert_eq!(run(&full_env("CHECK"), &conf("0.4.0")).code, 0);
}

#[test]
fn status_and_gc_need_110() {
    for cmd in ["STATUS", "GC"] {
        let o = run(&full_env(cmd), &conf("1.0.0"));
        assert_eq!(
            o.error(),
            (
                1,
                format!("config version does not allow {cmd}"),
                String::new()
            )
        );
    }
}

#[test]
fn unknown_command() {
    let o = run(&[("CNI_COMMAND", "FOO")], CONF);
    assert_eq!(
        o.error(),
        (4, "unknown CNI_COMMAND: FOO".into(), String::new())
    );
    // Commands are case-sensitive, as in Go.
    assert_eq!(
        run(&full_env("add"), CONF).error().1,
        "unknown CNI_COMMAND: add"
    );
}

#[test]
fn no_command_prints_about() {
    let o = run(&[], "");
    assert_eq!((o.code, o.stdout.as_str()), (0, ""));
    assert_eq!(
        o.stderr,
        "CNI fake plugin rcni v0.1.0\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
    );
    // Without an about text, Go reports the missing variable.
    let mut input: &[u8] = b"";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let info = PluginInfo {
        about: String::new(),
        supported: SUPPORTED,
    };
    let code = dispatch(
        &Fake::default(),
        &info,
        &|_| None,
        &mut input,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["msg"], "required env variables [CNI_COMMAND] missing");
}

#[test]
fn version_command() {
    // stdin is ignored, even when it is not JSON.
    let o = run(&[("CNI_COMMAND", "VERSION")], "garbage");
    assert_eq!(o.code, 0);
    assert_eq!(
        o.stdout,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
}

#[test]
fn plugin_supported_list_is_honoured() {
    let info = PluginInfo {
        about: "x".into(),
        supported: &["1.0.0"],
    };
    let env = full_env("ADD");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let input = conf("0.4.0");
    let mut input = input.as_bytes();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = dispatch(
        &Fake::default(),
        &info,
        &lookup,
        &mut input,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["details"],
        r#"config is "0.4.0", plugin supports ["1.0.0"]"#
    );
}

#[test]
fn own_netns_is_refused() {
    let fake = Fake::default();
    let o = run_with(
        &fake,
        &with(full_env("ADD"), "CNI_NETNS", "/proc/self/ns/net"),
        CONF,
    );
    assert_eq!(
        o.error(),
        (
            8,
            "plugin's netns and netns from CNI_NETNS should not be the same".into(),
            String::new()
        )
    );
    assert!(fake.calls.borrow().is_empty());
    for ov in ["1", "TRUE", "true"] {
        let env = with(
            with(full_env("ADD"), "CNI_NETNS", "/proc/self/ns/net"),
            "CNI_NETNS_OVERRIDE",
            ov,
        );
        assert_eq!(run(&env, CONF).code, 0, "{ov}");
    }
}

#[test]
fn cni_args_are_parsed_leniently() {
    struct ArgsPlugin;
    impl Plugin for ArgsPlugin {
        const NAME: &'static str = "args";
        fn add(&self, a: &CmdArgs) -> Result<AddOutput, CniError> {
            a.args.check_known(&["IP"])?;
            Ok(CniResult::default().into())
        }
        fn del(&self, a: &CmdArgs) -> Result<(), CniError> {
            // DEL ignores CNI_ARGS, so a malformed pair must not fail it.
            assert_eq!(a.raw_args, "IP=1.2.3.4;junk");
            assert_eq!(a.args.get("IP"), Some("1.2.3.4"));
            Ok(())
        }
        fn check(&self, _a: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
    }
    let env = with(full_env("DEL"), "CNI_ARGS", "IP=1.2.3.4;junk");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = dispatch(
        &ArgsPlugin,
        &info(),
        &lookup,
        &mut CONF.as_bytes(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0);
    let env = with(full_env("ADD"), "CNI_ARGS", "IP=1.2.3.4;K8S_POD_NAME=x");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let code = dispatch(
        &ArgsPlugin,
        &info(),
        &lookup,
        &mut CONF.as_bytes(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["msg"], r#"ARGS: unknown args ["K8S_POD_NAME=x"]"#);
}

#[test]
fn failed_stdout_write_is_reported() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let env = full_env("ADD");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let mut err = Vec::new();
    let code = dispatch(
        &Fake::default(),
        &info(),
        &lookup,
        &mut CONF.as_bytes(),
        &mut Broken,
        &mut err,
    );
    assert_eq!(code, 1);
    assert!(String::from_utf8_lossy(&err).contains("closed"));
}

#[test]
fn unreadable_stdin_is_io_failure() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("gone"))
        }
    }
    let env = full_env("ADD");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = dispatch(
        &Fake::default(),
        &info(),
        &lookup,
        &mut Broken,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["code"], 5);
    assert_eq!(v["msg"], "error reading from stdin: gone");
}

#[test]
fn a_panic_is_a_cni_error_object() {
    for cmd in ["ADD", "DEL", "CHECK"] {
        let fake = Fake {
            panic_with: Some("index out of bounds"),
            ..Fake::default()
        };
        let o = run_with(&fake, &full_env(cmd), CONF);
        assert_eq!(
            o.error(),
            (
                999,
                "plugin panicked".to_owned(),
                "index out of bounds".to_owned()
            ),
            "{cmd}"
        );
        assert_eq!(fake.calls.borrow().len(), 1, "{cmd}: the plugin ran");
    }
}
