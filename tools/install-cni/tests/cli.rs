//! The install-cni binary against temporary directories: what lands where, with which
//! mode, that nothing half-written is ever left, that a bad config is refused, and the
//! `--sleep` signal handling. No root needed.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_install-cni");

/// The default plugins, as a sorted directory listing shows them.
const INSTALLED: [&str; 6] = [
    "bridge",
    "flannel",
    "host-local",
    "loopback",
    "portmap",
    "rcni-doctor",
];

const GOOD_CONF: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } }
  ]
}
"#;

/// A source dir with fake plugins, a config file, and empty bin/conf target dirs.
struct World {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
    conf_file: PathBuf,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        for p in install_cni::args::DEFAULT_PLUGINS {
            fs::write(src.join(p), format!("#!/bin/sh\necho {p}\n")).expect("write");
        }
        let conf_file = tmp.path().join("cni-conf.json");
        fs::write(&conf_file, GOOD_CONF).expect("write");
        World {
            src,
            bin: tmp.path().join("opt/cni/bin"),
            conf: tmp.path().join("etc/cni/net.d"),
            conf_file,
            _tmp: tmp,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("--src-dir={}", self.src.display()),
            format!("--bin-dir={}", self.bin.display()),
            format!("--conf-dir={}", self.conf.display()),
            format!("--conf-file={}", self.conf_file.display()),
        ]
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run(&args)
    }
}

fn run(args: &[String]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_clear()
        .output()
        .expect("run install-cni")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Puts the install-cni executable at `dest` without ever opening it for writing: a copy
/// would race with the fork+exec of other tests (the forked child holds the write fd until
/// it execs, and exec of a file open for writing fails with ETXTBSY). A hard link needs the
/// same filesystem, hence the worlds of these tests live in `CARGO_TARGET_TMPDIR`.
fn link_exe(dest: &Path) {
    fs::hard_link(EXE, dest).expect("hard link install-cni");
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn installs_binaries_and_config_then_is_idempotent() {
    let w = World::new();
    let out = w.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), INSTALLED);
    assert_eq!(entries(&w.conf), ["10-flannel.conflist"]);
    for p in ["bridge", "flannel", "host-local", "loopback", "portmap"] {
        assert_eq!(
            fs::read(w.bin.join(p)).expect("read"),
            fs::read(w.src.join(p)).expect("read")
        );
        assert_eq!(mode(&w.bin.join(p)), 0o755, "{p}");
    }
    let conf = w.conf.join("10-flannel.conflist");
    assert_eq!(fs::read_to_string(&conf).expect("read"), GOOD_CONF);
    assert_eq!(mode(&conf), 0o644);
    assert_eq!(
        stderr(&out).matches("installed").count(),
        7,
        "{}",
        stderr(&out)
    );

    let inodes: Vec<u64> = ["flannel", "bridge"]
        .iter()
        .map(|p| fs::metadata(w.bin.join(p)).expect("meta").ino())
        .collect();
    let again = w.run(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stderr(&again).matches("up to date").count(),
        7,
        "{}",
        stderr(&again)
    );
    let after: Vec<u64> = ["flannel", "bridge"]
        .iter()
        .map(|p| fs::metadata(w.bin.join(p)).expect("meta").ino())
        .collect();
    assert_eq!(inodes, after, "an identical file must not be rewritten");
}

#[test]
fn changed_source_replaces_target_by_rename() {
    let w = World::new();
    assert!(w.run(&[]).status.success());
    let before = fs::metadata(w.bin.join("flannel")).expect("meta").ino();
    fs::write(w.src.join("flannel"), "#!/bin/sh\necho v2\n").expect("write");
    let out = w.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(w.bin.join("flannel")).expect("read"),
        "#!/bin/sh\necho v2\n"
    );
    assert_ne!(
        fs::metadata(w.bin.join("flannel")).expect("meta").ino(),
        before
    );
    assert_eq!(
        stderr(&out).matches("installed").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&w.bin), INSTALLED);
}

#[test]
fn bad_config_is_refused_and_nothing_is_installed() {
    let w = World::new();
    fs::create_dir_all(&w.conf).expect("mkdir");
    fs::write(w.conf.join("10-flannel.conflist"), GOOD_CONF).expect("write");
    for bad in [
        "{\"name\":\"cbr0\",\"plugins\":[{\"type\":\"flannel\"}]",
        "",
        "{\"name\":\"cbr0\",\"type\":\"flannel\"}",
        "{\"name\":\"cbr0\",\"plugins\":[{\"type\":\"flannel\",\"delegate\":{\"name\":\"x\"}}]}",
    ] {
        fs::write(&w.conf_file, bad).expect("write");
        let out = w.run(&[]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to install"),
            "{}",
            stderr(&out)
        );
        assert!(!w.bin.exists(), "binaries installed despite a bad config");
        assert_eq!(entries(&w.conf), ["10-flannel.conflist"]);
        assert_eq!(
            fs::read_to_string(w.conf.join("10-flannel.conflist")).expect("read"),
            GOOD_CONF,
            "the working config must stay"
        );
    }
}

#[test]
fn missing_or_empty_plugin_fails_before_installing_anything() {
    let w = World::new();
    fs::remove_file(w.src.join("flannel")).expect("rm");
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("plugin \"flannel\" not found"),
        "{}",
        stderr(&out)
    );
    assert!(!w.bin.exists() && !w.conf.exists());

    fs::write(w.src.join("flannel"), "").expect("write");
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    assert!(!w.bin.exists() && !w.conf.exists());
}

#[test]
fn missing_config_file_fails() {
    let w = World::new();
    fs::remove_file(&w.conf_file).expect("rm");
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert!(!w.bin.exists());
}

#[test]
fn modes_do_not_depend_on_the_umask() {
    let w = World::new();
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" \"$@\"")
        .arg(EXE)
        .args(w.args())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&w.bin.join("flannel")), 0o755);
    assert_eq!(mode(&w.conf.join("10-flannel.conflist")), 0o644);
}

#[test]
fn plugin_subset_no_conf_and_conf_name() {
    let w = World::new();
    let out = w.run(&["--plugins", "flannel", "--no-conf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), ["flannel"]);
    assert!(!w.conf.exists());

    let out = w.run(&["--plugins=", "--conf-name", "50-x.conflist"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.conf), ["50-x.conflist"]);

    // A single-plugin config under a .conflist name is refused (the runtime could not load it).
    fs::write(
        &w.conf_file,
        r#"{"cniVersion":"0.3.1","name":"f","type":"flannel"}"#,
    )
    .expect("write");
    let out = w.run(&["--plugins="]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = w.run(&["--plugins=", "--conf-name=10-flannel.conf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.conf), ["10-flannel.conf", "50-x.conflist"]);
}

#[test]
fn warns_about_plugins_missing_from_bin_dir() {
    let w = World::new();
    fs::write(
        &w.conf_file,
        r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel"},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#,
    )
    .expect("write");
    let out = w.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"bandwidth\", which is not in"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("\"flannel\", which"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn default_source_dir_is_the_executables_directory() {
    let w = World::new();
    link_exe(&w.src.join("install-cni"));
    let out = Command::new(w.src.join("install-cni"))
        .arg(format!("--bin-dir={}", w.bin.display()))
        .arg("--no-conf")
        .env_clear()
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), INSTALLED);
}

#[test]
fn a_running_binary_is_replaced() {
    // `cp -f` onto a binary that is executing fails with ETXTBSY ("Text file busy");
    // a rename does not.
    let w = World::new();
    fs::create_dir_all(&w.bin).expect("mkdir");
    link_exe(&w.bin.join("flannel"));
    let mut busy = Command::new(w.bin.join("flannel"))
        .args(["--sleep", "--no-conf", "--plugins="])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_sleep(&mut busy);
    let out = w.run(&["--no-conf"]);
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(w.bin.join("flannel")).expect("read"),
        fs::read(w.src.join("flannel")).expect("read")
    );
}

/// Reads the child's stderr until install-cni says it is sleeping (signals blocked).
fn wait_for_sleep(child: &mut std::process::Child) {
    let err = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(err).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("sleeping until SIGTERM") => break,
            Some(Ok(_)) => {}
            other => panic!("install-cni --sleep ended before sleeping: {other:?}"),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
}

fn sleep_then_signal(sig: &str) {
    let w = World::new();
    let mut child = Command::new(EXE)
        .args(w.args())
        .arg("--sleep")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_sleep(&mut child);
    assert_eq!(entries(&w.bin).len(), 6, "installed before sleeping");
    let kill = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{sig} must end --sleep with exit 0");
}

#[test]
fn sleep_exits_zero_on_sigterm() {
    sleep_then_signal("TERM");
}

#[test]
fn sleep_exits_zero_on_sigint() {
    sleep_then_signal("INT");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let out = run(&["--frobnicate".to_owned()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown argument"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--help".to_owned()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--bin-dir"));
}
