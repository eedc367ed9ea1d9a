//! Soak with crashes (issue 10): mixed ADD, DEL, repeated ADD and CHECK of pods through the
//! whole flannel → bridge → host-local chain with ipMasq, many at once, while processes of
//! the chain are killed (SIGKILL) at random points; then the node must be exactly as the
//! runtime believes it is.
//!
//! The runtime modelled: a pod whose ADD succeeded is live until its DEL succeeds. An ADD
//! that failed or was killed leaves its attachment "dirty": the runtime DELs it later (kubelet
//! retries until the DEL succeeds), or gives the sandbox up (its netns goes, no DEL ever
//! comes) and leaves it to GC. A DEL that failed or was killed is retried. A repeated ADD of
//! a live pod (a runtime retrying after a timeout) must fail and leave the pod alone; CHECK
//! of a live pod must pass. The runtime never runs two commands of one pod at once, and GC
//! runs alone.
//!
//! Killing: each invocation runs in its own process group; with probability `kill` the test
//! waits a random time (up to a little more than an invocation takes on average, so every
//! phase is hit) and kills one random process of that group: flannel, bridge, host-local or
//! a firewall tool they run. It then waits until every process of the group is gone, orphans
//! included, before the runtime moves on.
//!
//! Afterwards: the store parses and holds no address twice, every live pod passes CHECK and
//! answers a ping from the node and from another pod, and one GC through flannel with the
//! live attachments leaves no reservation, masquerade rule, saved flannel config, veth or
//! temp file of anything else. Then every pod is deleted and nothing at all is left.
//!
//! Parameters (environment): `RCNI_SOAK_SEED` (printed by every run: the seed fixes every
//! decision, the machine's timing the rest), `RCNI_SOAK_OPS`, `RCNI_SOAK_CONCURRENCY`,
//! `RCNI_SOAK_BACKEND` (`iptables`, the default, or `nftables`), `RCNI_SOAK_KILL` (the share
//! of invocations with a kill, default 0.3). `soak_short` runs in the test command;
//! `soak_long` (1000 operations at concurrency 50) is `#[ignore]`d:
//!
//! ```sh
//! sudo RCNI_SOAK_BACKEND=nftables cargo test -p rcni-integration --test soak -- --ignored --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcni_integration::{
    Call, FlannelNode, Reply, Running, TestNetns, bin, dir_entries, eventually,
};
use serde_json::{Value, json};

const NETWORK: &str = "soaknet";
/// A /22: room for every slot plus the addresses abandoned attachments hold until GC.
const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.4.1/22\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
const IFNAME: &str = "eth0";
/// An invocation still running after this is hung: the soak fails.
const HUNG: Duration = Duration::from_secs(120);

/// splitmix64: small, seedable, good enough to pick slots and delays.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    ops: usize,
    concurrency: usize,
    backend: String,
    kill: f64,
}

impl Params {
    fn from_env(ops: usize, concurrency: usize) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let seed = var("RCNI_SOAK_SEED")
            .map(|s| {
                let s = s.trim_start_matches("0x");
                u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("RCNI_SOAK_SEED {s:?}: {e}"))
            })
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id())).next()
            });
        let num = |k: &str, d: usize| var(k).map_or(d, |v| v.parse().expect(k));
        let backend = var("RCNI_SOAK_BACKEND").unwrap_or_else(|| "iptables".to_owned());
        assert!(
            backend == "iptables" || backend == "nftables",
            "RCNI_SOAK_BACKEND is iptables or nftables, not {backend:?}"
        );
        Params {
            seed,
            ops: num("RCNI_SOAK_OPS", ops),
            concurrency: num("RCNI_SOAK_CONCURRENCY", concurrency),
            backend,
            kill: var("RCNI_SOAK_KILL").map_or(0.3, |v| v.parse().expect("RCNI_SOAK_KILL")),
        }
    }
}

/// What the runtime believes of one pod slot.
#[derive(Debug)]
enum Pod {
    Empty,
    /// ADD succeeded, no DEL since; `result` is what ADD returned (CHECK's `prevResult`).
    Live {
        cid: String,
        ns: TestNetns,
        ip: String,
        result: Value,
    },
    /// An ADD or DEL failed or was killed: the runtime owes it a DEL.
    Dirty {
        cid: String,
        ns: TestNetns,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Add,
    Del,
    RepeatedAdd,
    Check,
    /// DEL of a dirty attachment (after a failed or killed ADD or DEL).
    RetryDel,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Ok,
    Error,
    Killed,
}

/// What a planned kill aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Flannel = 0,
    Bridge = 1,
    HostLocal = 2,
    /// What bridge runs for the masquerade rules (`iptables-restore`, `nft`, ...).
    Tool = 3,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::Flannel,
        Target::Bridge,
        Target::HostLocal,
        Target::Tool,
    ];

    fn is(self, comm: &str) -> bool {
        match self {
            Target::Flannel => comm == "flannel",
            Target::Bridge => comm == "bridge",
            Target::HostLocal => comm == "host-local",
            // A child between fork and exec still has the name of the test's thread
            // (`soak_short`, `soak_long`): not a tool yet.
            Target::Tool => {
                !matches!(comm, "flannel" | "bridge" | "host-local" | "ip")
                    && !comm.starts_with("soak")
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    ops: BTreeMap<(Kind, End, bool), usize>,
    victims: BTreeMap<String, usize>,
    /// Kills planned whose target ended (or never ran) before the kill point.
    missed: BTreeMap<Target, usize>,
    /// The longest time processes of an invocation ran on after it ended (orphans).
    orphan_wait: Duration,
    abandoned: usize,
}

struct Soak {
    p: Params,
    node: FlannelNode,
    slots: Mutex<Vec<Option<Pod>>>,
    /// Attachments the runtime gave up on (container IDs): not live, left to GC.
    abandoned: Mutex<Vec<String>>,
    next_op: AtomicUsize,
    /// Running mean of how long a process of each [`Target`] lives (µs), to spread the kill
    /// points over its life.
    life_us: [AtomicU64; 4],
    /// What a kill may aim at: with the delegates in flannel's process (the multi-call
    /// layout, `target/bin`), there is no bridge or host-local process to kill, and a kill
    /// of flannel at a random point of its life lands in their code as often.
    targets: Vec<Target>,
    stats: Mutex<Stats>,
    failures: Mutex<Vec<String>>,
}

/// [`Target::ALL`], without the delegates when they run inside flannel's process (this
/// build's multi-call binary runs a delegate that is the same file in-process), and without
/// the tools on the nftables backend (netlink, no process).
fn kill_targets(backend: &str) -> Vec<Target> {
    let file = |name: &str| std::fs::canonicalize(bin(name)).ok();
    let in_process = file("flannel").is_some()
        && ["bridge", "host-local"]
            .iter()
            .all(|d| file(d) == file("flannel"));
    let tools = backend != "nftables";
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| match t {
            Target::Flannel => true,
            Target::Bridge | Target::HostLocal => !in_process,
            Target::Tool => tools,
        })
        .collect();
    eprintln!(
        "soak: delegates {}; kills aim at {targets:?}",
        if in_process {
            "in flannel's process"
        } else {
            "exec'd"
        }
    );
    targets
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `pid` and its descendants (through every thread's `children`): (pid, command name).
fn tree(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{p}/comm")) else {
            continue;
        };
        out.push((p, comm.trim_end().to_owned()));
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.filter_map(Result::ok) {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Processes of process group `pgid`: (pid, command name).
fn group(pgid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if *state != "Z" && pgrp.parse::<u32>().ok() == Some(pgid) {
            out.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    out
}

fn pod_ip(result: &Value) -> Option<String> {
    let a = result["ips"][0]["address"].as_str()?;
    Some(a.split('/').next()?.to_owned())
}

impl Soak {
    fn conf(&self) -> Value {
        self.node
            .flannel_conf(json!({"ipMasqBackend": self.p.backend}))
    }

    fn call(&self, command: &str, cid: &str, ns: Option<&TestNetns>) -> Call {
        let mut c = Call::new(bin("flannel"), command, self.conf())
            .container(cid)
            .ifname(IFNAME)
            .in_node(&self.node.ns)
            .args("IgnoreUnknown=1;K8S_POD_NAMESPACE=soak;K8S_POD_NAME=pod");
        if let Some(ns) = ns {
            c = c.netns(ns);
        }
        c
    }

    /// CHECK as a runtime sends it: the ADD's result as `prevResult`.
    fn check(&self, cid: &str, ns: &TestNetns, result: &Value) -> Call {
        let mut c = self.call("CHECK", cid, Some(ns));
        c.config["prevResult"] = result.clone();
        c
    }

    fn fail(&self, what: String) {
        eprintln!("soak: FAILURE: {what}");
        lock(&self.failures).push(what);
    }

    /// Runs `call`, killing one process of it at a random point when `rng` says so (see
    /// the top), and waits until every process of the invocation is gone.
    fn invoke(&self, call: &Call, rng: &mut Rng) -> (Reply, Option<String>) {
        let plan = rng.chance(self.p.kill).then(|| {
            (
                self.targets[rng.below(self.targets.len() as u64) as usize],
                rng.below(1 << 20) as f64 / f64::from(1 << 20),
            )
        });
        let start = Instant::now();
        let mut running = call.spawn();
        let pgid = running.pid();
        let mut victim = None;
        if let Some((target, at)) = plan {
            victim = self.kill_in(&mut running, target, at);
            if victim.is_none() {
                *lock(&self.stats).missed.entry(target).or_default() += 1;
            }
        }
        while !running.exited() {
            if start.elapsed() > HUNG {
                for (pid, _) in group(pgid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                self.fail(format!("{} {} hung", call.command, call.container_id));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let reply = running.wait();
        // Orphans (a killed flannel's bridge) finish before the runtime goes on.
        let orphans = Instant::now();
        loop {
            let left = group(pgid);
            if left.is_empty() {
                break;
            }
            if orphans.elapsed() > HUNG {
                let states: Vec<String> = left
                    .iter()
                    .map(|(pid, comm)| {
                        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                            .unwrap_or_default();
                        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
                            .unwrap_or_default();
                        format!("{pid} {comm} in {wchan}: {stack}")
                    })
                    .collect();
                self.fail(format!(
                    "{} {}: processes still running {HUNG:?} after it ended: {states:?}",
                    call.command, call.container_id
                ));
                for (pid, _) in left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let waited = orphans.elapsed();
        let mut s = lock(&self.stats);
        s.orphan_wait = s.orphan_wait.max(waited);
        drop(s);
        (reply, victim)
    }

    /// Waits for a process of kind `target` in the invocation's tree, then for the fraction
    /// `at` of (a little more than) how long such a process lives, and kills it. Returns its
    /// name, or None when the invocation ended first (or never ran one).
    fn kill_in(&self, running: &mut Running, target: Target, at: f64) -> Option<String> {
        let slot = target as usize;
        let mut seen: Option<(u32, Instant)> = None;
        loop {
            if running.exited() {
                return None;
            }
            let found = tree(running.pid())
                .into_iter()
                .find(|(_, comm)| target.is(comm));
            match (found, seen) {
                (Some((pid, _)), Some((was, _))) if pid != was => {
                    seen = Some((pid, Instant::now()))
                }
                (Some((pid, comm)), Some((_, since))) => {
                    let life = self.life_us[slot].load(Ordering::Relaxed) as f64;
                    if since.elapsed().as_micros() as f64 >= at * life * 1.25 {
                        let killed = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        return killed.is_ok().then_some(comm);
                    }
                }
                (Some((pid, _)), None) => seen = Some((pid, Instant::now())),
                (None, Some((_, since))) => {
                    // It lived this long: learn from it, and wait for another one.
                    let took = since.elapsed().as_micros() as u64;
                    let old = self.life_us[slot].load(Ordering::Relaxed);
                    self.life_us[slot].store((old * 7 + took) / 8, Ordering::Relaxed);
                    seen = None;
                }
                (None, None) => {}
            }
            // The kill point itself, not a wait for readiness. host-local and the tools live
            // a millisecond or two: look often enough to catch them.
            std::thread::sleep(Duration::from_micros(match target {
                Target::Flannel | Target::Bridge => 300,
                Target::HostLocal | Target::Tool => 50,
            }));
        }
    }

    fn record(&self, kind: Kind, reply: &Reply, victim: &Option<String>) -> End {
        let end = match reply.code {
            0 => End::Ok,
            1 => End::Error,
            _ => End::Killed,
        };
        {
            let mut s = lock(&self.stats);
            *s.ops.entry((kind, end, victim.is_some())).or_default() += 1;
            if let Some(v) = victim {
                *s.victims.entry(v.clone()).or_default() += 1;
            }
        }
        if end == End::Error {
            let v: Value = serde_json::from_str(&reply.stdout).unwrap_or(Value::Null);
            if v["code"].as_u64().is_none_or(|c| c == 0) || !v["msg"].is_string() {
                self.fail(format!(
                    "{kind:?}: exit 1 without an error object: {reply:?}"
                ));
            }
        }
        if end == End::Killed && victim.is_none() {
            self.fail(format!("{kind:?}: died without being killed: {reply:?}"));
        }
        end
    }

    /// One runtime step on a random idle slot.
    fn step(&self, op: usize) {
        let mut rng = Rng::new(self.p.seed ^ (op as u64).wrapping_mul(0xa076_1d64_78bd_642f));
        let (idx, pod) = {
            let mut slots = lock(&self.slots);
            let idle: Vec<usize> = (0..slots.len()).filter(|i| slots[*i].is_some()).collect();
            let idx = idle[rng.below(idle.len() as u64) as usize];
            (idx, slots[idx].take().unwrap_or(Pod::Empty))
        };
        let next = match pod {
            Pod::Empty => {
                let cid = format!("soak-{:x}-{op}", self.p.seed & 0xffff);
                let ns = TestNetns::new("sk");
                let (reply, victim) = self.invoke(&self.call("ADD", &cid, Some(&ns)), &mut rng);
                match self.record(Kind::Add, &reply, &victim) {
                    End::Ok => match serde_json::from_str::<Value>(&reply.stdout)
                        .ok()
                        .and_then(|result| Some((pod_ip(&result)?, result)))
                    {
                        Some((ip, result)) => Pod::Live {
                            cid,
                            ns,
                            ip,
                            result,
                        },
                        None => {
                            self.fail(format!("ADD {cid}: no address in {reply:?}"));
                            Pod::Dirty { cid, ns }
                        }
                    },
                    end => {
                        if victim.is_none() {
                            self.fail(format!("ADD {cid} failed ({end:?}): {reply:?}"));
                        }
                        Pod::Dirty { cid, ns }
                    }
                }
            }
            Pod::Live {
                cid,
                ns,
                ip,
                result,
            } => {
                let roll = rng.below(100);
                if roll < 70 {
                    let (reply, victim) = self.invoke(&self.call("DEL", &cid, Some(&ns)), &mut rng);
                    match self.record(Kind::Del, &reply, &victim) {
                        End::Ok => Pod::Empty,
                        end => {
                            if victim.is_none() {
                                self.fail(format!("DEL {cid} failed ({end:?}): {reply:?}"));
                            }
                            Pod::Dirty { cid, ns }
                        }
                    }
                } else if roll < 85 {
                    let (reply, victim) = self.invoke(&self.call("ADD", &cid, Some(&ns)), &mut rng);
                    if self.record(Kind::RepeatedAdd, &reply, &victim) == End::Ok {
                        self.fail(format!("a repeated ADD of live {cid} succeeded: {reply:?}"));
                    }
                    Pod::Live {
                        cid,
                        ns,
                        ip,
                        result,
                    }
                } else {
                    let (reply, victim) = self.invoke(&self.check(&cid, &ns, &result), &mut rng);
                    let end = self.record(Kind::Check, &reply, &victim);
                    if end != End::Ok && victim.is_none() {
                        self.fail(format!("CHECK of live {cid} failed: {reply:?}"));
                    }
                    Pod::Live {
                        cid,
                        ns,
                        ip,
                        result,
                    }
                }
            }
            Pod::Dirty { cid, ns } => {
                if rng.chance(0.25) {
                    // The runtime gives the sandbox up: its netns goes, no DEL comes.
                    drop(ns);
                    lock(&self.abandoned).push(cid);
                    lock(&self.stats).abandoned += 1;
                    Pod::Empty
                } else {
                    let (reply, victim) = self.invoke(&self.call("DEL", &cid, Some(&ns)), &mut rng);
                    match self.record(Kind::RetryDel, &reply, &victim) {
                        End::Ok => Pod::Empty,
                        end => {
                            if victim.is_none() {
                                self.fail(format!(
                                    "DEL of dirty {cid} failed ({end:?}): {reply:?}"
                                ));
                            }
                            Pod::Dirty { cid, ns }
                        }
                    }
                }
            }
        };
        lock(&self.slots)[idx] = Some(next);
    }

    fn worker(&self) {
        loop {
            let op = self.next_op.fetch_add(1, Ordering::Relaxed);
            if op >= self.p.ops {
                return;
            }
            self.step(op);
        }
    }

    /// Live pods: container ID → (netns, IP).
    fn live(&self) -> BTreeMap<String, (String, String)> {
        lock(&self.slots)
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Pod::Live { cid, ns, ip, .. } => {
                    Some((cid.clone(), (ns.name().to_owned(), ip.clone())))
                }
                _ => None,
            })
            .collect()
    }

    /// Reservation files: address → content.
    fn reservations(&self) -> BTreeMap<String, String> {
        let dir = self.node.ipam_dir().join(NETWORK);
        self.node
            .reservations()
            .into_iter()
            .map(|ip| {
                let c = std::fs::read_to_string(dir.join(&ip))
                    .unwrap_or_else(|e| panic!("reservation {ip} unreadable: {e}"));
                (ip, c)
            })
            .collect()
    }

    /// Container IDs whose masquerade rules are in the node, and our chains or tables'
    /// chains that hold no rule of a live attachment.
    fn rules(&self) -> BTreeSet<String> {
        let text = if self.p.backend == "iptables" {
            self.node.ns.iptables_nat()
        } else {
            self.node.ns.nft_ruleset()
        };
        let mut ids = BTreeSet::new();
        for part in text.split("id: ").skip(1) {
            let id: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .collect();
            ids.insert(id);
        }
        ids
    }

    /// What of ours in the node's firewall belongs to no live attachment: our iptables
    /// chains (`RCNI-…`, one per attachment) without a live attachment's rule; in our
    /// nftables tables, regular chains without one, and map elements (address → chain) whose
    /// address is no live pod's or whose chain is gone, and live pods without an element.
    fn stray_rules(&self, live: &BTreeMap<String, (String, String)>) -> Vec<String> {
        let is_live_rule = |l: &str| live.keys().any(|cid| l.contains(&format!("id: {cid}\"")));
        if self.p.backend == "iptables" {
            let text = self.node.ns.iptables_nat();
            let chains: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split(' ').next())
                .filter(|c| c.starts_with("RCNI-"))
                .collect();
            let owned = |chain: &str| {
                text.lines()
                    .any(|l| l.starts_with(&format!("-A {chain} ")) && is_live_rule(l))
            };
            return chains
                .into_iter()
                .filter(|c| !owned(c))
                .map(|c| format!("chain {c}"))
                .collect();
        }
        let text = self.node.ns.nft_ruleset();
        let live_ips: BTreeSet<&str> = live.values().map(|(_, ip)| ip.as_str()).collect();
        let mut stray = Vec::new();
        let mut chains = BTreeSet::new();
        let mut elements = Vec::new();
        // (name, base chain, holds a live rule) of the chain being read.
        let mut chain: Option<(String, bool, bool)> = None;
        let mut ours = false;
        for line in text.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix("table ") {
                ours = table.contains("rcni");
                continue;
            }
            if !ours {
                continue;
            }
            if let Some(name) = line.strip_prefix("chain ") {
                chain = Some((name.trim_end_matches(" {").to_owned(), false, false));
            } else if line == "}" {
                if let Some((name, base, owned)) = chain.take() {
                    if !base && !owned {
                        stray.push(format!("chain {name}"));
                    }
                    chains.insert(name);
                }
            } else if let Some((_, base, owned)) = &mut chain {
                *base |= line.contains(" hook ");
                *owned |= is_live_rule(line);
            } else {
                // Map elements: `<address> : jump <chain>`, a few per line.
                for item in line.split([',', '{', '}']) {
                    if let Some((ip, target)) = item.split_once(" : jump ") {
                        elements.push((ip.trim().to_owned(), target.trim().to_owned()));
                    }
                }
            }
        }
        for ip in &live_ips {
            if !elements.iter().any(|(e, _)| e == ip) {
                stray.push(format!("no element for live {ip}"));
            }
        }
        for (ip, target) in elements {
            if !live_ips.contains(ip.as_str()) || !chains.contains(&target) {
                stray.push(format!("element {ip} : jump {target}"));
            }
        }
        stray
    }
}

fn run_soak(p: Params) {
    rcni_integration::require_root();
    eprintln!(
        "soak: seed {:x} ({} operations, concurrency {}, backend {}, kill {}); replay with RCNI_SOAK_SEED={:x}",
        p.seed, p.ops, p.concurrency, p.backend, p.kill, p.seed
    );
    let started = Instant::now();
    let node = FlannelNode::new("sk", NETWORK, SUBNET_ENV);
    let slots = (p.concurrency * 5 / 2).max(8);
    let soak = Soak {
        node,
        slots: Mutex::new((0..slots).map(|_| Some(Pod::Empty)).collect()),
        abandoned: Mutex::new(Vec::new()),
        next_op: AtomicUsize::new(0),
        // Starting guesses; learnt as the soak runs.
        life_us: [20_000, 15_000, 3_000, 5_000].map(AtomicU64::new),
        targets: kill_targets(&p.backend),
        stats: Mutex::new(Stats::default()),
        failures: Mutex::new(Vec::new()),
        p: p.clone(),
    };
    std::thread::scope(|s| {
        for _ in 0..p.concurrency {
            s.spawn(|| soak.worker());
        }
    });
    let churned = started.elapsed();

    // The runtime settles what it owes: a dirty attachment is DELeted or given up.
    let mut rng = Rng::new(p.seed ^ 0x5eed);
    for slot in lock(&soak.slots).iter_mut() {
        if matches!(slot, Some(Pod::Dirty { .. }))
            && let Some(Pod::Dirty { cid, ns }) = slot.take()
        {
            if rng.chance(0.25) {
                drop(ns);
                lock(&soak.abandoned).push(cid);
                lock(&soak.stats).abandoned += 1;
            } else {
                let r = soak.call("DEL", &cid, Some(&ns)).run();
                if !r.ok() {
                    soak.fail(format!("final DEL of dirty {cid}: {r:?}"));
                }
            }
            *slot = Some(Pod::Empty);
        }
    }
    let live = soak.live();
    let abandoned: BTreeSet<String> = lock(&soak.abandoned).iter().cloned().collect();
    {
        let s = lock(&soak.stats);
        eprintln!(
            "soak: {} operations in {:.1}s; outcome counts (kind, end, killed):",
            p.ops,
            churned.as_secs_f64()
        );
        for ((k, e, killed), n) in &s.ops {
            eprintln!(
                "soak:   {k:?} {e:?}{} {n}",
                if *killed { " (kill sent)" } else { "" }
            );
        }
        eprintln!("soak: processes killed: {:?}", s.victims);
        eprintln!(
            "soak: kills planned whose target was gone first: {:?}",
            s.missed
        );
        eprintln!(
            "soak: longest run of orphans after their invocation ended: {:?}",
            s.orphan_wait
        );
        eprintln!(
            "soak: {} live pods, {} attachments given up to GC",
            live.len(),
            s.abandoned
        );
    }

    // The store parses; no address is held twice; every live pod holds exactly its own.
    let res = soak.reservations();
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ip, content) in &res {
        let (cid, ifname) = content
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("reservation {ip} is not <id>\\r\\n<ifname>: {content:?}"));
        assert_eq!(ifname, IFNAME, "{ip}: {content:?}");
        assert!(
            live.contains_key(cid) || abandoned.contains(cid),
            "{ip} is held by {cid}, neither live nor given up (a leak no GC is owed)"
        );
        owners.entry(cid.to_owned()).or_default().push(ip.clone());
    }
    let ips: BTreeSet<&String> = live.values().map(|(_, ip)| ip).collect();
    assert_eq!(
        ips.len(),
        live.len(),
        "two live pods share an address: {live:?}"
    );
    for (cid, (_, ip)) in &live {
        assert_eq!(
            owners.get(cid),
            Some(&vec![ip.clone()]),
            "{cid}'s reservations"
        );
    }
    let ipam_dir = soak.node.ipam_dir().join(NETWORK);
    let last = std::fs::read_to_string(ipam_dir.join("last_reserved_ip.0")).unwrap_or_default();
    assert!(
        last.is_empty() || last.trim().parse::<std::net::IpAddr>().is_ok(),
        "last_reserved_ip.0 = {last:?}"
    );

    // Every live pod is whole: CHECK passes, its address is on its eth0, the node and another
    // pod reach it.
    let check_pods = |when: &str| {
        let slots = lock(&soak.slots);
        let live_pods: Vec<(&String, &TestNetns, &String, &Value)> = slots
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Pod::Live {
                    cid,
                    ns,
                    ip,
                    result,
                } => Some((cid, ns, ip, result)),
                _ => None,
            })
            .collect();
        for (i, (cid, ns, ip, result)) in live_pods.iter().enumerate() {
            let r = soak.check(cid, ns, result).run();
            assert!(r.ok(), "{when}: CHECK {cid}: {r:?}");
            assert!(
                ns.addrs(IFNAME)
                    .iter()
                    .any(|a| a.starts_with(&format!("{ip}/"))),
                "{when}: {cid} lost {ip}: {:?}",
                ns.addrs(IFNAME)
            );
            assert!(
                soak.node.ns.ping(ip),
                "{when}: the node cannot reach {cid} at {ip}"
            );
            let (_, other, _, _) = live_pods[(i + 1) % live_pods.len()];
            assert!(other.ping(ip), "{when}: a pod cannot reach {cid} at {ip}");
        }
    };
    check_pods("before GC");
    let rules = soak.rules();
    for cid in live.keys() {
        assert!(
            rules.contains(cid),
            "before GC: no masquerade rule for live {cid}"
        );
    }

    // One GC through flannel with the live attachments (spec 1.1.0).
    let mut gc = soak.conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = live
        .keys()
        .map(|cid| json!({"containerID": cid, "ifname": IFNAME}))
        .collect();
    let r = Call::new(bin("flannel"), "GC", gc)
        .in_node(&soak.node.ns)
        .run();
    assert!(r.ok(), "GC: {r:?}");

    let live_ips: BTreeMap<String, String> = live
        .iter()
        .map(|(cid, (_, ip))| (ip.clone(), format!("{cid}\r\n{IFNAME}")))
        .collect();
    assert_eq!(soak.reservations(), live_ips, "after GC: reservations");
    let mut expected_ipam: Vec<String> = vec![".rcni-owners".into(), "lock".into()];
    if !last.is_empty() {
        expected_ipam.push("last_reserved_ip.0".into());
    }
    expected_ipam.extend(live_ips.keys().cloned());
    expected_ipam.sort();
    assert_eq!(
        dir_entries(&ipam_dir),
        expected_ipam,
        "after GC: the store directory"
    );
    let saved: Vec<String> = live.keys().cloned().collect();
    assert_eq!(
        dir_entries(&soak.node.flannel_dir()),
        saved,
        "after GC: saved flannel configs"
    );
    assert_eq!(
        soak.rules(),
        live.keys().cloned().collect::<BTreeSet<_>>(),
        "after GC: masquerade rules"
    );
    assert_eq!(
        soak.stray_rules(&live),
        Vec::<String>::new(),
        "after GC: firewall state of ours"
    );
    // The veths of deleted pod netns go with them, a little later.
    eventually("one host veth per live pod", || {
        soak.node.veths().len() == live.len()
    });
    check_pods("after GC");

    // Everything goes with the pods.
    for pod in lock(&soak.slots).drain(..).flatten() {
        if let Pod::Live { cid, ns, .. } = pod {
            let r = soak.call("DEL", &cid, Some(&ns)).run();
            assert!(r.ok(), "DEL {cid}: {r:?}");
        }
    }
    assert!(soak.reservations().is_empty(), "after DEL of every pod");
    assert!(dir_entries(&soak.node.flannel_dir()).is_empty());
    assert!(soak.rules().is_empty(), "rules left: {:?}", soak.rules());
    assert_eq!(
        soak.stray_rules(&BTreeMap::new()),
        Vec::<String>::new(),
        "after every DEL"
    );
    eventually("no host veth", || soak.node.veths().is_empty());

    let failures = lock(&soak.failures);
    assert!(
        failures.is_empty(),
        "seed {:x}: {} failures, first: {:?}",
        p.seed,
        failures.len(),
        failures.first()
    );
    eprintln!(
        "soak: seed {:x} passed in {:.1}s",
        p.seed,
        started.elapsed().as_secs_f64()
    );
}

/// The short form, part of the test command: 200 operations at concurrency 50.
#[test]
fn soak_short() {
    run_soak(Params::from_env(200, 50));
}

/// The long form: 1000 operations at concurrency 50 (see the top for the command).
#[test]
#[ignore = "long soak (1000 operations): cargo test -p rcni-integration --test soak -- --ignored"]
fn soak_long() {
    run_soak(Params::from_env(1000, 50));
}
