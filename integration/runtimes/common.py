"""Shared fixtures for the runtime suite: node netns, call recorder, temp dirs, commands.

Everything runs inside a "node" network namespace made here (never the machine's own);
every namespace, process and mount made is removed in cleanup, also when a test fails.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUR_PLUGINS = ["flannel", "bridge", "host-local", "loopback", "portmap"]


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def run(cmd, check_rc=True, input=None, env=None, timeout=120):
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise Fail(f"{' '.join(cmd)} -> rc {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def netns_inode(path):
    return os.stat(path).st_ino


class Netns:
    """`ip netns add rcni-rt-<tag><pid>`, lo up; deleted by close()."""

    def __init__(self, tag):
        self.name = f"rcni-rt-{tag}{os.getpid()}"
        run(["ip", "netns", "add", self.name])
        self.path = f"/run/netns/{self.name}"
        self.exec(["ip", "link", "set", "lo", "up"])

    def exec(self, cmd, **kw):
        return run(["ip", "netns", "exec", self.name] + cmd, **kw)

    def close(self):
        if os.path.exists(self.path):
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


RECORDER = r"""#!/bin/bash
# rcni call recorder: logs one plugin call (env, stdin, stdout, stderr, rc, netns) then the real plugin.
d="@LOG@/$(date +%s%N)-$$"
mkdir -p "$d"
echo "@REAL@" > "$d/binary"
readlink /proc/self/ns/net > "$d/netns"
env | grep -E '^CNI_' > "$d/env"
cat > "$d/stdin"
"@REAL@" < "$d/stdin" > "$d/stdout" 2> "$d/stderr"
rc=$?
echo "$rc" > "$d/rc"
cat "$d/stdout"
cat "$d/stderr" >&2
exit "$rc"
"""


class Recorder:
    """A plugin dir of wrappers that log every call, then exec the real plugins."""

    def __init__(self, root, plugins):
        """plugins: {name: real path}."""
        self.dir = os.path.join(root, "bin")
        self.log = os.path.join(root, "calls")
        os.makedirs(self.dir)
        os.makedirs(self.log)
        for name, real in plugins.items():
            check(os.path.exists(real), f"plugin binary missing: {real}")
            p = os.path.join(self.dir, name)
            with open(p, "w") as f:
                f.write(RECORDER.replace("@LOG@", self.log).replace("@REAL@", real))
            os.chmod(p, 0o755)

    def calls(self):
        out = []
        for d in sorted(os.listdir(self.log), key=lambda s: tuple(int(x) for x in s.split("-"))):
            full = os.path.join(self.log, d)

            def rd(n):
                try:
                    with open(os.path.join(full, n)) as f:
                        return f.read()
                except FileNotFoundError:
                    return None

            env = dict(line.split("=", 1) for line in (rd("env") or "").splitlines() if "=" in line)
            rc = rd("rc")
            out.append({
                "binary": (rd("binary") or "").strip(),
                "plugin": os.path.basename((rd("binary") or "").strip()),
                "netns": (rd("netns") or "").strip(),
                "env": env,
                "cmd": env.get("CNI_COMMAND", ""),
                "stdin": rd("stdin") or "",
                "stdout": rd("stdout") or "",
                "stderr": rd("stderr") or "",
                "rc": int(rc) if rc and rc.strip() else None,
            })
        return out

    def clear(self):
        for d in os.listdir(self.log):
            shutil.rmtree(os.path.join(self.log, d))


def fmt_calls(calls):
    return "\n".join(
        f"  {c['cmd']:8} {c['plugin']:10} rc={c['rc']} if={c['env'].get('CNI_IFNAME','')!r} "
        f"netns={c['env'].get('CNI_NETNS','')!r} args={c['env'].get('CNI_ARGS','')!r}"
        + (f"\n     stdout={c['stdout'][:300]!r} stderr={c['stderr'][:300]!r}" if c["rc"] else "")
        for c in calls)


def node_inode_str(node):
    """What readlink /proc/self/ns/net prints inside the node netns."""
    return node.exec(["readlink", "/proc/self/ns/net"]).stdout.strip()


def wait_for(pred, what, timeout=60.0):
    """Polls a condition (readiness of a daemon we started), failing after timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise Fail(f"timed out waiting for {what}")


class Outside:
    """A client outside the node: a netns on a veth to the node, node 192.168.77.1/24, client
    192.168.77.2/24. Reaches the node's host ports with `busybox nc`."""

    NODE_IP = "192.168.77.1"

    def __init__(self, node, tag):
        self.ns = Netns(f"out{tag}")
        a, b = f"rto{os.getpid()}", f"rti{os.getpid()}"
        run(["ip", "link", "add", a, "netns", node.name, "type", "veth", "peer", "name", b,
             "netns", self.ns.name])
        node.exec(["ip", "addr", "add", f"{self.NODE_IP}/24", "dev", a])
        node.exec(["ip", "link", "set", a, "up"])
        self.ns.exec(["ip", "addr", "add", "192.168.77.2/24", "dev", b])
        self.ns.exec(["ip", "link", "set", b, "up"])

    def tcp(self, port, host=None):
        """What the server at node:port says, or None when nothing answers."""
        p = self.ns.exec(["busybox", "nc", "-w", "2", host or self.NODE_IP, str(port)],
                         check_rc=False, input="")
        out = p.stdout.strip()
        return out if p.returncode == 0 and out else None

    def close(self):
        self.ns.close()


def tcp_from(ns_cmd, host, port):
    """`busybox nc` to host:port through the command prefix ns_cmd; the answer or None."""
    p = run(ns_cmd + ["busybox", "nc", "-w", "2", host, str(port)], check_rc=False, input="")
    out = p.stdout.strip()
    return out if p.returncode == 0 and out else None


def serve(ns_cmd, port, text):
    """A TCP server answering `text` on every connection, run through the command prefix
    ns_cmd (e.g. `ip netns exec X`); the caller polls for readiness and kills it."""
    return subprocess.Popen(ns_cmd + ["busybox", "nc", "-ll", "-p", str(port), "-e",
                                      "/bin/busybox", "echo", text],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=f"rcni-rt-{prefix}-")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, v):
    with open(path, "w") as f:
        json.dump(v, f, indent=1)


# A private mount namespace's own /run and /var/lib: what runtimes keep in fixed places there
# (netns files, shim sockets, libcni's cache in /var/lib/cni, podman's state) stays off the host.
PRIVATE_MOUNTS = ("mount -t tmpfs -o mode=755 rcni-run /run && mkdir /run/netns"
                  " && mount -t tmpfs -o mode=755 rcni-varlib /var/lib")


def kill_processes_under(tmp):
    """Processes a test started that outlive it (containerd shims, conmon): their command line
    names the test's own temp dir, so nothing else can match."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if tmp in cmd and ("containerd-shim" in cmd or "conmon" in cmd):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_group(proc, grace=30):
    """Ends a daemon started with start_new_session: SIGTERM to its process group, SIGKILL if it
    is still there after `grace` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class PrivatePodman:
    """Debian's podman 4.3 with every storage, state and config path under `tmp`, run in
    `node`'s netns and in a private mount namespace (own /run, /var/lib, /dev/shm) that a holder
    process keeps: the machine's own podman images, containers and CNI configs are never
    touched, and whatever podman mounts goes away with the holder. runc, cgroupfs, file events
    and locks, explicit ulimits. `network`: (plugin dir, network name) to put containers on
    that CNI network by default (its config in `tmp`/net.d); without it they get none unless
    asked (`--network host`)."""

    def __init__(self, tmp, node, network=None):
        self.tmp = tmp
        os.makedirs(os.path.join(tmp, "net.d"), exist_ok=True)
        with open(os.path.join(tmp, "containers.conf"), "w") as f:
            f.write(self.containers_conf(network))
        with open(os.path.join(tmp, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp}/graph"\nrunroot = "{tmp}/run"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=f"{tmp}/containers.conf",
                        CONTAINERS_STORAGE_CONF=f"{tmp}/storage.conf")
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "nsenter",
                                        f"--net={node.path}", "sh", "-c",
                                        PRIVATE_MOUNTS + " && mount -t tmpfs rcni-shm /dev/shm"
                                        " && exec sleep 1000000"], start_new_session=True)

        def ready():
            try:
                return open(f"/proc/{self.holder.pid}/comm").read().strip() == "sleep"
            except OSError:
                return False
        wait_for(lambda: ready() or self.holder.poll() is not None, "the namespace holder")
        check(self.holder.poll() is None, "namespace holder exited")

    def containers_conf(self, network):
        tmp = self.tmp
        soft = 4096  # runc fails with EPERM setting RLIMIT_NPROC to the inherited value here
        # No static_dir or volume_path: conmon's exit command (`podman container cleanup`, which
        # makes a stopped container "exited") gets --root, from which it derives both, and
        # refuses to run on a mismatch with the database; podman wait then times out (20 s).
        containers = f'default_ulimits = ["nofile=1024:1024", "nproc={soft}:{soft}"]\n'
        net = ""
        if network:
            containers += 'netns = "bridge"\n'
            net = f'cni_plugin_dirs = ["{network[0]}"]\ndefault_network = "{network[1]}"\n'
        return f"""[containers]
{containers}[network]
network_backend = "cni"
network_config_dir = "{tmp}/net.d"
{net}[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{tmp}/events.log"
runtime = "runc"
tmp_dir = "{tmp}/libpod-tmp"
lock_type = "file"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "CONTAINERS_CONF={tmp}/containers.conf", "CONTAINERS_STORAGE_CONF={tmp}/storage.conf"]
"""

    def enter(self):
        """The command prefix that runs in the holder's mount and network namespaces."""
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n"]

    def run(self, cmd, **kw):
        """`cmd` in the holder's namespaces, with podman's private config in the environment."""
        return run(self.enter() + cmd, env=self.env, **kw)

    def podman(self, *args, ok=True, **kw):
        p = self.run(["podman"] + list(args), check_rc=False, **kw)
        if ok and p.returncode != 0:
            raise Fail(f"podman {' '.join(args)} -> {p.returncode}: {p.stderr.strip()}")
        return p

    def path(self, p):
        """Where the absolute path `p` of the private mount namespace is seen from here."""
        return f"/proc/{self.holder.pid}/root{p}"

    def close(self):
        if self.holder.poll() is None:
            subprocess.run(self.enter() + ["podman", "rm", "-fa", "-t", "0"], env=self.env,
                           capture_output=True, timeout=60)
            kill_processes_under(self.tmp)
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait()
        kill_processes_under(self.tmp)
