"""Part 2: podman's CNI network backend (Debian's podman 4.3).

podman runs in a node netns made here, inside a private mount namespace (its own /run and
/var/lib, so netns files, libcni's cache and podman's runtime state stay off the host), with
every storage/config path in a temp dir: runc, cgroupfs, file events and locks, explicit
ulimits, a local image imported from a busybox-static tarball. The network is our flannel
conflist; cni_plugin_dirs is the call recorder in front of our plugins. podman's cleanup
process (which runs DEL when a container stops) only sees that config through
conmon_env_vars, so the test checks that DEL really reached our plugins.
"""

import ipaddress
import os
import shutil
import signal
import subprocess

from common import (REPO, Fail, Netns, Outside, Recorder, check, fmt_calls, load_json,
                    node_inode_str, run, tcp_from, tmpdir, wait_for, write_json)
from containerd_tests import PRIVATE_MOUNTS, kill_processes_under
import image

IMAGE = "localhost/rcni-busybox:1"
NET = "cbr0"
# Container a publishes its port 80 here (`podman run -p`).
HOST_PORT = 18080


def containers_conf(tmp, bin_dir):
    soft = 4096  # runc fails with EPERM setting RLIMIT_NPROC to the inherited value here
    return f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc={soft}:{soft}"]
netns = "bridge"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin_dir}"]
network_config_dir = "{tmp}/net.d"
default_network = "{NET}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{tmp}/events.log"
runtime = "runc"
tmp_dir = "{tmp}/libpod-tmp"
static_dir = "{tmp}/libpod"
volume_path = "{tmp}/volumes"
lock_type = "file"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "CONTAINERS_CONF={tmp}/containers.conf", "CONTAINERS_STORAGE_CONF={tmp}/storage.conf"]
"""


def network_conf(tmp, reference):
    os.makedirs(os.path.join(tmp, "net.d"))
    if reference:
        d = load_json(os.path.join(REPO, "conf-examples", "20-bridge.conflist"))
        d["name"] = NET
        d["plugins"][0]["ipam"]["dataDir"] = os.path.join(tmp, "ipam")
        subnet = "10.88.0.0/16"
    else:
        # kube-flannel's conflist: flannel, then portmap.
        d = load_json(os.path.join(REPO, "conf-examples", "10-flannel.conflist"))
        for p in d["plugins"]:
            if p["type"] == "flannel":
                p["subnetFile"] = os.path.join(tmp, "subnet.env")
                p["dataDir"] = os.path.join(tmp, "flannel")
                p["ipam"] = {"dataDir": os.path.join(tmp, "ipam")}
        shutil.copy(os.path.join(REPO, "conf-examples", "subnet.env.vxlan"),
                    os.path.join(tmp, "subnet.env"))
        subnet = "10.244.1.0/24"
    check(d["name"] == NET, f"network name {d['name']}")
    write_json(os.path.join(tmp, "net.d", f"{NET}.conflist"), d)
    return d, subnet


def two_containers(bin_dir, reference):
    tmp = tmpdir("podman")
    node = holder = outside = None
    env = None
    try:
        node = Netns("pm")
        top = "bridge" if reference else "flannel"
        rec = Recorder(tmp, {p: os.path.join(bin_dir, p)
                             for p in ["bridge", "host-local", "loopback"] +
                             ([] if reference else ["flannel", "portmap"])})
        conf, subnet = network_conf(tmp, reference)
        with open(os.path.join(tmp, "containers.conf"), "w") as f:
            f.write(containers_conf(tmp, rec.dir))
        with open(os.path.join(tmp, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp}/graph"\nrunroot = "{tmp}/run"\n')
        env = dict(os.environ, CONTAINERS_CONF=f"{tmp}/containers.conf",
                   CONTAINERS_STORAGE_CONF=f"{tmp}/storage.conf")
        # The holder keeps the private mount namespace (and the node netns) for every podman call.
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "nsenter",
                                   f"--net={node.path}", "sh", "-c",
                                   PRIVATE_MOUNTS + " && mount -t tmpfs rcni-shm /dev/shm"
                                   " && exec sleep 1000000"], start_new_session=True)

        def ready():
            try:
                return open(f"/proc/{holder.pid}/comm").read().strip() == "sleep"
            except OSError:
                return False
        wait_for(lambda: ready() or holder.poll() is not None, "the namespace holder")
        check(holder.poll() is None, "namespace holder exited")

        def podman(*args, ok=True):
            p = run(["nsenter", "-t", str(holder.pid), "-m", "-n", "podman"] + list(args),
                    check_rc=False, env=env)
            if ok and p.returncode != 0:
                raise Fail(f"podman {' '.join(args)} -> {p.returncode}: {p.stderr.strip()}\n"
                           f"calls:\n{fmt_calls(rec.calls())}")
            return p.stdout.strip()

        tar = os.path.join(tmp, "rootfs.tar")
        image.rootfs_tar(tar)
        podman("import", tar, IMAGE)
        # a serves "hello-a" on port 80, published as the node's HOST_PORT (not for the
        # reference self-test, whose bridge conflist has no portmap).
        publish = [] if reference else ["-p", f"{HOST_PORT}:80"]
        podman("run", "-d", "--name", "a", "--network", NET, *publish, IMAGE,
               "/bin/busybox", "nc", "-ll", "-p", "80", "-e", "/bin/busybox", "echo", "hello-a")
        podman("run", "-d", "--name", "b", "--network", NET, IMAGE, "sleep", "1000000")

        def ip_of(n):
            ip = podman("inspect", "-f", f"{{{{.NetworkSettings.Networks.{NET}.IPAddress}}}}", n)
            check(ip and ipaddress.ip_address(ip) in ipaddress.ip_network(subnet),
                  f"{n}: IP {ip!r} not in {subnet}")
            return ip
        ipa, ipb = ip_of("a"), ip_of("b")
        gw = str(next(ipaddress.ip_network(subnet).hosts()))
        podman("exec", "a", "ping", "-c", "1", "-W", "5", ipb)
        podman("exec", "b", "ping", "-c", "1", "-W", "5", ipa)
        podman("exec", "a", "ping", "-c", "1", "-W", "5", gw)  # the node (bridge gateway)
        node.exec(["busybox", "ping", "-c", "1", "-W", "5", ipb])
        ids = {n: podman("inspect", "-f", "{{.Id}}", n) for n in ("a", "b")}
        if not reference:
            # a's published port from outside the node, through our portmap.
            node_cmd = ["nsenter", f"--net={node.path}"]
            wait_for(lambda: tcp_from(node_cmd, ipa, 80), "a's server")
            outside = Outside(node, "p")
            got = outside.tcp(HOST_PORT)
            check(got == "hello-a", f"published port {HOST_PORT} answered {got!r} from outside")

        podman("stop", "-t", "0", "a", "b")
        if outside:
            check(outside.tcp(HOST_PORT) is None, "published port still forwarded after stop")
        ipdir = os.path.join(tmp, "ipam", conf["name"])

        def held():
            return sorted(f for f in os.listdir(ipdir) if not f.startswith(("last_reserved", "lock")) and f != ".rcni-owners") \
                if os.path.isdir(ipdir) else []
        check(held() == [], f"IPs still held after podman stop: {held()}")
        calls = rec.calls()
        for n, cid in ids.items():
            check(any(c["cmd"] == "DEL" and c["plugin"] == top and c["env"].get("CNI_CONTAINERID") == cid
                      for c in calls), f"our {top} never got DEL for {n} (cleanup process lost the config?)\n"
                  f"{fmt_calls(calls)}")
        n_add = len([c for c in calls if c["cmd"] == "ADD" and c["plugin"] == top])
        podman("start", "a")
        ip_of("a")
        podman("exec", "a", "ping", "-c", "1", "-W", "5", gw)
        calls = rec.calls()
        check(len([c for c in calls if c["cmd"] == "ADD" and c["plugin"] == top]) == n_add + 1,
              "podman start did not ADD again")
        podman("rm", "-f", "-t", "0", "a", "b")
        check(held() == [], f"IPs still held after podman rm: {held()}")
        veths = node.exec(["ip", "-o", "link", "show", "type", "veth"]).stdout
        if outside:
            check(outside.tcp(HOST_PORT) is None, "published port still forwarded after rm")
            nat = node.exec(["iptables-save", "-t", "nat"]).stdout
            check("CNI-DN-" not in nat, f"port mapping rules left:\n{nat}")
            veths = "\n".join(l for l in veths.splitlines() if "rto" not in l)
        check(veths.strip() == "", f"veth left on the node:\n{veths}")

        calls = rec.calls()
        if os.environ.get("RCNI_RT_VERBOSE"):
            print(fmt_calls(calls))
        bad = [c for c in calls if c["rc"] != 0]
        check(not bad, f"failed plugin calls:\n{fmt_calls(bad)}")
        node_ns = node_inode_str(node)
        check(all(c["netns"] == node_ns for c in calls), "a plugin ran outside the node netns")
        # podman 4.3 asks VERSION (CNI_IFNAME=dummy) once per network operation, before its
        # ADDs/DELs: run a, run b, stop a+b, start a, rm a = 5 operations.
        tops = [c for c in calls if c["plugin"] == top]
        check(tops and tops[0]["cmd"] == "VERSION", f"no VERSION first:\n{fmt_calls(tops)}")
        versions = [c for c in tops if c["cmd"] == "VERSION"]
        check(len(versions) >= 5 and all(c["env"].get("CNI_IFNAME") == "dummy" for c in versions),
              f"VERSION calls:\n{fmt_calls(versions)}")
        for i, c in enumerate(tops):
            if c["cmd"] == "VERSION":
                check(i + 1 < len(tops) and tops[i + 1]["cmd"] in ("ADD", "DEL"),
                      f"VERSION not followed by ADD/DEL:\n{fmt_calls(tops)}")
        names = {cid: n for n, cid in ids.items()}
        for c in calls:
            if c["cmd"] in ("ADD", "DEL"):
                a = c["env"].get("CNI_ARGS", "").split(";")
                n = names.get(c["env"].get("CNI_CONTAINERID"))
                check("IgnoreUnknown=1" in a and f"K8S_POD_NAME={n}" in a,
                      f"{c['cmd']} {c['plugin']}: CNI_ARGS {a!r} lack IgnoreUnknown=1/K8S_POD_NAME={n}")
        if not reference:
            check(any(c["plugin"] == "bridge" and c["cmd"] == "DEL" for c in calls),
                  "flannel did not delegate DEL to bridge")
    finally:
        if holder and holder.poll() is None:
            if env:
                subprocess.run(["nsenter", "-t", str(holder.pid), "-m", "-n", "podman", "rm",
                                "-fa", "-t", "0"], env=env, capture_output=True, timeout=60)
            kill_processes_under(tmp)
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        kill_processes_under(tmp)
        if outside:
            outside.close()
        if node:
            node.close()
        shutil.rmtree(tmp, ignore_errors=True)


def tests(bin_dir, reference=False):
    return [("podman CNI backend: two containers, stop/start/rm" +
             (" (bridge conflist)" if reference else " (flannel conflist)"),
             lambda: two_containers(bin_dir, reference))]
