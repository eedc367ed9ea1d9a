//! The binary answers under every name it holds, started through a symlink, a hard link or
//! by subcommand, and the same way each time. No root needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_rcni");
const PLUGINS: [&str; 5] = ["bridge", "flannel", "host-local", "loopback", "portmap"];
const VERSIONS: &str = r#"["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;

/// `name` in a temp dir as a symlink to the binary (`link`) or a hard link.
fn installed(dir: &Path, name: &str, symlink: bool) -> PathBuf {
    let p = dir.join(name);
    if symlink {
        std::os::unix::fs::symlink(EXE, &p).expect("symlink");
    } else {
        fs::hard_link(EXE, &p).expect("hard link");
    }
    p
}

/// A command with an empty environment (set the variables after this).
fn cmd(path: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(path);
    c.env_clear();
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_plugin_answers_under_its_name() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    for (i, symlink) in [true, false].into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        fs::create_dir(&dir).expect("mkdir");
        for name in PLUGINS {
            let path = installed(&dir, name, symlink);
            let v = run(cmd(&path).env("CNI_COMMAND", "VERSION"));
            assert_eq!(v.status.code(), Some(0), "{name}");
            assert_eq!(
                text(&v.stdout),
                format!("{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":{VERSIONS}}}\n")
            );
            // No CNI_COMMAND: the plugin's about text, as the reference prints it.
            let about = run(&mut cmd(&path));
            assert_eq!(about.status.code(), Some(0));
            assert!(about.stdout.is_empty());
            assert_eq!(
                text(&about.stderr),
                format!(
                    "CNI {name} plugin rcni v{}\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
                    env!("CARGO_PKG_VERSION")
                )
            );
            // A CNI error is the plugin's, with its exit code.
            let bad = run(cmd(&path).env("CNI_COMMAND", "ADD"));
            assert_eq!(bad.status.code(), Some(1), "{name}");
            assert!(
                text(&bad.stdout).contains("required env variables"),
                "{name}: {}",
                text(&bad.stdout)
            );
            // The subcommand form is the same program, byte for byte.
            for (env, out) in [(Some("VERSION"), &v), (None, &about), (Some("ADD"), &bad)] {
                let mut sub = cmd(EXE);
                sub.arg(name);
                if let Some(c) = env {
                    sub.env("CNI_COMMAND", c);
                }
                let sub = run(&mut sub);
                assert_eq!(
                    (sub.status.code(), &sub.stdout, &sub.stderr),
                    (out.status.code(), &out.stdout, &out.stderr),
                    "rcni {name}"
                );
            }
        }
    }
}

#[test]
fn the_tools_answer_under_their_names() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    for (name, version) in [
        ("install-cni", "install-cni rcni v"),
        ("rcni-doctor", "rcni-doctor rcni v"),
    ] {
        let path = installed(tmp.path(), name, true);
        let out = run(cmd(&path).arg("--version"));
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert!(
            text(&out.stdout).starts_with(version),
            "{}",
            text(&out.stdout)
        );
        let sub = run(cmd(EXE).args([name, "--version"]));
        assert_eq!(sub.stdout, out.stdout);
        let help = run(cmd(&path).arg("--help"));
        assert_eq!(help.status.code(), Some(0));
        assert!(
            text(&help.stdout).contains(&format!("usage: {name}")),
            "{}",
            text(&help.stdout)
        );
        let bad = run(cmd(&path).arg("--no-such-flag"));
        assert_eq!(bad.status.code(), Some(2), "{name}");
    }
}

#[test]
fn an_unknown_name_is_refused() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = installed(tmp.path(), "bandwidth", true);
    // A runtime calling it gets a CNI error object.
    let out = run(cmd(&path).env("CNI_COMMAND", "ADD"));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(v["code"], 7);
    assert_eq!(v["msg"], "rcni holds no plugin named \"bandwidth\"");
    // A person gets the usage.
    let out = run(&mut cmd(&path));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no program named \"bandwidth\""));
    let out = run(&mut cmd(EXE));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("bridge, flannel, host-local, loopback, portmap, install-cni, rcni-doctor")
    );
    let out = run(cmd(EXE).arg("--help"));
    assert_eq!(out.status.code(), Some(0));
}
