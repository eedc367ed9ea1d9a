//! `rcni install-cni` against temporary directories: what lands where, with which mode,
//! that nothing half-written is ever left and no name is ever missing, that an old
//! per-plugin layout is replaced cleanly, that a bad config is refused, and the `--sleep`
//! signal handling. No root needed.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const EXE: &str = env!("CARGO_BIN_EXE_rcni");

/// The names a node gets, each a link to the binary.
const NAMES: [&str; 6] = [
    "bridge",
    "flannel",
    "host-local",
    "loopback",
    "portmap",
    "rcni-doctor",
];

/// What a default install leaves in the bin dir, as a sorted listing shows it.
const INSTALLED: [&str; 7] = [
    "bridge",
    "flannel",
    "host-local",
    "loopback",
    "portmap",
    "rcni",
    "rcni-doctor",
];

/// The source binary of these tests (a script: install-cni copies bytes, it runs nothing).
const FAKE_RCNI: &str = "#!/bin/sh\necho rcni v1\n";

const GOOD_CONF: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } }
  ]
}
"#;

/// A source dir with a fake binary, a config file, and empty bin/conf target dirs.
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
        fs::write(src.join("rcni"), FAKE_RCNI).expect("write");
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
        .arg("install-cni")
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

/// Puts the rcni executable at `dest` without ever opening it for writing: a copy
/// would race with the fork+exec of other tests (the forked child holds the write fd until
/// it execs, and exec of a file open for writing fails with ETXTBSY). A hard link needs the
/// same filesystem, hence the worlds of these tests live in `CARGO_TARGET_TMPDIR`.
fn link_exe(dest: &Path) {
    fs::hard_link(EXE, dest).expect("hard link rcni");
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
}

fn link_target(p: &Path) -> PathBuf {
    fs::read_link(p).unwrap_or_else(|e| panic!("{} is not a link: {e}", p.display()))
}

/// (dev, inode) of the name itself, not of what it links to.
fn lstat_id(p: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(p).expect("lstat");
    (m.dev(), m.ino())
}

#[test]
fn installs_binary_links_and_config_then_is_idempotent() {
    let w = World::new();
    let out = w.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), INSTALLED);
    assert_eq!(entries(&w.conf), ["10-flannel.conflist"]);
    assert_eq!(
        fs::read(w.bin.join("rcni")).expect("read"),
        FAKE_RCNI.as_bytes()
    );
    assert_eq!(mode(&w.bin.join("rcni")), 0o755);
    for p in NAMES {
        assert_eq!(link_target(&w.bin.join(p)), Path::new("rcni"), "{p}");
        assert_eq!(fs::read(w.bin.join(p)).expect("read"), FAKE_RCNI.as_bytes());
    }
    let conf = w.conf.join("10-flannel.conflist");
    assert_eq!(fs::read_to_string(&conf).expect("read"), GOOD_CONF);
    assert_eq!(mode(&conf), 0o644);
    // The binary, six links, the config.
    assert_eq!(
        stderr(&out).matches("installed").count(),
        8,
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).matches("-> rcni").count(),
        6,
        "{}",
        stderr(&out)
    );

    let ids: Vec<(u64, u64)> = INSTALLED.iter().map(|p| lstat_id(&w.bin.join(p))).collect();
    let again = w.run(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stderr(&again).matches("up to date").count(),
        8,
        "{}",
        stderr(&again)
    );
    let after: Vec<(u64, u64)> = INSTALLED.iter().map(|p| lstat_id(&w.bin.join(p))).collect();
    assert_eq!(ids, after, "what is in place must not be rewritten");
}

#[test]
fn changed_source_replaces_the_binary_by_rename_and_keeps_the_links() {
    let w = World::new();
    assert!(w.run(&[]).status.success());
    let before = lstat_id(&w.bin.join("rcni"));
    let links: Vec<(u64, u64)> = NAMES.iter().map(|p| lstat_id(&w.bin.join(p))).collect();
    fs::write(w.src.join("rcni"), "#!/bin/sh\necho v2\n").expect("write");
    let out = w.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(lstat_id(&w.bin.join("rcni")), before);
    // One rename switched every name.
    for p in NAMES {
        assert_eq!(
            fs::read_to_string(w.bin.join(p)).expect("read"),
            "#!/bin/sh\necho v2\n"
        );
    }
    let after: Vec<(u64, u64)> = NAMES.iter().map(|p| lstat_id(&w.bin.join(p))).collect();
    assert_eq!(links, after);
    assert_eq!(
        stderr(&out).matches("installed").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&w.bin), INSTALLED);
}

/// A node that ran the per-plugin layout (a copy per name, one of them running) gets the
/// binary and a link per name; the running process keeps its file; nothing else is left.
#[test]
fn an_old_per_plugin_layout_is_replaced_cleanly() {
    let w = World::new();
    fs::create_dir_all(&w.bin).expect("mkdir");
    for p in NAMES {
        fs::write(w.bin.join(p), format!("#!/bin/sh\necho old {p}\n")).expect("write");
        fs::set_permissions(w.bin.join(p), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Not ours and not a name of ours: left alone.
    fs::write(w.bin.join("bandwidth"), "#!/bin/sh\necho reference\n").expect("write");
    // The old flannel is running (an installer sleeping): its file must survive the install.
    fs::remove_file(w.bin.join("flannel")).expect("rm");
    link_exe(&w.bin.join("flannel"));
    // Started as `rcni install-cni` (argv[0]) from the file named flannel.
    let mut busy = KillOnDrop::spawn(
        Command::new(w.bin.join("flannel"))
            .arg0("rcni")
            .args(["install-cni", "--sleep", "--no-conf", "--plugins="])
            .stderr(Stdio::piped()),
    );
    wait_for_sleep(&mut busy.0);
    let mut old_bridge = fs::File::open(w.bin.join("bridge")).expect("open");

    let out = w.run(&[]);
    drop(busy);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want: Vec<&str> = INSTALLED.to_vec();
    want.push("bandwidth");
    want.sort_unstable();
    assert_eq!(entries(&w.bin), want, "no temp files, nothing removed");
    for p in NAMES {
        assert_eq!(link_target(&w.bin.join(p)), Path::new("rcni"), "{p}");
    }
    assert_eq!(
        fs::read_to_string(w.bin.join("bandwidth")).expect("read"),
        "#!/bin/sh\necho reference\n"
    );
    let mut s = String::new();
    std::io::Read::read_to_string(&mut old_bridge, &mut s).expect("read");
    assert_eq!(
        s, "#!/bin/sh\necho old bridge\n",
        "the old file was replaced, not rewritten"
    );
}

/// Whatever the installs do, a runtime looking a plugin up always finds it: old layout,
/// new layout, new binary, over and over, while another thread resolves the names.
#[test]
fn no_name_is_ever_missing_while_layouts_are_swapped() {
    let w = World::new();
    assert!(w.run(&["--no-conf"]).status.success());
    let stop = Arc::new(AtomicBool::new(false));
    let (misses, looks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (bin, stop, misses, looks) =
            (w.bin.clone(), stop.clone(), misses.clone(), looks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in NAMES {
                    // What libcni's FindInPath does: stat, following links, a regular file.
                    if !fs::metadata(bin.join(p)).is_ok_and(|m| m.is_file()) {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                    looks.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for round in 0..15 {
        // An old installer puts per-plugin copies back, by rename as it did.
        for p in NAMES {
            let tmp = w.bin.join(format!(".old-{p}"));
            fs::write(&tmp, format!("old {p} {round}")).expect("write");
            fs::rename(&tmp, w.bin.join(p)).expect("rename");
        }
        fs::write(w.src.join("rcni"), format!("#!/bin/sh\necho {round}\n")).expect("write");
        let out = w.run(&["--no-conf"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(looks.load(Ordering::Relaxed) > 0);
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "a name was missing during an install"
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
fn missing_or_empty_binary_fails_before_installing_anything() {
    let w = World::new();
    fs::remove_file(w.src.join("rcni")).expect("rm");
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"rcni\" not found"),
        "{}",
        stderr(&out)
    );
    assert!(!w.bin.exists() && !w.conf.exists());

    fs::write(w.src.join("rcni"), "").expect("write");
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
        .arg("install-cni")
        .args(w.args())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&w.bin.join("rcni")), 0o755);
    assert_eq!(mode(&w.bin.join("flannel")), 0o755);
    assert_eq!(mode(&w.conf.join("10-flannel.conflist")), 0o644);
}

#[test]
fn plugin_subset_no_conf_and_conf_name() {
    let w = World::new();
    let out = w.run(&["--plugins", "flannel", "--no-conf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), ["flannel", "rcni"]);
    assert!(!w.conf.exists());

    // A name the binary does not hold is a usage error: nothing is installed.
    let out = w.run(&["--plugins", "flannel,bandwidth"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no \"bandwidth\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&w.bin), ["flannel", "rcni"]);
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

/// The image ships the binary and an `install-cni` link to it: run as that link, it installs
/// the binary it was started from.
#[test]
fn default_source_dir_is_the_executables_directory() {
    let w = World::new();
    fs::remove_file(w.src.join("rcni")).expect("rm");
    link_exe(&w.src.join("rcni"));
    std::os::unix::fs::symlink("rcni", w.src.join("install-cni")).expect("symlink");
    let out = Command::new(w.src.join("install-cni"))
        .arg(format!("--bin-dir={}", w.bin.display()))
        .arg("--no-conf")
        .env_clear()
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&w.bin), INSTALLED);
    assert_eq!(
        fs::read(w.bin.join("rcni")).expect("read"),
        fs::read(EXE).expect("read")
    );
}

/// A spawned process that is killed and reaped when the test ends, also when an assertion
/// fails first: an `install-cni --sleep` would otherwise outlive the test run.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn spawn(cmd: &mut Command) -> Self {
        KillOnDrop(cmd.spawn().expect("spawn"))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_running_binary_is_replaced() {
    // `cp -f` onto a binary that is executing fails with ETXTBSY ("Text file busy");
    // a rename does not.
    let w = World::new();
    fs::create_dir_all(&w.bin).expect("mkdir");
    link_exe(&w.bin.join("rcni"));
    let mut busy = KillOnDrop::spawn(
        Command::new(w.bin.join("rcni"))
            .args(["install-cni", "--sleep", "--no-conf", "--plugins="])
            .stderr(Stdio::piped()),
    );
    wait_for_sleep(&mut busy.0);
    let out = w.run(&["--no-conf"]);
    drop(busy);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(w.bin.join("rcni")).expect("read"),
        fs::read(w.src.join("rcni")).expect("read")
    );
}

/// Reads the child's stderr until install-cni says it is sleeping (signals blocked).
fn wait_for_sleep(child: &mut Child) {
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
    let mut child = KillOnDrop::spawn(
        Command::new(EXE)
            .arg("install-cni")
            .args(w.args())
            .arg("--sleep")
            .stderr(Stdio::piped()),
    );
    wait_for_sleep(&mut child.0);
    assert_eq!(entries(&w.bin), INSTALLED, "installed before sleeping");
    let kill = Command::new("kill")
        .args([&format!("-{sig}"), &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.0.wait().expect("wait");
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
