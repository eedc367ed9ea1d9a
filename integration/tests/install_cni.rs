//! install-cni with the real, built suite (`target/bin`, from scripts/build.sh): it installs
//! the binary byte for byte and a link to it per name, every example config is accepted, and
//! what it installed works: a pod gets networked by the installed flannel with the installed
//! config. (The atomic-write, layout-replacement, refusal and signal semantics are tested on
//! the binary itself in rcni/tests/install_cni.rs.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cni::config::ConfList;
use rcni_integration::{Call, TestNetns, bin, bin_dir, dir_entries, temp_dir};
use serde_json::{Value, json};

/// The names a node gets, each a link to the binary.
const PLUGINS: &[&str] = &[
    "bridge",
    "flannel",
    "host-local",
    "loopback",
    "portmap",
    "rcni-doctor",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf-examples")
}

fn install_cni(args: &[String]) -> Output {
    Command::new(bin("install-cni"))
        .args(args)
        .env_clear()
        .output()
        .expect("run install-cni")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Installs the suite and `conf` into `root/opt/cni/bin` and `root/etc/cni/net.d`,
/// taking the binaries from install-cni's own directory (the default `--src-dir`).
fn install(root: &Path, conf: &Path, conf_name: &str) -> Output {
    install_cni(&[
        format!("--bin-dir={}", root.join("opt/cni/bin").display()),
        format!("--conf-dir={}", root.join("etc/cni/net.d").display()),
        format!("--conf-file={}", conf.display()),
        format!("--conf-name={conf_name}"),
    ])
}

#[test]
fn installs_the_built_suite_and_the_plugins_run() {
    let t = temp_dir();
    let out = install(
        t.path(),
        &examples_dir().join("10-flannel-rcni.conflist"),
        "10-flannel.conflist",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bins = t.path().join("opt/cni/bin");
    let mut want: Vec<&str> = PLUGINS.to_vec();
    want.push("rcni");
    want.sort_unstable();
    assert_eq!(
        dir_entries(&bins),
        want,
        "exactly the binary, the five plugins and the doctor, no temp files"
    );
    assert_eq!(
        fs::read(bins.join("rcni")).expect("read"),
        fs::read(bin_dir().join("rcni")).expect("read"),
        "rcni differs from target/bin"
    );
    let mode = fs::metadata(bins.join("rcni"))
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
    for p in PLUGINS {
        let installed = bins.join(p);
        assert_eq!(
            fs::read_link(&installed).expect("a link"),
            Path::new("rcni"),
            "{p}"
        );
        if *p == "rcni-doctor" {
            let v = Command::new(&installed)
                .arg("--version")
                .output()
                .expect("run");
            assert!(
                String::from_utf8_lossy(&v.stdout).starts_with("rcni-doctor rcni v"),
                "{v:?}"
            );
            continue;
        }
        // The installed binary answers VERSION as a CNI plugin.
        let v = Call::new(&installed, "VERSION", json!({"cniVersion": "1.1.0"}))
            .run()
            .expect_ok();
        let supported = v["supportedVersions"]
            .as_array()
            .expect("supportedVersions");
        assert!(
            supported.contains(&json!("0.3.1")) && supported.contains(&json!("1.1.0")),
            "{p}: {v}"
        );
    }
    let conf = t.path().join("etc/cni/net.d/10-flannel.conflist");
    assert_eq!(
        fs::read(&conf).expect("read"),
        fs::read(examples_dir().join("10-flannel-rcni.conflist")).expect("read")
    );
    assert_eq!(
        fs::metadata(&conf).expect("meta").permissions().mode() & 0o7777,
        0o644
    );
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // Again: nothing to do.
    let again = install(
        t.path(),
        &examples_dir().join("10-flannel-rcni.conflist"),
        "10-flannel.conflist",
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stderr(&again).matches("up to date").count(),
        8,
        "{}",
        stderr(&again)
    );
}

#[test]
fn every_example_config_is_accepted() {
    let t = temp_dir();
    let configs: Vec<String> = dir_entries(&examples_dir())
        .into_iter()
        .filter(|f| f.ends_with(".conf") || f.ends_with(".conflist"))
        .collect();
    // The loop below must have something to check: the examples the README names.
    for known in [
        "10-flannel.conf",
        "10-flannel.conflist",
        "10-flannel-rcni.conflist",
    ] {
        assert!(
            configs.contains(&known.to_owned()),
            "{known} missing from {configs:?}"
        );
    }
    for f in configs {
        let out = install_cni(&[
            "--plugins=".to_owned(),
            format!("--bin-dir={}", t.path().join("bin").display()),
            format!("--conf-dir={}", t.path().join("net.d").display()),
            format!("--conf-file={}", examples_dir().join(&f).display()),
            format!("--conf-name={f}"),
        ]);
        assert!(out.status.success(), "{f} refused: {}", stderr(&out));
        if f == "10-flannel.conflist" {
            assert!(
                stderr(&out).contains("\"portmap\""),
                "expected the portmap warning: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn a_bad_config_keeps_the_installed_one() {
    let t = temp_dir();
    let good = examples_dir().join("10-flannel-rcni.conflist");
    assert!(
        install(t.path(), &good, "10-flannel.conflist")
            .status
            .success()
    );
    let bad = t.path().join("bad.json");
    // A truncated ConfigMap edit.
    let text = fs::read_to_string(&good).expect("read");
    fs::write(&bad, &text[..text.len() / 2]).expect("write");
    let out = install(t.path(), &bad, "10-flannel.conflist");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(t.path().join("etc/cni/net.d/10-flannel.conflist")).expect("read"),
        text
    );
}

/// What install-cni put on the "node" networks a pod: the runtime reads the installed
/// conflist and finds the plugins in the installed bin dir (CNI_PATH).
#[test]
fn installed_files_network_a_pod() {
    let t = temp_dir();
    let out = install(
        t.path(),
        &examples_dir().join("10-flannel-rcni.conflist"),
        "10-flannel.conflist",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bins = t.path().join("opt/cni/bin");
    let state = t.path().join("state");
    fs::create_dir_all(&state).expect("mkdir");
    fs::copy(
        examples_dir().join("subnet.env.vxlan"),
        state.join("subnet.env"),
    )
    .expect("copy");

    // What the runtime derives from the installed file for the first plugin.
    let list = ConfList::load(&t.path().join("etc/cni/net.d/10-flannel.conflist"))
        .expect("the installed config loads");
    let mut conf = list.plugin_conf(0).expect("one plugin");
    conf["subnetFile"] = json!(state.join("subnet.env"));
    conf["dataDir"] = json!(state.join("flannel"));
    conf["ipam"] = json!({ "dataDir": state.join("ipam") });

    let node = TestNetns::new("icn");
    let pod = TestNetns::new("icp");
    let call = |cmd: &str, c: Value| {
        Call::new(bins.join("flannel"), cmd, c)
            .path(bins.to_str().expect("utf-8 path"))
            .container("installed-pod")
            .netns(&pod)
            .in_node(&node)
            .run()
    };
    let result = call("ADD", conf.clone()).expect_ok();
    let ip = result["ips"][0]["address"].as_str().expect("an address");
    assert!(ip.starts_with("10.244.1."), "{result}");
    assert!(
        node.ping(ip.split('/').next().unwrap_or(ip)),
        "node cannot ping {ip}"
    );
    let mut del = conf;
    del["prevResult"] = result;
    call("DEL", del).expect_ok();
    assert!(pod.link("eth0").is_none());
}
