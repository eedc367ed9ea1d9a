"""Part 1: libcni (Debian's golang-github-appc-cni-dev) drives every example config.

A small cnitool built from libcni (libcni-driver/main.go) runs VALIDATE (VERSION), ADD,
cached-result lookup, CHECK, STATUS/GC (CNI 1.1.0, see main.go), DEL and DEL again for each
config in conf-examples/ at several cniVersions, with libcni's result cache and result
version conversion in the loop. The plugin dir is a recorder (common.Recorder) in front of
the plugins under test, and everything runs in a node netns made here.
"""

import hashlib
import ipaddress
import json
import os
import shutil
import signal

from common import (REPO, Fail, Netns, Outside, Recorder, check, fmt_calls, load_json,
                    node_inode_str, run, serve, tcp_from, tmpdir, wait_for, write_json)

EXAMPLES = os.path.join(REPO, "conf-examples")
# libcni v1.1.x knows results up to 1.0.0; 1.1.0 (STATUS, GC) is exercised through invoke.
VERSIONS = ["0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
CNI_ARGS = ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;"
            "K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=0b1c2d3e-1111-2222-3333-444455556666")

# config file -> (subnet.env to pair with, expected pod subnet(s), ifname)
CONFIGS = {
    "10-flannel-rcni.conflist": ("subnet.env.vxlan", ["10.244.1.0/24"], "eth0"),
    "10-flannel.conflist": ("subnet.env.vxlan", ["10.244.1.0/24"], "eth0"),
    "10-flannel.conf": ("subnet.env.vxlan", ["10.244.1.0/24"], "eth0"),
    "10-flannel-host-gw.conflist": ("subnet.env.host-gw", ["10.244.1.0/24"], "eth0"),
    "10-flannel-dualstack.conflist": ("subnet.env.dual-stack", None, "eth0"),
    "20-bridge.conflist": (None, ["10.88.0.0/16"], "eth0"),
    "99-loopback.conf": (None, None, "lo"),
}


# The host port a pod of a config with `portmap` gets (kubelet's hostPort).
HOST_PORT = 18080


def plugin_map(bin_dir):
    m = {p: os.path.join(bin_dir, p)
         for p in ["flannel", "bridge", "host-local", "loopback", "portmap"]}
    if not os.path.exists(m["flannel"]):
        del m["flannel"]  # the reference set (harness self-test) has no flannel
    return m


def prepare(src, version, tmp, subnet_env, tag=""):
    """Copies an example with cniVersion set and every state path moved under tmp."""
    d = load_json(src)
    d["cniVersion"] = version
    plugins = d["plugins"] if "plugins" in d else [d]
    for p in plugins:
        if p["type"] == "flannel":
            p["subnetFile"] = os.path.join(tmp, "subnet.env")
            p["dataDir"] = os.path.join(tmp, "flannel")
            p.setdefault("ipam", {})["dataDir"] = os.path.join(tmp, "ipam")
        elif "ipam" in p:
            p["ipam"]["dataDir"] = os.path.join(tmp, "ipam")
    if subnet_env:
        shutil.copy(os.path.join(EXAMPLES, subnet_env), os.path.join(tmp, "subnet.env"))
    out = os.path.join(tmp, tag + os.path.basename(src))
    write_json(out, d)
    return out, d


def result_ips(res, version):
    """Addresses (ip/prefix strings) of a result rendered in `version`."""
    if version in ("0.1.0", "0.2.0"):
        return [res[k]["ip"] for k in ("ip4", "ip6") if res.get(k)]
    return [ip["address"] for ip in res.get("ips", [])]


def version_tuple(v):
    return tuple(int(x) for x in v.split("."))


def subnet_env_networks(path):
    env = dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)
    nets = []
    for key in ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"):
        if env.get(key):
            nets.append(str(ipaddress.ip_interface(env[key]).network))
    return nets


def case(driver, bin_dir, conf_name, version, reference=False):
    subnet_env, nets, ifname = CONFIGS[conf_name]
    tmp = tmpdir("libcni")
    node = pod = outside = server = None
    try:
        node, pod = Netns("n"), Netns("p")
        rec = Recorder(tmp, plugin_map(bin_dir))
        conf, d = prepare(os.path.join(EXAMPLES, conf_name), version, tmp, subnet_env)
        if nets is None and subnet_env:
            nets = subnet_env_networks(os.path.join(tmp, "subnet.env"))
        cid = f"ctr{os.getpid()}{version.replace('.', '')}"
        args = CNI_ARGS.format(id=cid)
        types = [p["type"] for p in d.get("plugins", [d])]
        base = ["ip", "netns", "exec", node.name, driver, "-path", rec.dir, "-cache",
                os.path.join(tmp, "cache"), "-conf", conf, "-netns", pod.path, "-id", cid,
                "-ifname", ifname, "-args", args]
        if "portmap" in types:
            # What kubelet sends for a pod with a hostPort; libcni turns it into runtimeConfig.
            base += ["-portmap", json.dumps(
                [{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}])]
        base += ["-convert", "1.0.0"]

        def drive(cmd, extra=(), ok=True):
            p = run(base[:-2] + list(extra) + base[-2:] + [cmd], check_rc=False)
            if ok and p.returncode != 0:
                raise Fail(f"libcni {cmd} failed: {p.stderr.strip()}\ncalls:\n{fmt_calls(rec.calls())}")
            return p

        drive("validate")
        add = json.loads(drive("add").stdout)
        check(add["version"] == version, f"result version {add['version']} != {version}")
        raw_ips = result_ips(add["result"], version)
        conv_ips = result_ips(add["converted"], "1.0.0")
        check(raw_ips == conv_ips or version in ("0.1.0", "0.2.0") and set(raw_ips) <= set(conv_ips),
              f"converted result lost addresses: {raw_ips} vs {conv_ips}")
        if nets:
            got = sorted(str(ipaddress.ip_interface(a).network) for a in raw_ips)
            check(got == sorted(nets), f"ADD addresses {raw_ips} not one per subnet {nets}")
            addrs = pod.exec(["ip", "-o", "addr", "show", "dev", ifname]).stdout
            for a in raw_ips:
                check(a in addrs, f"{a} not on {ifname} in the pod:\n{addrs}")
            gw4 = [ip.get("gateway") for ip in add["converted"]["ips"] if ":" not in ip["address"]]
            if gw4 and gw4[0]:
                pod.exec(["busybox", "ping", "-c", "1", "-W", "5", gw4[0]])
        if ifname == "lo":
            lo = pod.exec(["ip", "-o", "addr", "show", "dev", "lo"]).stdout
            check("127.0.0.1/8" in lo, f"loopback not up with 127.0.0.1 in the pod: {lo}")

        if "portmap" in types and nets:
            # A client outside the node reaches the pod through node-address:hostPort.
            outside = Outside(node, "l")
            pod_ip = str(ipaddress.ip_interface(next(a for a in raw_ips if ":" not in a)).ip)
            server = serve(["ip", "netns", "exec", pod.name], 80, "hello-libcni")
            wait_for(lambda: tcp_from(["ip", "netns", "exec", node.name], pod_ip, 80),
                     "the pod's server")
            got = outside.tcp(HOST_PORT)
            check(got == "hello-libcni", f"host port {HOST_PORT} answered {got!r} from outside")

        cached = json.loads(drive("cached").stdout)
        check(cached["result"] == add["result"], f"cached result differs:\n{cached}\n{add}")

        if version_tuple(version) >= (0, 4, 0):
            drive("check")
        else:
            p = drive("check", ok=False)
            check(p.returncode != 0 and "does not support the CHECK command" in p.stderr,
                  f"libcni should refuse CHECK below 0.4.0: {p.stderr}")

        with_status = version == "1.0.0" and not reference
        if with_status:
            # CNI 1.1.0 STATUS and GC on the same network and state (the reference
            # plugins v1.1.1 predate 1.1.0).
            conf11, _ = prepare(os.path.join(EXAMPLES, conf_name), "1.1.0", tmp, subnet_env, "v110-")
            c11 = ["-conf", conf11]
            drive("status", c11)
            drive("gc", c11 + ["-valid", f"{cid}/{ifname}"])
            for a in raw_ips:
                ipdir = os.path.join(tmp, "ipam", d["name"])
                ip = str(ipaddress.ip_interface(a).ip)
                if nets:
                    check(os.path.exists(os.path.join(ipdir, ip)),
                          f"GC with the attachment valid released {ip}")

        drive("del")
        drive("del")  # DEL is idempotent
        if outside:
            check(outside.tcp(HOST_PORT) is None, "host port still forwarded after DEL")
            nat = node.exec(["iptables-save", "-t", "nat"]).stdout
            check("CNI-DN-" not in nat, f"port mapping rules left after DEL:\n{nat}")
        if nets:
            p = pod.exec(["ip", "link", "show", ifname], check_rc=False)
            check(p.returncode != 0, f"{ifname} still in the pod after DEL")
            ipdir = os.path.join(tmp, "ipam", d["name"])
            left = [f for f in os.listdir(ipdir) if not f.startswith(("last_reserved", "lock")) and f != ".rcni-owners"] \
                if os.path.isdir(ipdir) else []
            check(not left, f"host-local still holds {left} after DEL")
        cache_file = os.path.join(tmp, "cache", "results", f"{d['name']}-{cid}-{ifname}")
        check(not os.path.exists(cache_file), "libcni cache entry left after DEL")
        fl = os.path.join(tmp, "flannel", cid)
        check(not os.path.exists(fl), "flannel's saved delegate config left after DEL")

        # What libcni sent, as the plugins saw it.
        calls = rec.calls()
        node_ns = node_inode_str(node)
        bad = [c for c in calls if c["rc"] != 0]
        check(not bad, f"failed plugin calls:\n{fmt_calls(bad)}")
        check(all(c["netns"] == node_ns for c in calls), "a plugin ran outside the node netns")
        top = [c for c in calls if c["cmd"] in ("ADD", "DEL", "CHECK")]
        for c in top:
            check(c["env"].get("CNI_ARGS") == args, f"CNI_ARGS not passed: {c['env']}")
            check(c["env"].get("CNI_NETNS") == pod.path and c["env"].get("CNI_IFNAME") == ifname,
                  f"bad env {c['env']}")
        cmds = [c["cmd"] for c in calls]
        check("VERSION" in cmds and "ADD" in cmds and cmds.count("DEL") >= 2, f"calls: {cmds}")
        if with_status:
            check("STATUS" in cmds and "GC" in cmds, f"no STATUS/GC seen: {cmds}")
        first = d["plugins"][0]["type"] if "plugins" in d else d["type"]
        check(any(c["plugin"] == first and c["cmd"] == "ADD" for c in calls),
              f"{first} never got ADD")
        if first == "flannel":
            # flannel delegates: bridge and host-local ran as children, in the node netns too.
            for p in ("bridge", "host-local"):
                check(any(c["plugin"] == p and c["cmd"] == "ADD" for c in calls),
                      f"delegate {p} never got ADD:\n{fmt_calls(calls)}")
    finally:
        if server:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if outside:
            outside.close()
        for ns in (pod, node):
            if ns:
                ns.close()
        shutil.rmtree(tmp, ignore_errors=True)


def cnitool_command_line(driver, bin_dir):
    """The driver with cnitool's command line: NETWORK NETNS positional, the rest from the
    environment (NETCONFPATH, CNI_PATH, CNI_ARGS, CNI_IFNAME, CNI_CONTAINERID, CAP_ARGS), the
    container ID derived from the netns path as cnitool derives it; gc DELs every cached
    attachment of the network, as cnitool's (libcni 1.2) does."""
    tmp = tmpdir("cnitool")
    nss = []
    try:
        node, pod1, pod2, pod3 = Netns("cn"), Netns("c1"), Netns("c2"), Netns("c3")
        nss = [pod3, pod2, pod1, node]
        rec = Recorder(tmp, plugin_map(bin_dir))
        netd = os.path.join(tmp, "net.d")
        os.makedirs(netd)
        conf, d = prepare(os.path.join(EXAMPLES, "10-flannel-rcni.conflist"), "1.0.0", tmp,
                          "subnet.env.vxlan")
        shutil.move(conf, os.path.join(netd, "10-flannel.conflist"))
        args = "IgnoreUnknown=1;K8S_POD_NAME=by-hand"
        env = {"PATH": os.environ["PATH"], "CNI_PATH": rec.dir, "NETCONFPATH": netd,
               "CNI_CACHE_DIR": os.path.join(tmp, "cache"), "CNI_ARGS": args,
               "CAP_ARGS": '{"portMappings":[]}'}

        def tool(cmd, ns, extra=None, ok=True):
            e = dict(env, **(extra or {}))
            envs = [f"{k}={v}" for k, v in e.items()]
            p = node.exec(["env", "-i"] + envs + [driver, cmd, d["name"], ns.path], check_rc=False)
            if ok and p.returncode != 0:
                raise Fail(f"cnitool {cmd} failed: {p.stderr.strip()}\ncalls:\n{fmt_calls(rec.calls())}")
            return p

        def cid(ns):
            return "cnitool-" + hashlib.sha512(ns.path.encode()).hexdigest()[:20]

        res = json.loads(tool("add", pod1).stdout)
        check(res["ips"][0]["address"].startswith("10.244.1."), f"add printed {res}")
        results = os.path.join(tmp, "cache", "results")
        check(os.path.exists(os.path.join(results, f"cbr0-{cid(pod1)}-eth0")),
              f"no cache entry named after cnitool's container ID: {os.listdir(results)}")
        tool("check", pod1)
        tool("add", pod2, {"CNI_IFNAME": "net1"})
        check("net1" in pod2.exec(["ip", "-o", "link"]).stdout, "CNI_IFNAME not used")
        tool("add", pod3, {"CNI_CONTAINERID": "by-hand-3"})
        check(os.path.exists(os.path.join(results, "cbr0-by-hand-3-eth0")), "CNI_CONTAINERID ignored")
        tool("del", pod1)
        ipdir = os.path.join(tmp, "ipam", "cbr0")

        def reserved():
            return [f for f in os.listdir(ipdir) if f.startswith("10.")]
        check(len(reserved()) == 2, f"after del: {reserved()}")
        tool("status", pod1)  # a 1.0.0 list: nothing to ask (libcni skips STATUS below 1.1.0)
        tool("gc", pod1)
        check(reserved() == [], f"gc left {reserved()}")
        check(os.listdir(results) == [], f"gc left cache entries {os.listdir(results)}")
        bad = tool("check", pod2, ok=False)
        check(bad.returncode == 1 and bad.stderr.strip(), f"check after gc: {bad}")
        calls = rec.calls()
        check(all(c["netns"] == node_inode_str(node) for c in calls), "a plugin ran outside the node")
        check(all(c["env"].get("CNI_ARGS") == args for c in calls if c["cmd"] == "ADD"
                  and c["plugin"] == "flannel"), f"CNI_ARGS not passed:\n{fmt_calls(calls)}")
        check(not any(c["cmd"] == "STATUS" for c in calls), "STATUS sent for a 1.0.0 list")
    finally:
        for ns in nss:
            ns.close()
        shutil.rmtree(tmp, ignore_errors=True)


def tests(driver, bin_dir, reference=False):
    out = []
    if not reference:
        out.append(("libcni driver with cnitool's command line",
                    lambda: cnitool_command_line(driver, bin_dir)))
    for conf_name in CONFIGS:
        if reference and "flannel" in conf_name:
            continue
        for v in VERSIONS:
            out.append((f"libcni {conf_name} @{v}",
                        lambda c=conf_name, v=v: case(driver, bin_dir, c, v, reference)))
    return out
