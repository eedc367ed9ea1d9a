"""Part 4: the container image and the DaemonSet, as an operator uses them.

scripts/image.sh builds the image (Containerfile, FROM scratch) with Debian's podman 4.3. Every
podman here is a common.PrivatePodman: a node netns made here, a private mount namespace (own
/run, /var/lib) and every storage and config path in a temp dir, so the machine's own podman
images and containers are never touched (image.sh itself uses podman's default storage; the
CONTAINERS_CONF / CONTAINERS_STORAGE_CONF it inherits point it at the private one here).

The init container is run from conf-examples/kube-flannel-rcni.yml itself, parsed with PyYAML:
its command, args, image and volume mounts; each hostPath volume is a temp dir standing for the
node's directory, the ConfigMap volume is laid out as kubelet lays it out (..data symlinks) and
mounted read-only. What it installs then networks a pod through libcni (the suite's cnitool)
with the installed conflist unmodified: flanneld's lease in /run/flannel and the plugins' state
in /var/lib/cni are the private mount namespace's.
"""

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tomllib

import yaml

from common import (REPO, Fail, Netns, PrivatePodman, check, run, stop_group, tmpdir, wait_for)

IMAGE_SH = os.path.join(REPO, "scripts", "image.sh")
MANIFEST = os.path.join(REPO, "conf-examples", "kube-flannel-rcni.yml")
STOCK_CONFLIST = os.path.join(REPO, "conf-examples", "10-flannel.conflist")
TARGET_BIN = os.path.join(REPO, "target", "bin")
ENTRYPOINT = "/opt/rcni/bin/install-cni"
# What install-cni puts on a node: the rcni binary, and a link to it for each plugin
# kube-flannel's conflist needs (flannel, then portmap; flannel's delegates bridge and
# host-local; loopback for the runtime) and for the doctor.
INSTALLED = ["bridge", "flannel", "host-local", "loopback", "portmap", "rcni", "rcni-doctor"]
# The image also holds install-cni (its entry point, a link to rcni): exactly target/bin.
IMAGE_BINARIES = INSTALLED + ["install-cni"]
POD_HOST_PORT = 18083


def workspace_version():
    with open(os.path.join(REPO, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def image_sh(pm, *args):
    """Runs scripts/image.sh in pm's namespaces (its private storage); returns the tag, the
    latest tag and the size it printed."""
    p = pm.run([IMAGE_SH] + list(args), check_rc=False, timeout=1800)
    check(p.returncode == 0, f"image.sh -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    tag = re.search(r"^image: (\S+) \(also (\S+)\)$", p.stdout, re.M)
    size = re.search(r"^size: (\d+) bytes \([0-9.]+ MB\)$", p.stdout, re.M)
    check(tag and size, f"image.sh printed no tag or no size:\n{p.stdout}")
    return tag[1], tag[2], int(size[1])


def inspect(pm, ref, fmt):
    return pm.podman("image", "inspect", "--format", fmt, ref).stdout.strip()


def image_root(pm, ref):
    """The image's file system (vfs: a plain directory in pm's storage)."""
    return pm.podman("image", "mount", ref).stdout.strip()


def tree(root):
    """Every path under root, relative."""
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def is_static_elf(path):
    """An x86-64/aarch64 ELF without a program interpreter (PT_INTERP): it runs in an empty
    root file system."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian
        return False
    phoff = int.from_bytes(data[32:40], "little")
    size = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * size:phoff + i * size + 4], "little")
             for i in range(count)]
    return 3 not in types


def listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def stats(d):
    """(inode, mtime, size) of d and of each file in it."""
    out = {".": (os.stat(d).st_ino, os.stat(d).st_mtime_ns)}
    for n in listing(d):
        st = os.lstat(os.path.join(d, n))
        out[n] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ImageNode:
    """A node netns, a PrivatePodman on it and the image scripts/image.sh built there."""

    def __init__(self, tag, archive=False):
        self.tmp = tmpdir(f"image-{tag}")
        self.node = self.pm = None
        self.extra = []
        self.archive = os.path.join(self.tmp, "rcni.tar") if archive else None
        try:
            self.node = Netns(f"i{tag}")
            self.pm = PrivatePodman(os.path.join(self.tmp, "podman"), self.node)
            args = ["--archive", self.archive] if archive else []
            self.tag, self.latest, self.size = image_sh(self.pm, *args)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for c in reversed(self.extra):
            c.close()
        if self.pm:
            self.pm.close()
        if self.node:
            self.node.close()
        subprocess.run(["umount", "-R", "-l", self.tmp], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- the manifest ---------------------------------------------------------------------------

def manifest():
    with open(MANIFEST) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    check(len(found) == 1, f"{len(found)} {kind} objects in the manifest, expected 1")
    return found[0]


def pod_spec(docs):
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]


def init_container(docs):
    inits = pod_spec(docs).get("initContainers") or []
    check([c["name"] for c in inits] == ["install-cni"],
          f"init containers {[c['name'] for c in inits]}, expected only install-cni")
    return inits[0]


def flags(args):
    """install-cni's `--flag=value` / `--flag value` arguments as {flag: value}."""
    out, it = {}, iter(args)
    for a in it:
        check(a.startswith("--"), f"argument {a!r} is not a flag")
        k, eq, v = a.partition("=")
        out[k] = v if eq else (None if k in ("--sleep", "--no-conf") else next(it, None))
    return out


def write_configmap(d, data, generation):
    """A ConfigMap volume as kubelet writes it (and rewrites it on a ConfigMap edit): the files
    in a timestamped directory, `..data` pointing at it, each key a symlink through `..data`."""
    os.makedirs(d, exist_ok=True)
    gen = f"..2026_01_01_00_00_0{generation}.000000001"
    os.makedirs(os.path.join(d, gen))
    for k, v in data.items():
        with open(os.path.join(d, gen, k), "w") as f:
            f.write(v)
    os.symlink(gen, os.path.join(d, "..data_tmp"))
    old = os.path.realpath(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) else None
    os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
    for k in data:
        if not os.path.islink(os.path.join(d, k)):
            os.symlink(os.path.join("..data", k), os.path.join(d, k))
    if old:
        shutil.rmtree(old)


class InitContainer:
    """The manifest's init container on an ImageNode: its volumes as temp dirs (`root` stands
    for the node's /), run with its command, args and mounts, on the host network."""

    def __init__(self, n, docs):
        self.n, self.docs = n, docs
        self.spec = init_container(docs)
        self.cm = one(docs, "ConfigMap")
        self.root = os.path.join(n.tmp, "node-root")
        self.cm_dir = os.path.join(n.tmp, "configmap")
        write_configmap(self.cm_dir, self.cm["data"], 1)
        self.generation = 1
        volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
        self.mounts = []
        for m in self.spec["volumeMounts"]:
            v = volumes[m["name"]]
            if "hostPath" in v:
                src = self.root + v["hostPath"]["path"]
                os.makedirs(src, exist_ok=True)  # DirectoryOrCreate
                ro = m.get("readOnly", False)
            else:
                check(v.get("configMap", {}).get("name") == self.cm["metadata"]["name"],
                      f"volume {m['name']}: not the ConfigMap")
                src, ro = self.cm_dir, True  # kubelet mounts ConfigMap volumes read-only
            self.mounts += ["-v", f"{src}:{m['mountPath']}" + (":ro" if ro else "")]
        self.bin_dir = self.root + "/opt/cni/bin"
        self.conf_dir = self.root + "/etc/cni/net.d"

    def edit_configmap(self, key, text):
        self.generation += 1
        write_configmap(self.cm_dir, dict(self.cm["data"], **{key: text}), self.generation)

    def podman_args(self, extra_args=(), run_args=()):
        return (["run", "--network", "host", "--entrypoint", json.dumps(self.spec["command"])]
                + list(run_args) + self.mounts + [self.spec["image"]] + self.spec["args"]
                + list(extra_args))

    def run(self, extra_args=()):
        return self.n.pm.podman(*self.podman_args(extra_args, ["--rm"]), ok=False)


# --- the tests ------------------------------------------------------------------------------

def build_and_archive():
    """image.sh: tags, size, labels, exactly the binaries install-cni installs (static, byte for
    byte target/bin's), reproducible; its OCI archive loads with podman load and ctr import
    under the name the DaemonSet runs."""
    version = workspace_version()
    with ImageNode("ib", archive=True) as n:
        pm = n.pm
        check(n.tag == f"localhost/rcni:{version}" and n.latest == "localhost/rcni:latest",
              f"tags {n.tag}, {n.latest}")
        image_id = inspect(pm, n.tag, "{{.Id}}")
        check(inspect(pm, n.latest, "{{.Id}}") == image_id, "latest is another image")
        check(int(inspect(pm, n.tag, "{{.Size}}")) == n.size, "image.sh printed another size")
        cfg = json.loads(pm.podman("image", "inspect", n.tag).stdout)[0]["Config"]
        labels = cfg.get("Labels") or {}
        check(labels.get("org.opencontainers.image.version") == version, f"labels {labels}")
        check(labels.get("org.opencontainers.image.source"), f"no source label: {labels}")
        head = run(["git", "-C", REPO, "rev-parse", "HEAD"]).stdout.strip()
        check(labels.get("org.opencontainers.image.revision", "").startswith(head),
              f"revision label {labels.get('org.opencontainers.image.revision')}, HEAD {head}")
        check(cfg.get("Entrypoint") == [ENTRYPOINT], f"entrypoint {cfg.get('Entrypoint')}")

        # The whole file system: /opt/rcni/bin and its binaries, nothing else.
        root = image_root(pm, n.tag)
        want = ["opt", "opt/rcni", "opt/rcni/bin"] + [f"opt/rcni/bin/{b}" for b in IMAGE_BINARIES]
        check(tree(root) == sorted(want), f"image holds {tree(root)}")
        check(sorted(os.listdir(TARGET_BIN)) == sorted(IMAGE_BINARIES),
              f"target/bin holds {sorted(os.listdir(TARGET_BIN))}, the image {IMAGE_BINARIES}")
        for b in IMAGE_BINARIES:
            p = os.path.join(root, "opt/rcni/bin", b)
            check(stat.S_IMODE(os.stat(p).st_mode) == 0o755, f"{b}: mode {oct(os.stat(p).st_mode)}")
            check(read(p) == read(os.path.join(TARGET_BIN, b)), f"{b} differs from target/bin")
            check(is_static_elf(p), f"{b} is not a static ELF executable")

        # The archive: one image, named by its tag.
        archive = n.archive
        with tarfile.open(archive) as t:
            index = json.load(t.extractfile("index.json"))
        refs = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                for m in index["manifests"]]
        check(refs == [n.tag], f"archive holds {refs}")
        daemonset_image = init_container(manifest())["image"]

        # podman load on a node: a fresh storage gets the same image under the tag.
        other = PrivatePodman(os.path.join(n.tmp, "podman-load"), n.node)
        n.extra.append(other)
        other.podman("load", "-i", archive)
        check(inspect(other, daemonset_image, "{{.Id}}") == image_id,
              "podman load: not the same image under the DaemonSet's name")

        # ctr -n k8s.io images import on a containerd node (a containerd of our own).
        names = ctr_import(n, archive)
        check(daemonset_image in names, f"ctr import named it {names}, the DaemonSet runs "
              f"{daemonset_image}")

        # The same checkout builds the same image again.
        tag, _, _ = image_sh(pm)
        check(inspect(pm, tag, "{{.Id}}") == image_id, "image.sh again: another image ID")


CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


def ctr_import(n, archive):
    """Imports archive into a containerd of its own (state in a temp dir, in n.pm's namespaces)
    as an operator does on a node; returns the image names containerd then has."""
    d = os.path.join(n.tmp, "containerd")
    os.makedirs(d)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(CONTAINERD_CONFIG.format(d=d))
    sock = os.path.join(d, "containerd.sock")
    log = open(os.path.join(d, "log"), "w")
    proc = subprocess.Popen(n.pm.enter() + ["containerd", "--config", cfg], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, "containerd's socket")
        check(proc.poll() is None, "containerd exited:\n" + read(log.name).decode()[-3000:])
        ctr = ["ctr", "-a", sock, "-n", "k8s.io", "images"]
        n.pm.run(ctr + ["import", "--snapshotter", "native", archive])
        return n.pm.run(ctr + ["ls", "-q"]).stdout.split()
    finally:
        stop_group(proc)
        log.close()


def runs_as_init_container(driver):
    """The manifest's init container installs the binaries and the ConfigMap's cni-conf.json,
    each replacing the node's old file by rename; a pod is then networked through the installed
    conflist (flannel + portmap); run again it leaves every file alone; with a broken
    cni-conf.json it fails and the node keeps its files."""
    docs = manifest()
    with ImageNode("ic") as n:
        ic = InitContainer(n, docs)
        check(ic.spec["image"] == n.tag, f"the DaemonSet runs {ic.spec['image']}, image.sh built {n.tag}")
        # The node before: an older flannel and config (open, as a runtime may have them), and a
        # plugin rcni does not ship.
        os.makedirs(ic.conf_dir, exist_ok=True)
        old_plugin = os.path.join(ic.bin_dir, "flannel")
        old_conf = os.path.join(ic.conf_dir, "10-flannel.conflist")
        for p, body, mode in [(old_plugin, b"#!/bin/sh\necho old flannel\n", 0o755),
                              (old_conf, b'{"name": "old"}', 0o644),
                              (os.path.join(ic.bin_dir, "bandwidth"), b"other\n", 0o755)]:
            with open(p, "wb") as f:
                f.write(body)
            os.chmod(p, mode)
        readers = [open(old_plugin, "rb"), open(old_conf, "rb")]
        try:
            p = ic.run()
            check(p.returncode == 0, f"init container -> {p.returncode}: {p.stderr}")
            check([f.read() for f in readers] == [b"#!/bin/sh\necho old flannel\n", b'{"name": "old"}'],
                  "an old file was rewritten in place, not replaced")
        finally:
            for f in readers:
                f.close()
        check(listing(ic.bin_dir) == sorted(INSTALLED + ["bandwidth"]),
              f"bin dir holds {listing(ic.bin_dir)}")
        check(listing(ic.conf_dir) == ["10-flannel.conflist"], f"conf dir holds {listing(ic.conf_dir)}")
        root = image_root(n.pm, n.tag)
        for b in INSTALLED:
            p = os.path.join(ic.bin_dir, b)
            check(read(p) == read(os.path.join(root, "opt/rcni/bin", b)), f"{b}: not the image's")
            check(stat.S_IMODE(os.stat(p).st_mode) == 0o755, f"{b}: mode {oct(os.stat(p).st_mode)}")
        check(read(old_conf) == ic.cm["data"]["cni-conf.json"].encode(),
              "the installed config is not the ConfigMap's cni-conf.json")
        check(stat.S_IMODE(os.stat(old_conf).st_mode) == 0o644, "config mode")

        pod_add_del(n, ic, driver)

        # Again (a pod restart): identical files are left alone.
        before = {d: stats(d) for d in (ic.bin_dir, ic.conf_dir)}
        p = ic.run()
        check(p.returncode == 0, f"second run -> {p.returncode}: {p.stderr}")
        check(p.stderr.count("is up to date") == len(INSTALLED) + 1 and "installed" not in p.stderr,
              f"second run:\n{p.stderr}")
        check({d: stats(d) for d in before} == before, "the second run touched the node's files")

        # A broken ConfigMap edit: the container fails, the node keeps what it has.
        text = ic.cm["data"]["cni-conf.json"]
        ic.edit_configmap("cni-conf.json", text[:len(text) // 2])
        p = ic.run()
        check(p.returncode == 1 and "refusing to install" in p.stderr,
              f"broken cni-conf.json -> {p.returncode}: {p.stderr}")
        check({d: stats(d) for d in before} == before, "a refused install touched the node's files")
        check(read(old_conf) == text.encode(), "the working config was replaced")


def pod_add_del(n, ic, driver):
    """ADD and DEL of a pod with a hostPort through libcni with the installed conflist and
    bin dir, in the node netns; /run and /var/lib are the private mount namespace's, so the
    conflist's defaults (flanneld's /run/flannel/subnet.env, /var/lib/cni) are used as on a node."""
    pm = n.pm
    lease = pm.path("/run/flannel")
    os.makedirs(lease)
    shutil.copy(os.path.join(REPO, "conf-examples", "subnet.env.vxlan"),
                os.path.join(lease, "subnet.env"))
    pm.run(["ip", "netns", "add", "pod"])
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"CNI_PATH={ic.bin_dir}",
           f"NETCONFPATH={ic.conf_dir}", "CNI_CONTAINERID=image-pod",
           "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=image-pod",
           'CAP_ARGS={"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}'
           % POD_HOST_PORT]

    def cnitool(cmd):
        p = pm.run(env + [driver, cmd, "cbr0", "/run/netns/pod"], check_rc=False)
        check(p.returncode == 0, f"cnitool {cmd} -> {p.returncode}: {p.stderr}")
        return p.stdout

    def nat():
        return pm.run(["iptables-save", "-t", "nat"]).stdout

    store = pm.path("/var/lib/cni/networks/cbr0")
    res = json.loads(cnitool("add"))
    ip = res["ips"][0]["address"].split("/")[0]
    check(ipaddress.ip_address(ip) in ipaddress.ip_network("10.244.1.0/24"), f"ADD gave {res}")
    pm.run(["ping", "-c", "1", "-W", "5", ip])
    check(f"--dport {POD_HOST_PORT}" in nat(), f"no hostPort rule after ADD:\n{nat()}")
    check(ip in listing(store), f"host-local holds {listing(store)}")
    cnitool("del")
    check(pm.run(["ip", "-n", "pod", "link", "show", "eth0"], check_rc=False).returncode != 0,
          "the pod's eth0 outlived DEL")
    check(ip not in listing(store), f"{ip} still reserved after DEL")
    check("CNI-DN-" not in nat(), f"hostPort rules left after DEL:\n{nat()}")
    pm.run(["ip", "netns", "del", "pod"])


def sleep_stops_on_sigterm():
    """`--sleep`, install-cni as the container's PID 1 (where a signal without a handler is
    ignored): installs, sleeps, and `podman stop` (SIGTERM) ends it with exit 0, not the
    SIGKILL after the grace period (exit 137)."""
    with ImageNode("sl") as n:
        ic = InitContainer(n, manifest())
        name = "rcni-sleep"
        n.pm.podman(*ic.podman_args(["--sleep"], ["-d", "--name", name]))

        def logs():
            p = n.pm.podman("logs", name, ok=False)
            return p.stdout + p.stderr
        wait_for(lambda: "sleeping until SIGTERM" in logs(), "install-cni --sleep to sleep")
        check(listing(ic.bin_dir) == INSTALLED, f"not installed before sleeping: {listing(ic.bin_dir)}")
        pid = int(n.pm.podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        nspid = [line.split()[1:] for line in open(f"/proc/{pid}/status")
                 if line.startswith("NSpid:")][0]
        check(nspid[-1] == "1", f"install-cni is pid {nspid[-1]} in its container, not 1")
        # The entry point is a link to rcni, which runs as the name it was started under.
        argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
        check(argv0 == ENTRYPOINT and os.readlink(f"/proc/{pid}/exe").endswith("/opt/rcni/bin/rcni"),
              f"PID 1 is not install-cni: argv[0] {argv0}, exe {os.readlink(f'/proc/{pid}/exe')}")
        n.pm.podman("stop", "-t", "60", name)
        code = n.pm.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        check(code == "0", f"exit code {code} after SIGTERM (137: it ignored SIGTERM)\n{logs()}")
        check("got SIGTERM, exiting" in logs(), f"logs:\n{logs()}")


def manifest_matches_image():
    """kube-flannel-rcni.yml, parsed: kube-flannel's objects and structure, the stock
    cni-conf.json, every volume mounted is declared (and the other way round), the init
    container's command exists in the image and install-cni accepts its flags, whose paths are
    the node's directories and the ConfigMap's file."""
    docs = manifest()
    kinds = sorted(d["kind"] for d in docs)
    check(kinds == sorted(["Namespace", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
                           "ConfigMap", "DaemonSet"]), f"objects {kinds}")
    ns = one(docs, "Namespace")["metadata"]["name"]
    for d in docs:
        if d["kind"] in ("ServiceAccount", "ConfigMap", "DaemonSet"):
            check(d["metadata"].get("namespace") == ns, f"{d['kind']} not in namespace {ns}")

    # RBAC: what flanneld --kube-subnet-mgr needs, bound to the DaemonSet's service account.
    role, binding, sa = one(docs, "ClusterRole"), one(docs, "ClusterRoleBinding"), one(docs, "ServiceAccount")
    check(binding["roleRef"]["name"] == role["metadata"]["name"], "binding names another role")
    check({"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ns}
          in binding["subjects"], f"binding subjects {binding['subjects']}")
    grants = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("pods", "get"), ("nodes", "get"), ("nodes", "list"), ("nodes", "watch"),
                 ("nodes/status", "patch")]:
        check(need in grants, f"ClusterRole lacks {need}")

    # The ConfigMap: kube-flannel's stock cni-conf.json (flannel, then portmap) and net-conf.json.
    cm = one(docs, "ConfigMap")
    check(sorted(cm["data"]) == ["cni-conf.json", "net-conf.json"], f"ConfigMap keys {list(cm['data'])}")
    cni_conf = json.loads(cm["data"]["cni-conf.json"])
    with open(STOCK_CONFLIST) as f:
        check(cni_conf == json.load(f), "cni-conf.json is not conf-examples/10-flannel.conflist")
    check([p["type"] for p in cni_conf["plugins"]] == ["flannel", "portmap"], f"{cni_conf}")
    check("subnetFile" not in cni_conf["plugins"][0],
          "cni-conf.json moves subnetFile away from /run/flannel/subnet.env")
    net_conf = json.loads(cm["data"]["net-conf.json"])
    ipaddress.ip_network(net_conf["Network"])
    check(net_conf["Backend"]["Type"] in ("vxlan", "host-gw"), f"net-conf.json {net_conf}")

    # The DaemonSet: kube-flannel's scheduling.
    ds = one(docs, "DaemonSet")
    tmpl = ds["spec"]["template"]
    spec = tmpl["spec"]
    check(ds["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items(),
          "the selector does not match the pod labels")
    check(spec.get("hostNetwork") is True, "hostNetwork")
    check(spec.get("priorityClassName") == "system-node-critical", "priorityClassName")
    check({"operator": "Exists", "effect": "NoSchedule"} in spec.get("tolerations", []),
          f"tolerations {spec.get('tolerations')}")
    check(spec.get("serviceAccountName") == sa["metadata"]["name"], "serviceAccountName")

    # Volumes: each mount is declared, each declared volume is mounted.
    volumes = {v["name"]: v for v in spec["volumes"]}
    check(len(volumes) == len(spec["volumes"]), "duplicate volume names")
    containers = spec["containers"] + spec.get("initContainers", [])
    mounted = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    check(mounted <= set(volumes), f"mounted but not declared: {mounted - set(volumes)}")
    check(set(volumes) <= mounted, f"declared but never mounted: {set(volumes) - mounted}")

    def host_path(c, path):
        """The hostPath (or configMap) volume c mounts at path."""
        for m in c.get("volumeMounts", []):
            if m["mountPath"].rstrip("/") == path.rstrip("/"):
                v = volumes[m["name"]]
                return v["hostPath"]["path"] if "hostPath" in v else ("configMap", v["configMap"]["name"])
        raise Fail(f"{c['name']} mounts nothing at {path}")

    flanneld = [c for c in spec["containers"] if c["name"] == "kube-flannel"]
    check(len(flanneld) == 1, "no kube-flannel container")
    check(host_path(flanneld[0], "/run/flannel") == "/run/flannel",
          "flanneld's /run/flannel (subnet.env, read by the flannel plugin) is not the node's")
    check(host_path(flanneld[0], "/etc/kube-flannel") == ("configMap", cm["metadata"]["name"]),
          "flanneld does not get net-conf.json")

    # The init container: the image image.sh builds, install-cni's flags naming the node's
    # directories and the ConfigMap's file.
    ic = init_container(docs)
    check(ic["image"] == f"localhost/rcni:{workspace_version()}", f"image {ic['image']}")
    check(ic.get("imagePullPolicy") == "IfNotPresent",
          "imagePullPolicy must let a loaded image be used")
    check(ic["command"] == [ENTRYPOINT], f"command {ic['command']}")
    f = flags(ic["args"])
    for k in ("--bin-dir", "--conf-dir", "--conf-file", "--conf-name"):
        check(k in f, f"the init container passes no {k} (install-cni's default is not the mount)")
    check(host_path(ic, f["--bin-dir"]) == "/opt/cni/bin", f"--bin-dir {f['--bin-dir']}")
    check(host_path(ic, f["--conf-dir"]) == "/etc/cni/net.d", f"--conf-dir {f['--conf-dir']}")
    conf_dir, conf_key = os.path.split(f["--conf-file"])
    check(host_path(ic, conf_dir) == ("configMap", cm["metadata"]["name"]) and conf_key == "cni-conf.json",
          f"--conf-file {f['--conf-file']} is not the ConfigMap's cni-conf.json")
    check(f.get("--conf-name") == "10-flannel.conflist", "kube-flannel's file name")
    check("--sleep" not in f, "an init container must exit")

    with ImageNode("mf") as n:
        root = image_root(n.pm, n.tag)
        exe = root + ic["command"][0]
        check(os.path.isfile(exe) and os.access(exe, os.X_OK), f"{ic['command'][0]} not in the image")
        # install-cni parses every argument before --help: an unknown flag would fail it first.
        run_ic = InitContainer(n, docs)
        p = run_ic.run(["--help"])
        check(p.returncode == 0 and p.stdout.startswith("usage: install-cni"),
              f"install-cni refused the manifest's args -> {p.returncode}: {p.stderr}")
        p = run_ic.run(["--no-such-flag", "--help"])
        check(p.returncode == 2 and "--no-such-flag" in p.stderr, "the args were not parsed")
        # The ConfigMap's cni-conf.json passes install-cni's validation (the runtime's loader).
        p = run_ic.run(["--plugins="])
        check(p.returncode == 0, f"install-cni refused the ConfigMap's cni-conf.json: {p.stderr}")
        check(listing(run_ic.conf_dir) == ["10-flannel.conflist"], "nothing installed")


def tests(driver):
    return [
        ("image: image.sh builds it; its OCI archive loads with podman load and ctr import",
         build_and_archive),
        ("image: the manifest's init container installs, networks a pod, keeps files, refuses a "
         "broken config", lambda: runs_as_init_container(driver)),
        ("image: install-cni --sleep as PID 1 stops on SIGTERM", sleep_stops_on_sigterm),
        ("image: kube-flannel-rcni.yml matches the image", manifest_matches_image),
    ]
