"""Part 3: containerd's CRI plugin (Debian's containerd 1.6), the path kubelet takes.

containerd runs inside a node netns made here, with every state path in a temp dir, its CNI
bin_dir the call recorder in front of our plugins and conf_dir holding our flannel conflist.
A pod sandbox (image imported from a locally built OCI tarball) is run, inspected, stopped
twice (as kubelet does) and removed through the CRI API (runtime.v1 over gRPC, see cri/).
"""

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys

from common import (REPO, Fail, Netns, Outside, Recorder, check, fmt_calls, load_json,
                    node_inode_str, run, serve, tcp_from, tmpdir, wait_for, write_json)
import image

HERE = os.path.dirname(os.path.abspath(__file__))
PAUSE = "docker.io/library/rcni-pause:1"
# The pod's hostPort (kubelet passes it in PodSandboxConfig.port_mappings).
HOST_PORT = 18080


def cri_modules(tmp):
    out = os.path.join(tmp, "pb")
    os.makedirs(out)
    run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(HERE, "cri"),
         f"--python_out={out}", f"--grpc_python_out={out}", "cri_subset.proto"])
    sys.path.insert(0, out)
    try:
        import cri_subset_pb2 as pb
        import cri_subset_pb2_grpc as pbg
    finally:
        sys.path.remove(out)
    return pb, pbg


CONFIG = """version = 2
root = "{tmp}/root"
state = "{tmp}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{tmp}/containerd.sock"
[ttrpc]
  address = "{tmp}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{tmp}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{tmp}/net.d"
    max_conf_num = 1
"""


PRIVATE_MOUNTS = ("mount -t tmpfs -o mode=755 rcni-run /run && mkdir /run/netns"
                  " && mount -t tmpfs -o mode=755 rcni-varlib /var/lib")


def flannel_conflist(tmp):
    """kube-flannel's conflist: flannel, then portmap."""
    d = load_json(os.path.join(REPO, "conf-examples", "10-flannel.conflist"))
    for p in d["plugins"]:
        if p["type"] == "flannel":
            p["subnetFile"] = os.path.join(tmp, "subnet.env")
            p["dataDir"] = os.path.join(tmp, "flannel")
            p["ipam"] = {"dataDir": os.path.join(tmp, "ipam")}
    shutil.copy(os.path.join(REPO, "conf-examples", "subnet.env.vxlan"), os.path.join(tmp, "subnet.env"))
    os.makedirs(os.path.join(tmp, "net.d"))
    write_json(os.path.join(tmp, "net.d", "10-flannel.conflist"), d)
    return d


def bridge_conflist(tmp):
    """For the reference self-test (no flannel there)."""
    d = load_json(os.path.join(REPO, "conf-examples", "20-bridge.conflist"))
    d["plugins"][0]["ipam"]["dataDir"] = os.path.join(tmp, "ipam")
    os.makedirs(os.path.join(tmp, "net.d"))
    write_json(os.path.join(tmp, "net.d", "20-bridge.conflist"), d)
    return d


def pod_sandbox(bin_dir, reference):
    tmp = tmpdir("containerd")
    node = proc = outside = server = None
    log = open(os.path.join(tmp, "containerd.log"), "w")
    try:
        pb, pbg = cri_modules(tmp)
        import grpc
        node = Netns("cd")
        rec = Recorder(tmp, {p: os.path.join(bin_dir, p)
                             for p in (["bridge", "host-local", "loopback"] +
                                       ([] if reference else ["flannel", "portmap"]))})
        conf = bridge_conflist(tmp) if reference else flannel_conflist(tmp)
        subnet = "10.88.0.0/16" if reference else "10.244.1.0/24"
        cfg = os.path.join(tmp, "config.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(tmp=tmp, pause=PAUSE, bin=rec.dir))
        sock = os.path.join(tmp, "containerd.sock")
        # Not `ip netns exec`: it remounts /sys, hiding the cgroup mounts runc needs. A private
        # (slave) mount namespace with its own /run keeps what containerd 1.6 puts in fixed
        # places (/run/containerd/s shim sockets, /run/containerd/runc, /run/netns/cni-*) away
        # from the host, and so does a private /var/lib (libcni's cache, /var/lib/cni/results);
        # the plugins run in it too, as under a real containerd.
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "slave",
                                 "nsenter", f"--net={node.path}", "sh", "-c",
                                 PRIVATE_MOUNTS + " && exec containerd --config \"$0\"", cfg],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, "containerd's socket")
        check(proc.poll() is None, "containerd exited:\n" + open(log.name).read()[-3000:])
        chan = grpc.insecure_channel("unix://" + sock)
        rt = pbg.RuntimeServiceStub(chan)
        imgs = pbg.ImageServiceStub(chan)
        ver = rt.Version(pb.VersionRequest(version="v1"), timeout=30)
        check(ver.runtime_name == "containerd", f"runtime {ver}")

        tar = os.path.join(tmp, "pause.tar")
        image.oci_archive(tar, PAUSE, ["/bin/sleep", "1000000000"])
        run(["ctr", "-a", sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native", tar])
        wait_for(lambda: imgs.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=PAUSE)),
                                          timeout=10).image.id != "", "CRI to see the pause image")

        meta = pb.PodSandboxMetadata(name="pod-a", uid="0b1c2d3e-aaaa-bbbb-cccc-444455556666",
                                     namespace="default", attempt=0)
        ports = [] if reference else [pb.PortMapping(protocol=pb.TCP, container_port=80,
                                                      host_port=HOST_PORT)]
        cfgp = pb.PodSandboxConfig(metadata=meta, hostname="pod-a",
                                   log_directory=os.path.join(tmp, "logs"),
                                   port_mappings=ports,
                                   linux=pb.LinuxPodSandboxConfig())
        sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfgp), timeout=120).pod_sandbox_id
        st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True),
                                 timeout=30)
        check(st.status.state == pb.SANDBOX_READY, f"sandbox not ready: {st.status}")
        ip = st.status.network.ip
        check(ip and ipaddress.ip_address(ip) in ipaddress.ip_network(subnet),
              f"pod IP {ip!r} not in {subnet}")
        calls = rec.calls()
        adds = [c for c in calls if c["cmd"] == "ADD"]
        netns_path = next((c["env"]["CNI_NETNS"] for c in adds if c["plugin"] == "loopback"), None)
        check(netns_path, f"loopback never got ADD:\n{fmt_calls(calls)}")
        # The pod is reachable from the node, through the plugins' bridge.
        node.exec(["busybox", "ping", "-c", "1", "-W", "5", ip])
        if not reference:
            # Its hostPort from outside the node: a server in the sandbox's netns (entered
            # through the pause process), a client on a veth to the node.
            pm = [c for c in calls if c["plugin"] == "portmap" and c["cmd"] == "ADD"]
            check(pm and json.loads(pm[0]["stdin"]).get("runtimeConfig", {}).get("portMappings"),
                  f"portmap got no portMappings from containerd:\n{fmt_calls(calls)}")
            pid = json.loads(st.info["info"])["pid"]
            server = serve(["nsenter", "-t", str(pid), "-n"], 80, "hello-cri")
            node_cmd = ["nsenter", f"--net={node.path}"]
            wait_for(lambda: tcp_from(node_cmd, ip, 80), "the pod's server")
            outside = Outside(node, "d")
            got = outside.tcp(HOST_PORT)
            check(got == "hello-cri", f"hostPort {HOST_PORT} answered {got!r} from outside")
            # It holds the sandbox's netns: end it before the sandbox goes.
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            server = None

        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)

        calls = rec.calls()
        if os.environ.get("RCNI_RT_VERBOSE"):
            print(fmt_calls(calls))
        node_ns = node_inode_str(node)
        bad = [c for c in calls if c["rc"] != 0]
        check(not bad, f"failed plugin calls:\n{fmt_calls(bad)}")
        check(all(c["netns"] == node_ns for c in calls), "a plugin ran outside the node netns")
        top = "bridge" if reference else "flannel"
        for c in calls:
            if c["plugin"] in (top, "loopback") and c["cmd"] in ("ADD", "DEL"):
                a = c["env"].get("CNI_ARGS", "")
                for k in ("IgnoreUnknown=1", "K8S_POD_NAMESPACE=default", "K8S_POD_NAME=pod-a",
                          f"K8S_POD_INFRA_CONTAINER_ID={sid}", "K8S_POD_UID="):
                    check(k in a, f"{c['cmd']} {c['plugin']}: {k} missing in CNI_ARGS {a!r}")
        seq = [(c["cmd"], c["plugin"], c["env"].get("CNI_IFNAME"), c["env"].get("CNI_NETNS"))
               for c in calls if c["plugin"] in (top, "loopback")]
        want_add = [("ADD", "loopback", "lo", netns_path), ("ADD", top, "eth0", netns_path)]
        check(all(w in seq for w in want_add), f"ADDs missing:\n{fmt_calls(calls)}")
        dels = [s for s in seq if s[0] == "DEL" and s[1] == top]
        check(len(dels) >= 2, f"containerd should DEL twice:\n{fmt_calls(calls)}")
        check(dels[0][3] == netns_path and dels[-1][3] == "",
              f"first DEL with the netns, last with empty CNI_NETNS: {dels}")
        check(any(s[0] == "DEL" and s[1] == "loopback" for s in seq), "loopback never got DEL")
        if not reference:
            check(any(c["plugin"] == "bridge" and c["cmd"] == "DEL" for c in calls),
                  "flannel did not delegate DEL to bridge")
        ipdir = os.path.join(tmp, "ipam", conf["name"])
        left = [f for f in os.listdir(ipdir) if not f.startswith(("last_reserved", "lock")) and f != ".rcni-owners"] \
            if os.path.isdir(ipdir) else []
        check(not left, f"host-local still holds {left} after the sandbox was removed")
        check(not os.path.exists(os.path.join(tmp, "flannel", sid)), "flannel state left")
        veths = node.exec(["ip", "-o", "link", "show", "type", "veth"]).stdout
        if outside:
            check(outside.tcp(HOST_PORT) is None, "hostPort still forwarded after the sandbox went")
            nat = node.exec(["iptables-save", "-t", "nat"]).stdout
            check("CNI-DN-" not in nat, f"port mapping rules left:\n{nat}")
            # The client's veth is ours, not the pod's.
            veths = "\n".join(l for l in veths.splitlines() if "rto" not in l)
        check(veths.strip() == "", f"veth left on the node:\n{veths}")
        chan.close()
    except Exception as e:
        if not isinstance(e, Fail):
            raise Fail(f"{type(e).__name__}: {e}\ncontainerd log tail:\n"
                       + open(log.name).read()[-4000:]) from e
        raise
    finally:
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        kill_processes_under(tmp)
        if server:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if outside:
            outside.close()
        if node:
            node.close()
        subprocess.run(["umount", "-R", "-l", tmp], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


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


def tests(bin_dir, reference=False):
    return [("containerd CRI pod sandbox (flannel conflist)" if not reference else
             "containerd CRI pod sandbox (bridge conflist)",
             lambda: pod_sandbox(bin_dir, reference))]
