//! The real plugins, delegated to in-process and by exec, give the same bytes.
//!
//! flannel (from `target/bin`) delegates to each plugin on two identical nodes: on one the
//! delegate is found in `target/bin` (this build: in-process), on the other in a directory
//! of copies whose build IDs differ (another build: exec'd at every hop). Same spec version,
//! same command, same state: the same exit status and stdout, byte for byte (for bridge up
//! to the kernel's random MACs and host veth names), and the same stderr. And a delegate that
//! is not ours, a wrapper script around the reference host-local, is exec'd: it records its
//! call. Root only (network namespaces).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcni_integration::{
    Call, FlannelNode, Reply, TestNetns, bin, bin_dir, reference_bin, temp_dir,
};
use serde_json::{Value, json};

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.251.0.0/16\nFLANNEL_SUBNET=10.251.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// `dir` holding a copy of the built binary per name, each with its own build ID (the ID's
/// bytes flipped by `n`), so every delegation from or into them is an exec.
fn other_builds(dir: &Path) {
    let exe = bin_dir().join("rcni");
    let bytes = fs::read(&exe).expect("read rcni");
    let id = cni::delegate::build_id::of_file(&exe).expect("rcni has a build ID");
    let at = bytes
        .windows(id.len())
        .position(|w| w == id.as_slice())
        .expect("the ID in the file");
    for (n, name) in ["bridge", "host-local", "loopback", "portmap", "flannel"]
        .iter()
        .enumerate()
    {
        let mut copy = bytes.clone();
        for b in &mut copy[at..at + id.len()] {
            *b ^= u8::try_from(n + 1).expect("small");
        }
        let path = dir.join(name);
        fs::write(&path, &copy).expect("write copy");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// MACs and host veth names are the kernel's and the plugin's random picks.
fn normalized(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // "xx:xx:xx:xx:xx:xx"
        let mac = rest.len() >= 17
            && rest.as_bytes()[..17].iter().enumerate().all(|(i, b)| {
                if i % 3 == 2 {
                    *b == b':'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        // "veth" + 8 hex digits
        let veth = rest.starts_with("veth")
            && rest.len() >= 12
            && rest.as_bytes()[4..12].iter().all(u8::is_ascii_hexdigit);
        if mac && !rest.starts_with("00:00:00:00:00:00") {
            out.push_str("<mac>");
            rest = &rest[17..];
        } else if veth {
            out.push_str("<veth>");
            rest = &rest[12..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

struct Side {
    node: FlannelNode,
    pod: TestNetns,
    path: PathBuf,
}

impl Side {
    fn call(&self, command: &str, conf: &Value, container: &str, args: &str) -> Reply {
        Call::new(bin("flannel"), command, conf.clone())
            .path(&self.path.to_string_lossy())
            .container(container)
            .netns(&self.pod)
            .args(args)
            .in_node(&self.node.ns)
            .run()
    }

    /// flannel's config on this side, with the node's files and `delegate`.
    fn conf(&self, version: &str, delegate: &Value) -> Value {
        let mut c = self.node.flannel_conf(delegate.clone());
        c["cniVersion"] = json!(version);
        c
    }
}

fn text(r: &Reply, side: &Side) -> String {
    let dir = side.node.dir.path().display().to_string();
    normalized(
        &format!(
            "exit {}\nstdout: {}\nstderr: {}",
            r.code, r.stdout, r.stderr
        )
        .replace(&dir, "<node dir>")
        .replace(side.pod.path_str(), "<netns>")
        .replace(&side.node.bridge, "<bridge>"),
    )
}

#[test]
fn every_plugin_gives_the_same_bytes_in_process_and_execd() {
    let copies = temp_dir();
    other_builds(copies.path());
    let inside = Side {
        node: FlannelNode::new("ipa", "ipnet", SUBNET_ENV),
        pod: TestNetns::new("ipap"),
        path: bin_dir(),
    };
    let outside = Side {
        node: FlannelNode::new("ipb", "ipnet", SUBNET_ENV),
        pod: TestNetns::new("ipbp"),
        path: copies.path().to_path_buf(),
    };
    let mut compared = 0;
    let mut n = 0;
    for (plugin, delegate) in [
        ("loopback", json!({"type": "loopback"})),
        ("host-local", json!({"type": "host-local"})),
        ("portmap", json!({"type": "portmap"})),
        ("bridge", json!({"type": "bridge"})),
        // Error cases: a config the delegate refuses, an address host-local cannot give.
        ("bridge", json!({"type": "bridge", "vlan": 5000})),
        (
            "bridge",
            json!({"type": "bridge", "ipMasqBackend": "bogus", "ipMasq": true}),
        ),
    ] {
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            for args in ["", "IgnoreUnknown=1;IP=10.99.99.99"] {
                n += 1;
                let container = format!("ipc{n}");
                let mut commands = vec!["ADD"];
                if version >= "0.4.0" {
                    commands.push("CHECK");
                }
                if version == "1.1.0" {
                    commands.push("STATUS");
                }
                commands.push("DEL");
                for command in commands {
                    let mut replies = Vec::new();
                    for side in [&inside, &outside] {
                        let mut conf = side.conf(version, &delegate);
                        if command == "CHECK" {
                            let added = side.call("ADD", &conf, &container, args);
                            if added.code != 0 {
                                continue;
                            }
                            conf["prevResult"] = added.json();
                        }
                        let r = side.call(command, &conf, &container, args);
                        replies.push(text(&r, side));
                    }
                    if replies.len() == 2 {
                        assert_eq!(
                            replies[0], replies[1],
                            "{plugin} {delegate} {version} {command} {args:?}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared >= 130, "only {compared} comparisons");
    // What was compared really ran both ways (the debug log says which).
    let conf = inside.conf("1.0.0", &json!({"type": "loopback"}));
    let r = Call::new(bin("flannel"), "DEL", conf.clone())
        .path(&inside.path.to_string_lossy())
        .container("which-way")
        .netns(&inside.pod)
        .in_node(&inside.node.ns)
        .env("CNI_LOG_LEVEL", "debug")
        .run();
    assert!(
        r.stderr.contains("delegating DEL to loopback in-process"),
        "{}",
        r.stderr
    );
    let conf = outside.conf("1.0.0", &json!({"type": "loopback"}));
    let r = Call::new(bin("flannel"), "DEL", conf)
        .path(&outside.path.to_string_lossy())
        .container("which-way")
        .netns(&outside.pod)
        .in_node(&outside.node.ns)
        .env("CNI_LOG_LEVEL", "debug")
        .run();
    assert!(
        r.stderr.contains("is not this build: exec'd"),
        "{}",
        r.stderr
    );
}

/// bridge (ours, from target/bin) delegating IPAM to a script that records its call and
/// execs the reference host-local: the script ran, so it was exec'd, and the pod works.
#[test]
fn a_wrapper_around_the_reference_is_execd() {
    let dir = temp_dir();
    let record = dir.path().join("record");
    for name in ["bridge", "flannel"] {
        std::os::unix::fs::symlink(bin(name), dir.path().join(name)).expect("symlink");
    }
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND $$\" >> {}\nexec {} \"$@\"\n",
        record.display(),
        reference_bin("host-local").display()
    );
    fs::write(dir.path().join("host-local"), script).expect("write wrapper");
    fs::set_permissions(
        dir.path().join("host-local"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let node = FlannelNode::new("ipw", "ipwnet", SUBNET_ENV);
    let pod = TestNetns::new("ipwp");
    let conf = node.flannel_conf(json!({}));
    let call = |command: &str, conf: &Value| {
        Call::new(dir.path().join("flannel"), command, conf.clone())
            .path(&dir.path().to_string_lossy())
            .container("wrapped")
            .netns(&pod)
            .in_node(&node.ns)
            .env("CNI_LOG_LEVEL", "debug")
            .run()
    };
    let added = call("ADD", &conf);
    let result = added.expect_ok();
    // flannel → bridge in-process (same build through a symlink), bridge → host-local exec'd.
    assert!(
        added.stderr.contains("delegating ADD to bridge in-process"),
        "{}",
        added.stderr
    );
    assert!(
        added
            .stderr
            .contains("host-local is not this build: exec'd"),
        "{}",
        added.stderr
    );
    assert_eq!(
        fs::read_to_string(&record)
            .expect("the wrapper ran")
            .lines()
            .count(),
        1
    );
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.251.1."))
    );
    assert!(pod.link("eth0").is_some());
    let mut del = conf;
    del["prevResult"] = result;
    call("DEL", &del).expect_ok();
    let lines: Vec<String> = fs::read_to_string(&record)
        .expect("record")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("ADD ") && lines[1].starts_with("DEL "),
        "{lines:?}"
    );
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}
