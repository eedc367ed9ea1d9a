"""Shared fixtures for the runtime suite: node netns, call recorder, temp dirs, commands.

Everything runs inside a "node" network namespace made here (never the machine's own);
every namespace, process and mount made is removed in cleanup, also when a test fails.
"""

import json
import os
import shutil
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
