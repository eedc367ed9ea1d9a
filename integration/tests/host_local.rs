//! `host-local` end to end: our binary alone, and sharing one store with the
//! reference Go plugin (/usr/lib/cni/host-local, v1.1.1).
//!
//! host-local never enters the netns, so these tests need no namespace:
//! they run the binaries with a temporary `dataDir`. They still require root
//! like the rest of the suite (the reference is run as a runtime would).

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use rcni_integration::{
    ALL_VERSIONS, Call, Reply, bin, dir_entries, reference_bin, require_root, temp_dir,
};
use serde_json::{Value, json};

const NET: &str = "hlnet";
/// A netns path: host-local only passes it through (never opens it).
const NETNS: &str = "/var/run/netns/rcni-host-local-unused";

fn ours() -> PathBuf {
    require_root();
    bin("host-local")
}

fn theirs() -> PathBuf {
    require_root();
    reference_bin("host-local")
}

/// A bridge-like config whose `ipam` is host-local on `data_dir`.
fn conf(version: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir.to_string_lossy());
    json!({"cniVersion": version, "name": NET, "type": "bridge", "ipam": ipam})
}

fn subnet(version: &str, data_dir: &Path, cidr: &str) -> Value {
    conf(version, data_dir, json!({"ranges": [[{"subnet": cidr}]]}))
}

fn call(bin: &Path, command: &str, config: &Value, cid: &str) -> Call {
    Call::new(bin, command, config.clone())
        .container(cid)
        .netns_path(NETNS)
}

fn add(bin: &Path, config: &Value, cid: &str) -> Reply {
    call(bin, "ADD", config, cid).run()
}

/// The first address of an ADD result of any version, without prefix.
fn first_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .or_else(|| result["ip4"]["ip"].as_str())
        .or_else(|| result["ip6"]["ip"].as_str())
        .unwrap_or_else(|| panic!("no address in {result}"));
    addr.split('/').next().unwrap_or_default().to_owned()
}

fn add_ok(bin: &Path, config: &Value, cid: &str) -> String {
    first_ip(&add(bin, config, cid).expect_ok())
}

fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(NET)
}

/// Reservation files (named by an address) and their contents.
fn reservations(data_dir: &Path) -> Vec<(IpAddr, String)> {
    let dir = store_dir(data_dir);
    let mut v: Vec<(IpAddr, String)> = dir_entries(&dir)
        .into_iter()
        .filter_map(|n| Some((n.parse::<IpAddr>().ok()?, n)))
        .map(|(ip, n)| {
            let content = fs::read_to_string(dir.join(n)).expect("read reservation");
            (ip, content)
        })
        .collect();
    v.sort();
    v
}

fn last_reserved(data_dir: &Path, idx: usize) -> String {
    fs::read_to_string(store_dir(data_dir).join(format!("last_reserved_ip.{idx}")))
        .expect("last_reserved_ip")
}

#[test]
fn every_version_add_sequence_del_check() {
    let ours = ours();
    for &v in ALL_VERSIONS {
        let tmp = temp_dir();
        let cfg = subnet(v, tmp.path(), "10.1.2.0/24");
        let r = add(&ours, &cfg, "c1").expect_ok();
        assert_eq!(r["cniVersion"], json!(v), "{v}: {r}");
        match v {
            "0.1.0" | "0.2.0" => {
                assert_eq!(r["ip4"]["ip"], json!("10.1.2.2/24"), "{v}: {r}");
                assert_eq!(r["ip4"]["gateway"], json!("10.1.2.1"), "{v}: {r}");
                assert!(r.get("ips").is_none(), "{v}: {r}");
            }
            _ => {
                let ip0 = &r["ips"][0];
                assert_eq!(ip0["address"], json!("10.1.2.2/24"), "{v}: {r}");
                assert_eq!(ip0["gateway"], json!("10.1.2.1"), "{v}: {r}");
                assert!(ip0.get("interface").is_none(), "IPAM short form: {r}");
                assert!(r.get("interfaces").is_none(), "IPAM short form: {r}");
                let want_version = v.starts_with("0.");
                assert_eq!(ip0.get("version").is_some(), want_version, "{v}: {r}");
                if want_version {
                    assert_eq!(ip0["version"], json!("4"));
                }
            }
        }
        assert_eq!(add_ok(&ours, &cfg, "c2"), "10.1.2.3", "{v}");
        assert_eq!(add_ok(&ours, &cfg, "c3"), "10.1.2.4", "{v}");
        assert_eq!(last_reserved(tmp.path(), 0), "10.1.2.4");
        let dir = store_dir(tmp.path());
        assert_eq!(
            fs::read(dir.join("10.1.2.3")).expect("reservation"),
            b"c2\r\neth0"
        );

        // DEL frees, twice is fine, unknown IDs are fine.
        call(&ours, "DEL", &cfg, "c2").run().expect_ok();
        assert!(!dir.join("10.1.2.3").exists(), "{v}");
        call(&ours, "DEL", &cfg, "c2").run().expect_ok();
        call(&ours, "DEL", &cfg, "never-added").run().expect_ok();
        // Round robin: the freed .3 is not handed out again right away.
        assert_eq!(add_ok(&ours, &cfg, "c4"), "10.1.2.5", "{v}");

        let check = |cid: &str| call(&ours, "CHECK", &cfg, cid).run();
        if v >= "0.4.0" {
            check("c1").expect_ok();
            let e = check("c2").expect_err(999);
            assert_eq!(
                e["msg"],
                json!("host-local: Failed to find address added by container c2")
            );
        } else {
            check("c1").expect_err(1);
        }
    }
}

#[test]
fn gc_and_status() {
    let ours = ours();
    let tmp = temp_dir();
    let cfg = subnet("1.1.0", tmp.path(), "10.1.2.0/24");
    for cid in ["c1", "c2", "c3"] {
        add_ok(&ours, &cfg, cid);
    }
    call(&ours, "ADD", &cfg, "c1")
        .ifname("net1")
        .run()
        .expect_ok();
    let dir = store_dir(tmp.path());
    // Old-format file (containerID only) and a crash leftover (empty file).
    fs::write(dir.join("10.1.2.100"), "c1").expect("write");
    fs::write(dir.join("10.1.2.101"), "c9").expect("write");
    fs::write(dir.join("10.1.2.102"), "").expect("write");
    fs::write(dir.join(".tmp-10.1.2.103-4242"), "c5\r\neth0").expect("write");

    let mut gc_cfg = cfg.clone();
    gc_cfg["cni.dev/valid-attachments"] = json!([
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c3", "ifname": "eth0"}
    ]);
    Call::new(&ours, "GC", gc_cfg).run().expect_ok();
    let left: Vec<String> = reservations(tmp.path())
        .into_iter()
        .map(|(ip, c)| format!("{ip}={c}"))
        .collect();
    assert_eq!(
        left,
        vec![
            "10.1.2.2=c1\r\neth0",
            "10.1.2.4=c3\r\neth0",
            "10.1.2.100=c1"
        ]
    );
    let names = dir_entries(&dir);
    assert!(names.contains(&"lock".to_owned()), "{names:?}");
    assert!(
        names.contains(&"last_reserved_ip.0".to_owned()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");

    // STATUS: fine on a usable store, 50 when the store cannot be made.
    Call::new(&ours, "STATUS", cfg.clone()).run().expect_ok();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "x").expect("write");
    let bad = subnet("1.1.0", &file, "10.1.2.0/24");
    Call::new(&ours, "STATUS", bad).run().expect_err(50);
    // Older configs do not know STATUS / GC.
    let old = subnet("1.0.0", tmp.path(), "10.1.2.0/24");
    let e = Call::new(&ours, "STATUS", old).run().expect_err(1);
    assert_eq!(e["msg"], json!("config version does not allow STATUS"));
}

#[test]
fn dual_stack_routes_dns_requested() {
    let ours = ours();
    let tmp = temp_dir();
    let resolv = tmp.path().join("resolv.conf");
    fs::write(
        &resolv,
        "nameserver 10.0.0.10\ndomain example.com\nsearch a.example b.example\noptions ndots:5\n",
    )
    .expect("write");
    let ipam = json!({
        "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00:10::/120"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10::1"}],
        "resolvConf": resolv.to_string_lossy(),
    });
    let cfg = conf("1.0.0", tmp.path(), ipam);
    let mine = add(&ours, &cfg, "c1").expect_ok();
    assert_eq!(mine["ips"][0]["address"], json!("10.1.2.2/24"));
    assert_eq!(mine["ips"][1]["address"], json!("fd00:10::2/120"));
    assert_eq!(mine["ips"][1]["gateway"], json!("fd00:10::1"));
    assert_eq!(
        mine["routes"],
        json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10::1"}])
    );
    assert_eq!(mine["dns"]["nameservers"], json!(["10.0.0.10"]));
    assert_eq!(mine["dns"]["domain"], json!("example.com"));
    assert_eq!(mine["dns"]["search"], json!(["a.example", "b.example"]));
    assert_eq!(mine["dns"]["options"], json!(["ndots:5"]));
    assert_eq!(last_reserved(tmp.path(), 1), "fd00:10::2");

    // The reference gives the same ips/routes/dns for the next container.
    let tmp2 = temp_dir();
    let cfg2 = conf(
        "1.0.0",
        tmp2.path(),
        json!({
            "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00:10::/120"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10::1"}],
            "resolvConf": resolv.to_string_lossy(),
        }),
    );
    let reference = add(&theirs(), &cfg2, "c1").expect_ok();
    for key in ["ips", "routes", "dns"] {
        assert_eq!(
            mine[key], reference[key],
            "{key}: ours {mine} reference {reference}"
        );
    }

    // Requested addresses: CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips.
    let mut req = cfg.clone();
    req["args"] = json!({"cni": {"ips": ["fd00:10::50"]}});
    let r = call(&ours, "ADD", &req, "c2")
        .args("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.77")
        .run()
        .expect_ok();
    assert_eq!(r["ips"][0]["address"], json!("10.1.2.77/24"));
    assert_eq!(r["ips"][1]["address"], json!("fd00:10::50/120"));
    // Unknown CNI_ARGS keys without IgnoreUnknown fail, as the reference.
    assert!(
        !call(&ours, "ADD", &cfg, "c3")
            .args("K8S_POD_NAME=x")
            .run()
            .ok()
    );
    // A requested address no range holds: error, nothing left reserved.
    let e = call(&ours, "ADD", &cfg, "c4")
        .args("IP=10.9.9.9")
        .run()
        .expect_err(999);
    assert_eq!(
        e["msg"],
        json!("failed to allocate all requested IPs: 10.9.9.9")
    );
    assert!(
        !reservations(tmp.path())
            .iter()
            .any(|(_, c)| c.starts_with("c4")),
        "rolled back"
    );
    // 0.2.0 cannot carry two addresses of one family.
    let two_v4 = conf(
        "0.2.0",
        tmp.path(),
        json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]}),
    );
    let e = add(&ours, &two_v4, "c5").expect_err(7);
    assert_eq!(
        e["msg"],
        json!("CNI version 0.2.0 does not support more than 1 address per family")
    );
}

/// Same error message (and code, except config errors) from both plugins.
fn same_error(cfg: &Value, cid: &str, args: &str, want: &str) {
    for (name, b) in [("ours", ours()), ("reference", theirs())] {
        let r = call(&b, "ADD", cfg, cid).args(args).run();
        let e = r.expect_err(999);
        assert_eq!(e["msg"], json!(want), "{name}");
    }
}

#[test]
fn errors_match_the_reference() {
    let tmp = temp_dir();
    let cfg = subnet("1.0.0", tmp.path(), "10.1.2.0/29");
    // Exhaustion of a small range (.2 to .6 usable).
    let mut got = Vec::new();
    for i in 0..5 {
        let b = if i % 2 == 0 { ours() } else { theirs() };
        got.push(add_ok(&b, &cfg, &format!("c{i}")));
    }
    assert_eq!(
        got,
        ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]
    );
    same_error(
        &cfg,
        "c9",
        "",
        "failed to allocate for range 0: no IP addresses available in range set: 10.1.2.1-10.1.2.6",
    );
    // Duplicate allocation.
    same_error(
        &cfg,
        "c1",
        "",
        "failed to allocate for range 0: 10.1.2.3 has been allocated to c1, duplicate allocation is not allowed",
    );
    // Requested address taken.
    let tmp2 = temp_dir();
    let big2 = subnet("1.0.0", tmp2.path(), "10.1.4.0/24");
    add_ok(&ours(), &big2, "x1");
    call(&ours(), "ADD", &big2, "x2")
        .args("IP=10.1.4.50")
        .run()
        .expect_ok();
    same_error(
        &big2,
        "x3",
        "IP=10.1.4.50",
        "failed to allocate for range 0: requested IP address 10.1.4.50 is not available in range set 10.1.4.1-10.1.4.254",
    );
    same_error(
        &big2,
        "x4",
        "IP=10.1.4.1",
        "failed to allocate for range 0: requested ip 10.1.4.1 is subnet's gateway",
    );
    // Config errors: same text (we use code 7, the reference 999).
    let host_bits = subnet("1.0.0", tmp.path(), "10.1.2.5/24");
    let mine = add(&ours(), &host_bits, "c1").expect_err(7);
    let reference = add(&theirs(), &host_bits, "c1").expect_err(999);
    assert_eq!(mine["msg"], reference["msg"]);
}

#[test]
fn shared_store_sequence_matches_either_plugin_alone() {
    let (o, t) = (ours(), theirs());
    let run_seq = |plugins: &[&Path]| -> (Vec<String>, Vec<(IpAddr, String)>) {
        let tmp = temp_dir();
        let cfg = subnet("1.0.0", tmp.path(), "10.5.0.0/28");
        let mut seq = Vec::new();
        for i in 0..8 {
            let b = plugins[i % plugins.len()];
            seq.push(add_ok(b, &cfg, &format!("c{i}")));
        }
        // Free two and continue: round robin goes on from last_reserved_ip.
        for cid in ["c1", "c2"] {
            call(
                plugins[(cid == "c2") as usize % plugins.len()],
                "DEL",
                &cfg,
                cid,
            )
            .run()
            .expect_ok();
        }
        for i in 8..16 {
            let b = plugins[i % plugins.len()];
            let r = add(b, &cfg, &format!("c{i}"));
            seq.push(if r.ok() {
                first_ip(&r.json())
            } else {
                r.json()["msg"].as_str().unwrap_or_default().to_owned()
            });
        }
        (seq, reservations(tmp.path()))
    };
    let alone_ours = run_seq(&[&o]);
    let alone_theirs = run_seq(&[&t]);
    let mixed = run_seq(&[&o, &t]);
    let mixed2 = run_seq(&[&t, &o]);
    assert_eq!(alone_ours, alone_theirs);
    assert_eq!(alone_ours, mixed);
    assert_eq!(alone_ours, mixed2);
    // Sanity: the sequence is what round robin predicts.
    assert_eq!(alone_ours.0[0], "10.5.0.2");
    assert_eq!(alone_ours.0[7], "10.5.0.9");
    assert_eq!(alone_ours.0[8], "10.5.0.10");
    assert_eq!(alone_ours.0[12], "10.5.0.14");
    // Wrapped around: reuses the freed .3 and .4.
    assert_eq!(alone_ours.0[13], "10.5.0.3");
    assert_eq!(alone_ours.0[14], "10.5.0.4");
}

#[test]
fn each_plugin_releases_the_others_allocations() {
    let (o, t) = (ours(), theirs());
    let tmp = temp_dir();
    let cfg = subnet("1.0.0", tmp.path(), "10.6.0.0/24");
    let a = add_ok(&t, &cfg, "by-theirs");
    let b = add_ok(&o, &cfg, "by-ours");
    assert_eq!((a.as_str(), b.as_str()), ("10.6.0.2", "10.6.0.3"));
    // Each sees the other's reservation.
    call(&o, "CHECK", &cfg, "by-theirs").run().expect_ok();
    call(&t, "CHECK", &cfg, "by-ours").run().expect_ok();
    // Contents are identical (modes differ: 0644 v1.1.1, 0600 ours).
    let res = reservations(tmp.path());
    assert_eq!(
        res.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
        ["by-theirs\r\neth0", "by-ours\r\neth0"]
    );
    call(&o, "DEL", &cfg, "by-theirs").run().expect_ok();
    call(&t, "DEL", &cfg, "by-ours").run().expect_ok();
    assert!(reservations(tmp.path()).is_empty());
    // Old-format files written by ancient versions are released by both.
    let dir = store_dir(tmp.path());
    fs::write(dir.join("10.6.0.40"), "old1").expect("write");
    fs::write(dir.join("10.6.0.41"), "old2").expect("write");
    call(&o, "DEL", &cfg, "old1").run().expect_ok();
    call(&t, "DEL", &cfg, "old2").run().expect_ok();
    assert!(reservations(tmp.path()).is_empty());
}

/// Runs `n_ours` of our ADDs and `n_theirs` reference ADDs all at once.
fn burst(cfg: &Value, n_ours: usize, n_theirs: usize) -> Vec<Reply> {
    let (o, t) = (ours(), theirs());
    let handles: Vec<_> = (0..n_ours + n_theirs)
        .map(|i| {
            let b = if i < n_ours { o.clone() } else { t.clone() };
            let cfg = cfg.clone();
            thread::spawn(move || add(&b, &cfg, &format!("burst{i}")))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

fn assert_distinct(replies: &[Reply], data_dir: &Path, n: usize) {
    let ips: BTreeSet<String> = replies.iter().map(|r| first_ip(&r.expect_ok())).collect();
    assert_eq!(ips.len(), n, "distinct addresses: {ips:?}");
    let res = reservations(data_dir);
    assert_eq!(res.len(), n);
    // Every file names its owner, and owners are distinct.
    let owners: BTreeSet<&str> = res.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(owners.len(), n);
    for (ip, c) in &res {
        assert!(
            c.starts_with("burst") && c.ends_with("\r\neth0"),
            "{ip}: {c:?}"
        );
        assert!(ips.contains(&ip.to_string()), "{ip} not in results");
    }
}

#[test]
fn parallel_adds_ours() {
    let tmp = temp_dir();
    let cfg = subnet("1.1.0", tmp.path(), "10.7.0.0/24");
    let replies = burst(&cfg, 100, 0);
    assert_distinct(&replies, tmp.path(), 100);
}

#[test]
fn parallel_mixed_burst_shares_the_lock() {
    let tmp = temp_dir();
    let cfg = subnet("1.0.0", tmp.path(), "10.8.0.0/24");
    let replies = burst(&cfg, 50, 50);
    assert_distinct(&replies, tmp.path(), 100);
    // last_reserved_ip holds one of the handed-out addresses.
    let last = last_reserved(tmp.path(), 0);
    assert!(
        reservations(tmp.path())
            .iter()
            .any(|(ip, _)| ip.to_string() == last)
    );
}

/// A process that provably holds the store lock: `flock -o` takes it and only then runs a
/// shell that prints its pid and sleeps. `-o` closes the lock's descriptor in that child, so
/// the lock dies with `flock` alone. Both are killed on drop.
struct LockHolder {
    flock: std::process::Child,
    sleeper: nix::unistd::Pid,
}

impl LockHolder {
    fn take(lock: &Path) -> Self {
        use std::io::BufRead;
        let mut flock = Command::new("flock")
            .arg("-o")
            .arg(lock)
            .args(["sh", "-c", "echo $$; exec sleep 600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flock");
        // The line comes once the lock is held (flock runs the command only then).
        let mut line = String::new();
        std::io::BufReader::new(flock.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the sleeper's pid");
        let pid: i32 = line.trim().parse().expect("pid");
        LockHolder {
            flock,
            sleeper: nix::unistd::Pid::from_raw(pid),
        }
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.flock.kill();
        let _ = self.flock.wait();
        let _ = nix::sys::signal::kill(self.sleeper, nix::sys::signal::Signal::SIGKILL);
    }
}

fn lock_is_free(lock: &Path) -> bool {
    let f = fs::File::open(lock).expect("open lock");
    f.try_lock().is_ok()
}

#[test]
fn killed_lock_holder_and_leftovers_keep_the_store_usable() {
    let o = ours();
    let tmp = temp_dir();
    let cfg = subnet("1.1.0", tmp.path(), "10.9.0.0/24");
    add_ok(&o, &cfg, "c0"); // creates the store: .2
    let dir = store_dir(tmp.path());
    let lock = dir.join("lock");

    // A holder of the store lock is SIGKILLed: the kernel drops its flock, and its child,
    // still running, does not hold it.
    let mut holder = LockHolder::take(&lock);
    assert!(!lock_is_free(&lock), "the holder holds the lock");
    holder.flock.kill().expect("kill flock");
    holder.flock.wait().expect("reap flock");
    assert!(
        nix::sys::signal::kill(holder.sleeper, None).is_ok(),
        "its child still runs"
    );
    assert!(lock_is_free(&lock), "the lock died with its holder");
    drop(holder);

    // Leftovers of plugins killed mid-ADD: an empty reservation (reference: create then
    // write), temp files (ours, and an earlier version's) and a garbage last_reserved_ip.
    fs::write(dir.join("10.9.0.3"), "").expect("write");
    fs::write(dir.join(".tmp-10.9.0.4-99999"), "c7\r\neth0").expect("write");
    fs::write(dir.join(".tmp-last_reserved_ip.0.99999.0.l"), "10.9.0.9").expect("write");
    fs::write(dir.join("last_reserved_ip.0"), "10.9.").expect("write");
    // Garbage last_reserved_ip: restart at the range start; .2 and the empty .3 stay
    // taken; the temp files do not block .4.
    assert_eq!(add_ok(&o, &cfg, "c1"), "10.9.0.4");
    assert_eq!(
        add_ok(&theirs(), &subnet("1.0.0", tmp.path(), "10.9.0.0/24"), "c2"),
        "10.9.0.5"
    );
    call(&o, "CHECK", &cfg, "c1").run().expect_ok();
    call(&o, "CHECK", &cfg, "c2").run().expect_ok();
    // GC reclaims the ownerless empty file and the temp files.
    let mut gc = cfg.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "c0", "ifname": "eth0"},
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c2", "ifname": "eth0"}
    ]);
    Call::new(&o, "GC", gc).run().expect_ok();
    let ips: Vec<String> = reservations(tmp.path())
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect();
    assert_eq!(ips, ["10.9.0.2", "10.9.0.4", "10.9.0.5"]);
    assert!(!dir_entries(&dir).iter().any(|n| n.starts_with(".tmp-")));
}
