//! The `flannel` binary against a FAKE delegate: a shell script named `bridge` on a private
//! `CNI_PATH` that records its environment and stdin and prints a canned result (or a canned
//! error). No namespaces and no root needed: these tests check what flannel sends, saves and
//! returns. The real flannel → bridge → host-local chain is tested elsewhere.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcni_integration::{Call, Reply};
use serde_json::{Value, json};

const IPV4_ENV: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";

/// A canned ADD result with an unusual key order and an extra key, to prove flannel returns
/// the delegate's result as it is.
const CANNED: &str = r#"{"cniVersion":"1.0.0","zExtra":"kept","interfaces":[{"name":"cni0","mac":"0a:58:0a:01:11:01"},{"name":"eth0","mac":"0a:58:0a:01:11:05","sandbox":"/x"}],"ips":[{"address":"10.1.17.5/24","gateway":"10.1.17.1","interface":1}],"routes":[{"dst":"10.1.0.0/16","gw":"10.1.17.1"}],"dns":{}}"#;

/// The flannel binary under test: `$RCNI_BIN_DIR/flannel`, else `<repo>/target/bin/flannel`.
fn flannel_bin() -> PathBuf {
    let dir = std::env::var_os("RCNI_BIN_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bin"),
        PathBuf::from,
    );
    let bin = dir.join("flannel");
    assert!(
        bin.exists(),
        "{} not found: run scripts/build.sh (or set RCNI_BIN_DIR)",
        bin.display()
    );
    bin
}

/// One recorded delegate invocation.
#[derive(Debug)]
struct Recorded {
    env: BTreeMap<String, String>,
    stdin: String,
}

impl Recorded {
    fn command(&self) -> &str {
        self.env.get("CNI_COMMAND").map_or("", String::as_str)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdin)
            .unwrap_or_else(|e| panic!("delegate stdin not JSON ({e}): {self:?}"))
    }
}

/// A test world: temp dir with subnet.env, dataDir, the fake delegate and its records.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rcni-flannel")
            .tempdir()
            .expect("tempdir");
        let w = World { dir };
        fs::create_dir_all(w.bin_dir()).expect("mkdir bin");
        fs::create_dir_all(w.calls_dir()).expect("mkdir calls");
        fs::write(w.root().join("netns"), b"").expect("netns placeholder");
        fs::write(w.root().join("result.json"), CANNED).expect("canned result");
        w.install_fake("bridge");
        w.write_subnet_env(IPV4_ENV);
        w
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn bin_dir(&self) -> PathBuf {
        self.root().join("bin")
    }
    fn calls_dir(&self) -> PathBuf {
        self.root().join("calls")
    }
    fn data_dir(&self) -> PathBuf {
        self.root().join("data/flannel")
    }
    fn subnet_env(&self) -> PathBuf {
        self.root().join("subnet.env")
    }
    fn saved(&self, cid: &str) -> PathBuf {
        self.data_dir().join(cid)
    }

    /// Installs the recording fake delegate under `name` on our CNI_PATH.
    fn install_fake(&self, name: &str) {
        let root = self.root().display().to_string();
        let script = format!(
            r#"#!/bin/sh
calls="{root}/calls"
n=$(ls "$calls" | wc -l)
d="$calls/$(printf %03d "$n")"
mkdir "$d"
env > "$d/env"
cat > "$d/stdin"
if [ -f "{root}/fail-$CNI_COMMAND" ]; then cat "{root}/fail-$CNI_COMMAND"; exit 1; fi
if [ "$CNI_COMMAND" = ADD ]; then cat "{root}/result.json"; fi
exit 0
"#
        );
        let path = self.bin_dir().join(name);
        fs::write(&path, script).expect("write fake");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod fake");
    }

    /// Makes the fake fail `command` (ADD, DEL, ...) printing `error`.
    fn fail(&self, command: &str, error: &Value) {
        fs::write(
            self.root().join(format!("fail-{command}")),
            error.to_string(),
        )
        .expect("write fail");
    }

    fn heal(&self, command: &str) {
        let _ = fs::remove_file(self.root().join(format!("fail-{command}")));
    }

    fn write_subnet_env(&self, text: &str) {
        fs::write(self.subnet_env(), text).expect("write subnet.env");
    }

    /// Every delegate invocation so far, in order.
    fn calls(&self) -> Vec<Recorded> {
        let mut names: Vec<_> = fs::read_dir(self.calls_dir())
            .expect("calls dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|d| {
                let env = fs::read_to_string(d.join("env"))
                    .expect("env")
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let stdin = fs::read_to_string(d.join("stdin")).expect("stdin");
                Recorded { env, stdin }
            })
            .collect()
    }

    /// The flannel config used by most tests.
    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "cni-flannel",
            "type": "flannel",
            "subnetFile": self.subnet_env(),
            "dataDir": self.data_dir(),
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Runs flannel with `command` for container `cid`.
    fn run(&self, command: &str, cid: &str, config: Value) -> Reply {
        Call {
            bin: flannel_bin(),
            command: command.to_owned(),
            container_id: cid.to_owned(),
            netns: self.root().join("netns").display().to_string(),
            ifname: "eth0".to_owned(),
            cni_args: "IgnoreUnknown=1;K8S_POD_NAME=p".to_owned(),
            cni_path: self.bin_dir().display().to_string(),
            config,
            node: None,
            env: BTreeMap::from([("CNI_LOG_LEVEL".to_owned(), "debug".to_owned())]),
        }
        .run()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn golden(version: &str) -> Value {
    json!({"cniVersion": version, "ipMasq":false,
           "ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},
           "isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"})
}

#[test]
fn add_saves_the_config_sends_it_and_returns_the_result_as_is() {
    let w = World::new();
    let conf = w.conf(
        "1.0.0",
        json!({"delegate":{"hairpinMode":true,"isDefaultGateway":true},
               "runtimeConfig":{"ips":["10.1.17.9/24"]}}),
    );
    let reply = w.run("ADD", "c1", conf);
    let out = reply.expect_ok();

    // The delegate's result, unchanged (content and key order).
    let canned: Value = serde_json::from_str(CANNED).expect("canned");
    assert_eq!(out.to_string(), canned.to_string(), "{reply:?}");

    // Saved: dir 0700, file 0600, the built config.
    let saved_path = w.saved("c1");
    assert_eq!(mode(&w.data_dir()), 0o700);
    assert_eq!(mode(&saved_path), 0o600);
    let saved = fs::read_to_string(&saved_path).expect("saved");
    let mut want = golden("1.0.0");
    want["hairpinMode"] = json!(true);
    want["isDefaultGateway"] = json!(true);
    want["runtimeConfig"] = json!({"ips":["10.1.17.9/24"]});
    assert_eq!(
        serde_json::from_str::<Value>(&saved).expect("saved JSON"),
        want
    );

    // The delegate got exactly the saved bytes and the runtime's environment.
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let add = &calls[0];
    assert_eq!(add.command(), "ADD");
    assert_eq!(add.stdin, saved);
    assert_eq!(add.env["CNI_CONTAINERID"], "c1");
    assert_eq!(add.env["CNI_IFNAME"], "eth0");
    assert_eq!(
        add.env["CNI_NETNS"],
        w.root().join("netns").display().to_string()
    );
    assert_eq!(add.env["CNI_PATH"], w.bin_dir().display().to_string());
    assert_eq!(add.env["CNI_ARGS"], "IgnoreUnknown=1;K8S_POD_NAME=p");

    // The config sent is logged on stderr, as Go does.
    assert!(
        reply
            .stderr
            .contains("delegateAdd: netconf sent to delegate plugin"),
        "{reply:?}"
    );
}

#[test]
fn add_without_cni_version_stores_the_go_golden_config() {
    let w = World::new();
    let mut conf = w.conf("", json!({}));
    conf.as_object_mut().expect("object").remove("cniVersion");
    // Old-style conf (no cniVersion): the delegate gets none either.
    w.run("ADD", "c0", conf).expect_ok();
    let saved: Value =
        serde_json::from_slice(&fs::read(w.saved("c0")).expect("saved")).expect("JSON");
    let mut want = golden("x");
    want.as_object_mut().expect("object").remove("cniVersion");
    assert_eq!(saved, want);
}

#[test]
fn add_failure_removes_only_its_own_file_and_keeps_the_code() {
    let w = World::new();
    w.fail(
        "ADD",
        &json!({"code": 11, "msg": "no IP addresses available", "details": "range 10.1.17.0/24"}),
    );
    let reply = w.run("ADD", "c1", w.conf("1.0.0", json!({})));
    let err = reply.expect_err(11);
    assert_eq!(
        err["msg"],
        json!("failed to delegate add: no IP addresses available"),
        "{reply:?}"
    );
    assert_eq!(err["details"], json!("range 10.1.17.0/24"));

    // No delegate DEL: the delegate undoes its own failed ADD, and a DEL could only name
    // the attachment, which may be a running pod's (a repeated ADD).
    let commands: Vec<_> = w.calls().iter().map(|c| c.command().to_owned()).collect();
    assert_eq!(commands, ["ADD"]);
    assert!(!w.saved("c1").exists(), "this ADD's saved file removed");
}

#[test]
fn add_failure_puts_back_the_config_an_earlier_add_saved() {
    let w = World::new();
    let conf = w.conf("1.0.0", json!({}));
    w.run("ADD", "c1", conf.clone()).expect_ok();
    let saved = fs::read(w.saved("c1")).expect("saved");
    // A new lease since: the repeated ADD saves another config before its delegate fails.
    w.write_subnet_env(&IPV4_ENV.replace("10.1.17.1/24", "10.1.99.1/24"));
    w.fail("ADD", &json!({"code": 999, "msg": "eth0 already exists"}));
    w.run("ADD", "c1", conf.clone()).expect_err(999);
    let calls = w.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[1].stdin.contains("10.1.99.0/24"),
        "the repeated ADD sent the new config"
    );
    assert_eq!(fs::read(w.saved("c1")).expect("saved"), saved);

    // The runtime's DEL gets the config the running pod was made with.
    w.run("DEL", "c1", conf).expect_ok();
    let calls = w.calls();
    assert_eq!(calls[2].command(), "DEL");
    assert_eq!(calls[2].stdin.as_bytes(), saved);
}

#[test]
fn add_without_subnet_env_is_try_again_later() {
    let w = World::new();
    fs::remove_file(w.subnet_env()).expect("rm subnet.env");
    let reply = w.run("ADD", "c1", w.conf("1.0.0", json!({})));
    let err = reply.expect_err(11);
    assert_eq!(
        err["msg"],
        json!(format!(
            "failed to load flannel 'subnet.env' file: open {}: no such file or directory. Check the flannel pod log for this node.",
            w.subnet_env().display()
        ))
    );
    assert!(w.calls().is_empty());
    assert!(!w.saved("c1").exists());
}

#[test]
fn add_with_incomplete_subnet_env_names_every_missing_key() {
    let w = World::new();
    w.write_subnet_env("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_MTU\n");
    let err = w.run("ADD", "c1", w.conf("1.0.0", json!({}))).expect_err(7);
    assert!(
        err["msg"]
            .as_str()
            .is_some_and(|m| m.contains("FLANNEL_MTU")),
        "{err}"
    );

    w.write_subnet_env("FLANNEL_NETWORK=10.1.0.0/16\n");
    let err = w.run("ADD", "c1", w.conf("1.0.0", json!({}))).expect_err(7);
    let want = format!(
        "{} is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ",
        w.subnet_env().display()
    );
    assert!(
        err["msg"].as_str().is_some_and(|m| m.contains(&want)),
        "{err}"
    );
    assert!(w.calls().is_empty());
}

#[test]
fn add_refuses_delegate_name_and_ipam() {
    let w = World::new();
    for (delegate, msg) in [
        (
            json!({"name":"x"}),
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
        ),
        (
            json!({"ipam":{}}),
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
        ),
        (
            json!({"type":1}),
            "'delegate' dictionary, if present, must have (string) 'type' field",
        ),
    ] {
        let err = w
            .run("ADD", "c1", w.conf("1.0.0", json!({"delegate": delegate})))
            .expect_err(7);
        assert_eq!(err["msg"], json!(msg));
    }
    assert!(w.calls().is_empty());
}

#[test]
fn del_uses_the_saved_config_then_rebuilds_when_it_is_gone() {
    let w = World::new();
    let conf = w.conf("1.0.0", json!({}));
    w.run("ADD", "c1", conf.clone()).expect_ok();
    let saved = fs::read_to_string(w.saved("c1")).expect("saved");

    // flanneld got a new lease since: DEL must still undo what ADD did.
    w.write_subnet_env(&IPV4_ENV.replace("10.1.17.1/24", "10.1.99.1/24"));
    w.run("DEL", "c1", conf.clone()).expect_ok();
    assert!(!w.saved("c1").exists());
    let calls = w.calls();
    assert_eq!(calls[1].command(), "DEL");
    assert_eq!(calls[1].stdin, saved);

    // Idempotent: a second DEL rebuilds from subnet.env and still runs the delegate's DEL.
    w.run("DEL", "c1", conf).expect_ok();
    let calls = w.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].command(), "DEL");
    assert_eq!(
        calls[2].json()["ipam"]["ranges"],
        json!([[{"subnet":"10.1.99.0/24"}]])
    );
}

#[test]
fn del_without_saved_file_rebuilds_and_releases() {
    let w = World::new();
    w.run(
        "DEL",
        "lost",
        w.conf("1.0.0", json!({"delegate":{"hairpinMode":true}})),
    )
    .expect_ok();
    let calls = w.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].command(), "DEL");
    let mut want = golden("1.0.0");
    want["hairpinMode"] = json!(true);
    assert_eq!(calls[0].json(), want);
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "lost");
}

#[test]
fn del_with_a_zero_byte_saved_file_rebuilds() {
    let w = World::new();
    fs::create_dir_all(w.data_dir()).expect("mkdir");
    fs::write(w.saved("c1"), b"").expect("zero-byte file");
    w.run("DEL", "c1", w.conf("1.0.0", json!({}))).expect_ok();
    let calls = w.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json(), golden("1.0.0"));
    assert!(!w.saved("c1").exists());
}

#[test]
fn del_without_saved_file_and_subnet_env_succeeds_without_delegate() {
    let w = World::new();
    fs::remove_file(w.subnet_env()).expect("rm subnet.env");
    let reply = w.run("DEL", "c1", w.conf("1.0.0", json!({})));
    reply.expect_ok();
    assert!(w.calls().is_empty());
    assert!(
        reply.stderr.contains("subnet.env"),
        "the reason is logged: {reply:?}"
    );
}

#[test]
fn del_failure_keeps_the_saved_file_and_the_code() {
    let w = World::new();
    let conf = w.conf("1.0.0", json!({}));
    w.run("ADD", "c1", conf.clone()).expect_ok();
    w.fail("DEL", &json!({"code": 5, "msg": "netlink busy"}));
    let err = w.run("DEL", "c1", conf.clone()).expect_err(5);
    assert_eq!(err["msg"], json!("netlink busy"));
    assert!(w.saved("c1").exists(), "kept for the retry");
    w.heal("DEL");
    w.run("DEL", "c1", conf).expect_ok();
    assert!(!w.saved("c1").exists());
}

#[test]
fn check_goes_through_the_delegate_with_prev_result() {
    let w = World::new();
    let conf = w.conf("1.0.0", json!({}));
    let result = w.run("ADD", "c1", conf.clone()).expect_ok();
    let saved: Value =
        serde_json::from_slice(&fs::read(w.saved("c1")).expect("saved")).expect("JSON");

    let mut check_conf = conf;
    check_conf["prevResult"] = result.clone();
    w.run("CHECK", "c1", check_conf.clone()).expect_ok();
    let calls = w.calls();
    assert_eq!(calls[1].command(), "CHECK");
    let mut want = saved;
    want["prevResult"] = result;
    assert_eq!(calls[1].json(), want);

    // The delegate's verdict is ours.
    w.fail("CHECK", &json!({"code": 999, "msg": "veth gone"}));
    let err = w.run("CHECK", "c1", check_conf).expect_err(999);
    assert_eq!(err["msg"], json!("veth gone"));
}

#[test]
fn status_needs_subnet_env_and_forwards_to_the_delegate() {
    let w = World::new();
    let conf = w.conf("1.1.0", json!({}));
    w.run("STATUS", "", conf.clone()).expect_ok();
    let calls = w.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].command(), "STATUS");
    assert_eq!(calls[0].json(), golden("1.1.0"));

    fs::remove_file(w.subnet_env()).expect("rm subnet.env");
    let reply = w.run("STATUS", "", conf);
    let err = reply.expect_err(50);
    assert!(
        err["details"]
            .as_str()
            .is_some_and(|d| d.contains("no such file or directory")),
        "{reply:?}"
    );
    assert_eq!(w.calls().len(), 1, "not forwarded when not available");
}

#[test]
fn gc_drops_stale_saved_configs_and_forwards() {
    let w = World::new();
    let conf = w.conf("1.1.0", json!({}));
    for cid in ["c1", "c2", "c3"] {
        w.run("ADD", cid, conf.clone()).expect_ok();
    }
    // Another flannel network sharing the dataDir: not ours to drop.
    fs::write(
        w.saved("other"),
        json!({"name":"other-net","type":"bridge"}).to_string(),
    )
    .expect("write");
    // A zero-byte leftover of a dead container.
    fs::write(w.saved("dead"), b"").expect("write");

    let valid = json!([{"containerID":"c1","ifname":"eth0"},{"containerID":"c3","ifname":"eth0"}]);
    let mut gc_conf = conf;
    gc_conf["cni.dev/valid-attachments"] = valid.clone();
    w.run("GC", "", gc_conf).expect_ok();

    let mut left: Vec<String> = fs::read_dir(w.data_dir())
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["c1", "c3", "other"]);

    let calls = w.calls();
    let gc = calls.last().expect("a GC call");
    assert_eq!(gc.command(), "GC");
    let mut want = golden("1.1.0");
    want["cni.dev/valid-attachments"] = valid;
    assert_eq!(gc.json(), want);
}

#[test]
fn delegate_type_is_found_on_cni_path() {
    let w = World::new();
    w.install_fake("fakeipvlan");
    w.run(
        "ADD",
        "c1",
        w.conf("0.3.1", json!({"delegate":{"type":"fakeipvlan"}})),
    )
    .expect_ok();
    let calls = w.calls();
    let sent = calls[0].json();
    assert_eq!(sent["type"], json!("fakeipvlan"));
    assert!(
        sent.get("isGateway").is_none(),
        "isGateway only defaults for bridge"
    );

    // A delegate missing from CNI_PATH: nothing is saved, and DEL (which cannot rebuild a
    // runnable config either) still succeeds, so the pod is not stuck.
    let conf = w.conf("0.3.1", json!({"delegate":{"type":"nosuchplugin"}}));
    let reply = w.run("ADD", "c2", conf.clone());
    let err = reply.expect_err(7);
    assert!(
        err["msg"]
            .as_str()
            .is_some_and(|m| m.contains("nosuchplugin")),
        "{err}"
    );
    assert!(!w.saved("c2").exists());
    w.run("DEL", "c2", conf).expect_ok();
    assert_eq!(w.calls().len(), 1);
}
