//! Plugins killed (SIGKILL) or failing at one chosen system call, as a crash or a failing
//! disk would make them: `strace` injects the signal or the error into the real binary.
//! Afterwards the stores must be usable and hold no torn file, a failed ADD must not keep
//! its address, and temp files of killed writers must go with the next GC (or flannel save).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcni_integration::{Call, Reply, TestNetns, bin, dir_entries, require_root, temp_dir, unique};
use serde_json::{Value, json};

/// A script that runs `real` under strace with `inject` (`SYSCALL:signal=KILL[:when=N]`
/// or `SYSCALL:error=EIO`).
fn injecting(dir: &Path, real: &Path, inject: &str) -> PathBuf {
    require_root();
    let syscall = inject.split(':').next().unwrap_or_default();
    let name = format!("inject-{}", inject.replace([':', '=', ','], "-"));
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec strace -f -qq -o /dev/null -e trace={syscall} -e inject={inject} {}\n",
            real.display()
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn assert_killed(what: &str, r: &Reply) {
    assert!(
        r.code == -1 && r.stdout.is_empty(),
        "{what}: should have died by SIGKILL: {r:?}"
    );
}

// ---------------------------------------------------------------- host-local

const NET: &str = "crashnet";

fn hl_conf(data_dir: &Path) -> Value {
    json!({"cniVersion": "1.1.0", "name": NET, "type": "bridge",
           "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.20.0.0/24"}]]}})
}

fn hl(bin: &Path, command: &str, conf: &Value, cid: &str) -> Reply {
    Call::new(bin, command, conf.clone())
        .container(cid)
        .netns_path("/var/run/netns/rcni-crash-unused")
        .run()
}

/// Reservation files: address → content.
fn reservations(dir: &Path) -> Vec<(String, String)> {
    dir_entries(dir)
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .map(|n| {
            let c = fs::read_to_string(dir.join(&n)).expect("read reservation");
            (n, c)
        })
        .collect()
}

/// Every step of a host-local ADD, killed: the store stays whole and usable, the killed
/// ADD's address (if it got one) is freed by its DEL, and nothing is left after GC.
#[test]
fn host_local_killed_at_any_step_of_add() {
    for inject in [
        "fdatasync:signal=KILL",     // writing its reservation, before it has a name
        "flock:signal=KILL:when=2",  // waiting for the store lock
        "linkat:signal=KILL:when=1", // publishing the reservation
        "linkat:signal=KILL:when=2", // naming last_reserved_ip's temp file
        "rename,renameat,renameat2:signal=KILL", // replacing last_reserved_ip
        "pwrite64:signal=KILL",      // writing the owner index
        "fsync:signal=KILL",         // syncing the directory
    ] {
        let tmp = temp_dir();
        let conf = hl_conf(tmp.path());
        let dir = tmp.path().join(NET);
        let ours = bin("host-local");
        hl(&ours, "ADD", &conf, "c0").expect_ok();
        hl(&ours, "ADD", &conf, "c1").expect_ok();
        hl(&ours, "DEL", &conf, "c1").expect_ok();

        let killer = injecting(tmp.path(), &ours, inject);
        assert_killed(inject, &hl(&killer, "ADD", &conf, "victim"));
        for (ip, c) in reservations(&dir) {
            assert!(
                c == "c0\r\neth0" || c == "victim\r\neth0",
                "{inject}: torn or foreign reservation {ip}: {c:?}"
            );
        }

        // The store goes on: a new ADD gets a new address.
        let r = hl(&ours, "ADD", &conf, "c2").expect_ok();
        let c2 = r["ips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // The runtime DELs the failed ADD: whatever it had is freed.
        hl(&ours, "DEL", &conf, "victim").expect_ok();
        assert!(
            !reservations(&dir)
                .iter()
                .any(|(_, c)| c.starts_with("victim")),
            "{inject}: {:?}",
            reservations(&dir)
        );
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([
            {"containerID": "c0", "ifname": "eth0"},
            {"containerID": "c2", "ifname": "eth0"}
        ]);
        Call::new(&ours, "GC", gc).run().expect_ok();
        let left: Vec<String> = reservations(&dir)
            .into_iter()
            .map(|(ip, c)| format!("{ip}={c}"))
            .collect();
        assert_eq!(
            left,
            [
                "10.20.0.2=c0\r\neth0".to_owned(),
                format!("{}=c2\r\neth0", c2.split('/').next().unwrap_or_default())
            ],
            "{inject}"
        );
        let names = dir_entries(&dir);
        assert!(
            !names.iter().any(|n| n.starts_with(".tmp-")),
            "{inject}: {names:?}"
        );
    }
}

/// A write that fails after the reservation was published (`last_reserved_ip`, the
/// directory's fsync) or before it (the reservation's own fsync): the ADD fails with an
/// I/O error and keeps no address.
#[test]
fn host_local_failed_writes_release_the_reservation() {
    for inject in [
        "rename,renameat,renameat2:error=EIO",
        "fsync:error=EIO",
        "fdatasync:error=EIO",
    ] {
        let tmp = temp_dir();
        let conf = hl_conf(tmp.path());
        let dir = tmp.path().join(NET);
        let ours = bin("host-local");
        hl(&ours, "ADD", &conf, "c0").expect_ok();

        let failing = injecting(tmp.path(), &ours, inject);
        let e = hl(&failing, "ADD", &conf, "victim").expect_err(5);
        assert!(
            e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("Input/output error")),
            "{inject}: {e}"
        );
        assert_eq!(
            reservations(&dir),
            [("10.20.0.2".to_owned(), "c0\r\neth0".to_owned())],
            "{inject}: released"
        );
        // CHECK agrees: the victim has nothing.
        hl(&ours, "CHECK", &conf, "victim").expect_err(999);
        hl(&ours, "ADD", &conf, "c1").expect_ok();
        assert_eq!(reservations(&dir).len(), 2, "{inject}");
    }
}

/// What a crash, a power cut (under the reference plugin, which writes without fsync) or a
/// person can leave named by an address: empty, garbage, oversized, a FIFO, a symlink, a
/// directory. No ADD blocks on them or fails; each keeps its address taken until GC
/// releases it (a directory is not a reservation and is left alone).
#[test]
fn host_local_odd_files_never_block_and_gc_reclaims_them() {
    let tmp = temp_dir();
    let conf = hl_conf(tmp.path());
    let dir = tmp.path().join(NET);
    let ours = bin("host-local");
    // A hung plugin fails the test instead of hanging it.
    let bounded = tmp.path().join("host-local-bounded");
    fs::write(
        &bounded,
        format!("#!/bin/sh\nexec timeout -s KILL 20 {}\n", ours.display()),
    )
    .expect("write wrapper");
    fs::set_permissions(&bounded, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("10.20.0.2"), "").expect("write");
    fs::write(dir.join("10.20.0.3"), b"\0\x01 not an id\n\n").expect("write");
    fs::write(dir.join("10.20.0.4"), "x".repeat(100_000)).expect("write");
    nix::unistd::mkfifo(&dir.join("10.20.0.5"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("10.20.0.6")).expect("symlink");
    fs::create_dir(dir.join("10.20.0.7")).expect("mkdir");

    let r = hl(&bounded, "ADD", &conf, "c1").expect_ok();
    assert_eq!(r["ips"][0]["address"], json!("10.20.0.8/24"));
    hl(&bounded, "CHECK", &conf, "c1").expect_ok();
    hl(&bounded, "DEL", &conf, "nobody").expect_ok();
    hl(&bounded, "CHECK", &conf, "nobody").expect_err(999);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    Call::new(&bounded, "GC", gc).run().expect_ok();
    let addresses: Vec<String> = dir_entries(&dir)
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert_eq!(addresses, ["10.20.0.7", "10.20.0.8"]);
    assert!(
        Path::new("/etc/hostname").exists(),
        "the symlink's target is untouched"
    );
    let r = hl(&bounded, "ADD", &conf, "c2").expect_ok();
    assert_eq!(r["ips"][0]["address"], json!("10.20.0.9/24"));
}

// ---------------------------------------------------------------- flannel

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";

const RESULT: &str =
    r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.17.5/24","gateway":"10.1.17.1"}]}"#;

/// flannel with a stand-in `bridge` that succeeds (flannel's store is what is tested).
struct Flannel {
    dir: tempfile::TempDir,
}

impl Flannel {
    fn new() -> Self {
        let dir = temp_dir();
        let bin_dir = dir.path().join("bin");
        fs::create_dir_all(&bin_dir).expect("mkdir");
        let fake = bin_dir.join("bridge");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && echo '{RESULT}'\nexit 0\n"
            ),
        )
        .expect("write fake");
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(dir.path().join("subnet.env"), SUBNET_ENV).expect("subnet.env");
        Flannel { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("flannel")
    }

    fn conf(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
               "subnetFile": self.dir.path().join("subnet.env"),
               "dataDir": self.data_dir()})
    }

    fn run(&self, bin: &Path, command: &str, cid: &str, conf: Value) -> Reply {
        Call::new(bin, command, conf)
            .container(cid)
            .netns_path("/var/run/netns/rcni-crash-unused")
            .path(&self.dir.path().join("bin").to_string_lossy())
            .run()
    }

    fn temps(&self) -> Vec<String> {
        dir_entries(&self.data_dir())
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect()
    }
}

/// SIGKILL during flannel's save: a new file leaves nothing behind at any step; a re-save
/// killed between naming its temp file and renaming it leaves that file, which the next
/// GC, or the next save that replaces a file, removes. The saved config is never torn.
#[test]
fn flannel_killed_mid_save() {
    let f = Flannel::new();
    let ours = bin("flannel");
    for inject in [
        "fdatasync:signal=KILL",
        "linkat:signal=KILL",
        "fsync:signal=KILL",
    ] {
        let killer = injecting(f.dir.path(), &ours, inject);
        assert_killed(inject, &f.run(&killer, "ADD", "c1", f.conf()));
        assert!(f.temps().is_empty(), "{inject}: {:?}", f.temps());
    }
    f.run(&ours, "ADD", "c1", f.conf()).expect_ok();
    let saved = fs::read(f.data_dir().join("c1")).expect("saved");

    let killer = injecting(f.dir.path(), &ours, "rename,renameat,renameat2:signal=KILL");
    assert_killed("re-save", &f.run(&killer, "ADD", "c1", f.conf()));
    let left = f.temps();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".tmp-c1."), "{left:?}");
    assert_eq!(
        fs::read(f.data_dir().join("c1")).expect("saved"),
        saved,
        "not torn"
    );

    // A new save does not list the directory; GC sweeps.
    f.run(&ours, "ADD", "c2", f.conf()).expect_ok();
    assert_eq!(f.temps(), left);
    let mut gc = f.conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c2", "ifname": "eth0"}
    ]);
    f.run(&ours, "GC", "", gc).expect_ok();
    assert!(f.temps().is_empty(), "{:?}", f.temps());
    assert_eq!(dir_entries(&f.data_dir()), ["c1", "c2"]);

    // Killed again; this time a save that replaces a file sweeps it.
    assert_killed("re-save", &f.run(&killer, "ADD", "c2", f.conf()));
    assert_eq!(f.temps().len(), 1);
    f.run(&ours, "ADD", "c1", f.conf()).expect_ok();
    assert!(f.temps().is_empty(), "{:?}", f.temps());
    assert_eq!(dir_entries(&f.data_dir()), ["c1", "c2"]);
}

// ---------------------------------------------------------------- bridge

/// A first ADD killed between putting the gateway address on the bridge and pinning the
/// bridge's MAC leaves a bridge whose MAC follows the lowest MAC of its ports (found by the
/// soak: CHECK of a running pod then fails with "Bridge interface ... Mac doesn't match", and
/// the gateway's MAC in every pod's ARP cache goes stale as pods come and go). The next ADD,
/// which finds the address in place, pins it.
#[test]
fn bridge_mac_left_floating_by_a_killed_add_is_pinned_by_the_next() {
    let node = TestNetns::new("mac");
    let br = unique("brm");
    // What the killed ADD left: the bridge with the gateway address, its MAC not pinned.
    node.exec_ok("ip", &["link", "add", &br, "type", "bridge"]);
    node.exec_ok("ip", &["addr", "add", "10.30.0.1/24", "dev", &br]);
    node.exec_ok("ip", &["link", "set", &br, "up"]);
    let assign_type = || {
        node.exec_ok("cat", &[&format!("/sys/class/net/{br}/addr_assign_type")])
            .trim()
            .to_owned()
    };
    assert_ne!(
        assign_type(),
        "3",
        "the kernel pins a new bridge's MAC: nothing to test"
    );

    let tmp = temp_dir();
    let conf = json!({"cniVersion": "1.0.0", "name": "macnet", "type": "bridge", "bridge": br,
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": tmp.path(), "ranges": [[{"subnet": "10.30.0.0/24"}]]}});
    let pod = TestNetns::new("mp");
    let call = |command: &str, conf: Value| {
        Call::new(bin("bridge"), command, conf)
            .container("c1")
            .netns(&pod)
            .in_node(&node)
            .run()
    };
    let result = call("ADD", conf.clone()).expect_ok();
    assert_eq!(
        assign_type(),
        "3",
        "NET_ADDR_SET: the bridge's MAC is pinned"
    );
    let mac = result["interfaces"][0]["mac"].clone();
    assert_eq!(node.link(&br).expect("bridge")["address"], mac);

    // Another port with a lower MAC than any: a floating bridge would take it.
    let (a, b) = (unique("vma"), unique("vmb"));
    node.exec_ok(
        "ip",
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
    );
    node.exec_ok("ip", &["link", "set", &a, "address", "02:00:00:00:00:01"]);
    node.exec_ok("ip", &["link", "set", &a, "master", &br]);
    assert_eq!(
        node.link(&br).expect("bridge")["address"],
        mac,
        "the MAC moved"
    );
    let mut check = conf;
    check["prevResult"] = result;
    call("CHECK", check).expect_ok();
}
