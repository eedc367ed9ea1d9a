//! Delegation tests with tiny shell-script delegates in a temporary CNI_PATH.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::args::CniArgs;
use crate::config::NetConf;
use crate::version::SpecVersion;

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn cmd_args(path: Vec<PathBuf>) -> CmdArgs {
    CmdArgs {
        command: Command::Add,
        container_id: "ctr1".into(),
        netns: Some(PathBuf::from("/var/run/netns/x")),
        ifname: "eth0".into(),
        args: CniArgs::parse("IgnoreUnknown=1").unwrap(),
        raw_args: "IgnoreUnknown=1".into(),
        path,
        stdin: Vec::new(),
        conf: NetConf::default(),
        version: SpecVersion::V1_0_0,
    }
}

/// Prints everything it received as a result.
const ECHO: &str = r#"input=$(cat)
printf '{"cniVersion":"1.0.0","cmd":"%s","cid":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","stdin":%s}' \
  "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$input""#;

#[test]
fn find_in_path_rules() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let want = write_script(b.path(), "host-local", "exit 0");
    fs::create_dir(a.path().join("host-local")).unwrap(); // a directory is not a plugin
    let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
    assert_eq!(find_in_path("host-local", &dirs).unwrap(), want);

    let e = find_in_path("nope", &dirs).unwrap_err();
    assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
    assert_eq!(
        e.msg,
        format!(
            "failed to find plugin \"nope\" in path [{} {}]",
            a.path().display(),
            b.path().display()
        )
    );
    assert_eq!(
        find_in_path("", &dirs).unwrap_err().msg,
        "no plugin name provided"
    );
    assert_eq!(
        find_in_path("../x", &dirs).unwrap_err().msg,
        "invalid plugin name: ../x"
    );
    assert_eq!(find_in_path("x", &[]).unwrap_err().msg, "no paths provided");
}

#[test]
fn add_passes_env_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "echo", ECHO);
    let args = cmd_args(vec![
        dir.path().to_path_buf(),
        PathBuf::from("/opt/cni/bin"),
    ]);
    let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"echo"}"#;
    let out = add("echo", conf, &args).unwrap();
    assert_eq!(
        out,
        json!({
            "cniVersion": "1.0.0",
            "cmd": "ADD",
            "cid": "ctr1",
            "netns": "/var/run/netns/x",
            "ifname": "eth0",
            "args": "IgnoreUnknown=1",
            "path": format!("{}:/opt/cni/bin", dir.path().display()),
            "stdin": {"cniVersion": "1.0.0", "name": "n", "type": "echo"}
        })
    );
}

#[test]
fn empty_values_are_unset_for_the_delegate() {
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "env",
        r#"cat >/dev/null
printf '{"netns":"%s","cid":"%s"}' "${CNI_NETNS-unset}" "${CNI_CONTAINERID-unset}""#,
    );
    let mut args = cmd_args(vec![dir.path().to_path_buf()]);
    args.netns = None;
    args.container_id = String::new();
    let out = add("env", br#"{"cniVersion":"0.4.0"}"#, &args).unwrap();
    // A missing cniVersion is filled from the config (libcni fixupResultVersion).
    assert_eq!(
        out,
        json!({"netns": "unset", "cid": "unset", "cniVersion": "0.4.0"})
    );
}

#[test]
fn other_commands_set_cni_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    write_script(
        dir.path(),
        "rec",
        &format!("cat >/dev/null\necho \"$CNI_COMMAND\" >> {}", log.display()),
    );
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    del("rec", b"{}", &args).unwrap();
    check("rec", b"{}", &args).unwrap();
    status("rec", b"{}", &args).unwrap();
    gc("rec", b"{}", &args).unwrap();
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "DEL\nCHECK\nSTATUS\nGC\n"
    );
}

#[test]
fn delegate_error_keeps_its_code() {
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "fail",
        r#"cat >/dev/null
printf '{"code":7,"msg":"bad range","details":"10.0.0.0/33"}'
exit 1"#,
    );
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    let e = add("fail", b"{}", &args).unwrap_err();
    assert_eq!(e, CniError::new(7, "bad range").with_details("10.0.0.0/33"));
    assert_eq!(del("fail", b"{}", &args).unwrap_err().code, 7);
}

#[test]
fn delegate_failure_without_stdout() {
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "stderr",
        "cat >/dev/null\necho boom >&2\nexit 2",
    );
    write_script(dir.path(), "silent", "exit 3");
    write_script(dir.path(), "garbage", "echo 'not json'\nexit 1");
    write_script(dir.path(), "zero", "printf '{\"msg\":\"no code\"}'\nexit 1");
    let args = cmd_args(vec![dir.path().to_path_buf()]);

    let e = add("stderr", b"{}", &args).unwrap_err();
    assert_eq!(e, CniError::internal("netplugin failed: \"boom\\n\""));
    let e = del("silent", b"{}", &args).unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    assert!(
        e.msg
            .starts_with("netplugin failed with no error message: exit status: 3"),
        "{}",
        e.msg
    );
    let e = del("garbage", b"{}", &args).unwrap_err();
    assert!(
        e.msg.starts_with(
            "netplugin failed but error parsing its diagnostic message \"not json\\n\""
        ),
        "{}",
        e.msg
    );
    assert_eq!(
        del("zero", b"{}", &args).unwrap_err(),
        CniError::internal("no code")
    );
}

#[test]
fn add_with_bad_result() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "bad", "cat >/dev/null\necho '[1]'");
    write_script(dir.path(), "empty", "cat >/dev/null");
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    assert_eq!(
        add("bad", b"{}", &args).unwrap_err().code,
        code::DECODING_FAILURE
    );
    assert_eq!(
        add("empty", b"{}", &args).unwrap_err().code,
        code::DECODING_FAILURE
    );
    // DEL ignores stdout on success.
    del("bad", b"{}", &args).unwrap();
}

#[test]
fn delegate_that_ignores_stdin() {
    // The delegate exits without reading a large stdin: no hang, no EPIPE failure.
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "quick", "printf '{}'");
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    let big = vec![b' '; 1 << 20];
    assert_eq!(add("quick", &big, &args).unwrap()["cniVersion"], "0.1.0");
}

/// A plugin file still open for writing cannot be executed (ETXTBSY).
fn busy_plugin(dir: &std::path::Path) -> (std::path::PathBuf, fs::File) {
    let p = dir.join("busy");
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
    f.flush().unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    (p, f)
}

#[test]
fn text_file_busy_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _writer) = busy_plugin(dir.path());
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    // Busy for the whole call: every retry is taken, with a doubling wait, then reported.
    let mut waits = Vec::new();
    let e = exec_retrying(&p, Command::Del, b"{}", &args, &mut |d| waits.push(d)).unwrap_err();
    assert_eq!(e.code, code::IO_FAILURE);
    assert!(e.msg.contains("busy"), "{}", e.msg);
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [50, 100, 200, 400, 800]);
}

#[test]
fn text_file_busy_clears_on_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (p, writer) = busy_plugin(dir.path());
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    // The installer finishes its copy during the first wait: the retry runs the plugin.
    let mut writer = Some(writer);
    let mut waits = 0;
    exec_retrying(&p, Command::Del, b"{}", &args, &mut |_| {
        waits += 1;
        writer.take();
    })
    .unwrap();
    // At least one retry; more only if a process forked by a parallel test briefly held the
    // write end (fork before exec), which is what the retries are for.
    assert!(waits >= 1, "no retry");
}

#[test]
fn unexecutable_plugin_is_io_failure() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("noexec"), "#!/bin/sh\n").unwrap();
    let args = cmd_args(vec![dir.path().to_path_buf()]);
    let e = del("noexec", b"{}", &args).unwrap_err();
    assert_eq!(e.code, code::IO_FAILURE);
    assert!(e.msg.starts_with("failed to execute plugin "), "{}", e.msg);
}
