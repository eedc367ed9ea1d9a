//! Bad input gets a CNI error object (a known code, a message) on stdout and exit
//! status 1: never a crash (a signal would show here as exit status -1), never garbage on
//! stdout, never a half-made pod.

use rcni_integration::{Call, TestNetns, bin, temp_dir};
use serde_json::{Value, json};

const CODES: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999];

fn assert_cni_error(plugin: &str, what: &str, call: &Call) {
    let reply = call.run();
    assert_eq!(
        reply.code, 1,
        "{plugin} / {what}: exit status {}: {reply:?}",
        reply.code
    );
    let err: Value = serde_json::from_str(&reply.stdout).unwrap_or_else(|e| {
        panic!("{plugin} / {what}: stdout is not an error object ({e}): {reply:?}")
    });
    let code = err["code"].as_u64().unwrap_or(0);
    assert!(
        CODES.contains(&code),
        "{plugin} / {what}: unknown code: {err}"
    );
    assert!(
        err["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{plugin} / {what}: no msg: {err}"
    );
}

/// Configs that are wrong in ways a hand-edited file is: wrong types, bad
/// addresses, impossible values, unknown versions.
fn bad_configs(plugin: &str, dir: &str) -> Vec<(&'static str, Value)> {
    let base = |extra: Value| {
        let mut v = json!({"cniVersion": "1.0.0", "name": "bad", "type": plugin});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    };
    let ipam = |i: Value| base(json!({"ipam": i}));
    let mut v = vec![
        ("not an object", json!([1, 2, 3])),
        ("a string", json!("cni")),
        ("unknown version", base(json!({"cniVersion": "9.9.9"}))),
        ("version of wrong type", base(json!({"cniVersion": 100}))),
        (
            "missing name",
            json!({"cniVersion": "1.0.0", "type": plugin}),
        ),
        ("bad name", base(json!({"name": "a/b c"}))),
    ];
    // loopback and portmap pass prevResult on; bridge, first in a chain, ignores it on ADD
    // as the reference does.
    if plugin == "loopback" || plugin == "portmap" {
        v.push((
            "prevResult garbage",
            base(json!({"prevResult": {"ips": "nope"}})),
        ));
    }
    match plugin {
        "host-local" | "bridge" => {
            v.extend([
                ("ipam not an object", ipam(json!(7))),
                ("subnet garbage", ipam(json!({"type": "host-local", "subnet": "300.1.2.0/24", "dataDir": dir}))),
                ("subnet host bits", ipam(json!({"type": "host-local", "subnet": "10.1.2.3/24", "dataDir": dir}))),
                ("subnet /32", ipam(json!({"type": "host-local", "subnet": "10.1.2.3/32", "dataDir": dir}))),
                ("ranges wrong shape", ipam(json!({"type": "host-local", "ranges": [{"subnet": "10.1.0.0/16"}], "dataDir": dir}))),
                ("mixed families", ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}, {"subnet": "fd00::/64"}]], "dataDir": dir}))),
                ("rangeStart outside", ipam(json!({"type": "host-local", "subnet": "10.1.0.0/16", "rangeStart": "10.2.0.1", "dataDir": dir}))),
                ("route garbage", ipam(json!({"type": "host-local", "subnet": "10.1.0.0/16", "routes": [{"dst": "x"}], "dataDir": dir}))),
            ]);
        }
        _ => {}
    }
    match plugin {
        "bridge" => v.extend([
            ("mtu negative", base(json!({"mtu": -1, "ipam": {}}))),
            ("vlan too big", base(json!({"vlan": 5000, "ipam": {}}))),
            (
                "hairpin and promisc",
                base(json!({"hairpinMode": true, "promiscMode": true, "ipam": {}})),
            ),
            (
                "bridge name too long",
                base(json!({"bridge": "abcdefghijklmnopq", "ipam": {}})),
            ),
            (
                "unknown masq backend",
                base(json!({"ipMasq": true, "ipMasqBackend": "pf", "ipam": {}})),
            ),
            (
                "isGateway a string",
                base(json!({"isGateway": "yes", "ipam": {}})),
            ),
        ]),
        "portmap" => {
            let pm = |m: Value| {
                base(
                    json!({"runtimeConfig": {"portMappings": [m]}, "prevResult": {"ips": [{"address": "10.0.0.2/24"}]}}),
                )
            };
            v.extend([
                ("host port 0", pm(json!({"hostPort": 0, "containerPort": 80, "protocol": "tcp"}))),
                ("host port too big", pm(json!({"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}))),
                ("container port negative", pm(json!({"hostPort": 80, "containerPort": -1, "protocol": "tcp"}))),
                ("unknown protocol", pm(json!({"hostPort": 80, "containerPort": 80, "protocol": "gre"}))),
                ("hostIP garbage", pm(json!({"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "x"}))),
                ("mark bit 32", base(json!({"markMasqBit": 32}))),
                ("mark bit and chain", base(json!({"markMasqBit": 1, "externalSetMarkChain": "X"}))),
                ("unknown backend", base(json!({"backend": "pf"}))),
                ("not chained", base(json!({}))),
            ]);
        }
        "flannel" => v.extend([
            (
                "delegate with name",
                base(json!({"delegate": {"name": "x"}, "subnetFile": format!("{dir}/none")})),
            ),
            (
                "delegate with ipam",
                base(json!({"delegate": {"ipam": {}}, "subnetFile": format!("{dir}/none")})),
            ),
            (
                "delegate type a number",
                base(json!({"delegate": {"type": 3}, "subnetFile": format!("{dir}/none")})),
            ),
            (
                "no subnet.env",
                base(json!({"subnetFile": format!("{dir}/none"), "dataDir": dir})),
            ),
            (
                "garbage subnet.env",
                base(json!({"subnetFile": format!("{dir}/garbage.env"), "dataDir": dir})),
            ),
        ]),
        _ => {}
    }
    v
}

#[test]
fn every_plugin_answers_bad_config_with_a_cni_error() {
    let dir = temp_dir();
    let d = dir.path().to_string_lossy().into_owned();
    std::fs::write(
        dir.path().join("garbage.env"),
        "FLANNEL_NETWORK\n\u{0}\u{1}==\nFLANNEL_MTU=abc\n",
    )
    .expect("write garbage.env");
    let pod = TestNetns::new("bad");
    for plugin in ["host-local", "loopback", "bridge", "flannel", "portmap"] {
        for (what, conf) in bad_configs(plugin, &d) {
            let call = Call::new(bin(plugin), "ADD", conf)
                .container("bad-input")
                .netns(&pod);
            assert_cni_error(plugin, what, &call);
        }
        // Not JSON at all, and empty stdin.
        let mut call = Call::new(bin(plugin), "ADD", Value::Null)
            .container("bad-input")
            .netns(&pod);
        call.config = Value::String("{\"cniVersion\":".into());
        assert_cni_error(plugin, "truncated JSON", &call);
        // Bad environment: every problem of the env table.
        let good = json!({"cniVersion": "1.0.0", "name": "bad", "type": plugin});
        for (what, call) in [
            (
                "no container id",
                Call::new(bin(plugin), "ADD", good.clone()).netns(&pod),
            ),
            (
                "bad container id",
                Call::new(bin(plugin), "ADD", good.clone())
                    .container("-x")
                    .netns(&pod),
            ),
            (
                "ifname too long",
                Call::new(bin(plugin), "ADD", good.clone())
                    .container("c")
                    .netns(&pod)
                    .ifname("abcdefghijklmnop"),
            ),
            (
                "ifname with slash",
                Call::new(bin(plugin), "ADD", good.clone())
                    .container("c")
                    .netns(&pod)
                    .ifname("a/b"),
            ),
            (
                "unknown command",
                Call::new(bin(plugin), "FROB", good.clone())
                    .container("c")
                    .netns(&pod),
            ),
            (
                "CHECK on 0.3.1",
                Call::new(
                    bin(plugin),
                    "CHECK",
                    json!({"cniVersion": "0.3.1", "name": "bad", "type": plugin}),
                )
                .container("c")
                .netns(&pod),
            ),
            ("GC on 1.0.0", Call::new(bin(plugin), "GC", good.clone())),
        ] {
            assert_cni_error(plugin, what, &call);
        }
    }
    // Nothing was made: the pod netns holds only lo.
    assert_eq!(pod.link_names(), vec!["lo".to_owned()]);
}

/// A container ID that cannot be a file name (longer than NAME_MAX, 255 bytes) is refused by
/// every plugin with code 4, before anything is made; 255 bytes work end to end (flannel
/// saves its delegate config under that very name).
#[test]
fn a_container_id_that_cannot_be_a_file_name_is_refused_before_anything_is_made() {
    let dir = temp_dir();
    let env = dir.path().join("subnet.env");
    std::fs::write(
        &env,
        "FLANNEL_NETWORK=10.248.0.0/16\nFLANNEL_SUBNET=10.248.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .expect("write subnet.env");
    let (ipam_dir, flannel_dir) = (dir.path().join("ipam"), dir.path().join("flannel"));
    let host_local = json!({"type": "host-local", "dataDir": ipam_dir,
                            "ranges": [[{"subnet": "10.248.1.0/24"}]]});
    let confs = [
        ("host-local", json!({"type": "bridge", "ipam": host_local})),
        (
            "bridge",
            json!({"type": "bridge", "bridge": "longid0", "ipam": host_local}),
        ),
        ("loopback", json!({"type": "loopback"})),
        (
            "flannel",
            json!({"type": "flannel", "subnetFile": env, "dataDir": flannel_dir,
                   "ipam": {"dataDir": ipam_dir}, "delegate": {"bridge": "longid0"}}),
        ),
    ];
    let node = TestNetns::new("lid");
    let pod = TestNetns::new("lip");
    pod.exec_ok("ip", &["link", "set", "lo", "down"]);
    let conf = |extra: &Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "longid"});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    };
    for (plugin, extra) in &confs {
        for len in [256, 10_000] {
            let id = "a".repeat(len);
            let r = Call::new(bin(plugin), "ADD", conf(extra))
                .container(&id)
                .netns(&pod)
                .ifname(if *plugin == "loopback" { "lo" } else { "eth0" })
                .in_node(&node)
                .run();
            let e = r.expect_err(4);
            assert_eq!(
                e["msg"],
                json!("containerID is too long"),
                "{plugin}: {r:?}"
            );
            assert_eq!(
                e["details"],
                json!(format!(
                    "CNI_CONTAINERID must be at most 255 bytes (it names files), got {len}"
                )),
                "{plugin}"
            );
        }
    }
    // Nothing was made anywhere.
    assert_eq!(pod.link_names(), vec!["lo".to_owned()]);
    assert_eq!(pod.link("lo").expect("lo")["operstate"], json!("DOWN"));
    assert!(node.link("longid0").is_none(), "bridge made");
    assert!(!ipam_dir.join("longid").exists(), "store made");
    assert!(!flannel_dir.exists(), "flannel dataDir made");

    // 255 bytes is a valid file name: the whole chain works with it.
    let id = "b".repeat(255);
    let flannel = conf(&confs[3].1);
    let call = |cmd: &str| {
        Call::new(bin("flannel"), cmd, flannel.clone())
            .container(&id)
            .netns(&pod)
            .in_node(&node)
            .run()
    };
    call("ADD").expect_ok();
    assert!(
        flannel_dir.join(&id).is_file(),
        "saved under the container ID"
    );
    assert!(pod.link("eth0").is_some());
    call("DEL").expect_ok();
    assert!(!flannel_dir.join(&id).exists());
    assert!(pod.link("eth0").is_none());
}
