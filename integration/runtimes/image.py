"""Local images (nothing can be pulled): a busybox-static rootfs, as a plain rootfs tarball
(podman import) and as an OCI image archive (ctr images import)."""

import hashlib
import io
import json
import os
import tarfile

BUSYBOX = "/bin/busybox"  # busybox-static
APPLETS = ["sh", "sleep", "ping", "ip", "ifconfig", "cat", "ls", "hostname", "route"]


def rootfs_tar(path):
    """A tar with /bin/busybox and applet links; returns its bytes' sha256 (the diff id)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"]:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode = len(data), 0o755
        t.addfile(ti, io.BytesIO(data))
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(ti)
        for name, body in [("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"), ("etc/group", b"root:x:0:\n")]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(body), 0o644
            t.addfile(ti, io.BytesIO(body))
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


def oci_archive(path, ref, entrypoint):
    """An OCI image layout tarball holding one image named `ref` (io.containerd.image.name)."""
    layer = rootfs_tar(path + ".layer")
    os.unlink(path + ".layer")

    def blob(b):
        return "sha256:" + hashlib.sha256(b).hexdigest(), b

    ldig, _ = blob(layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [ldig]},
    }).encode()
    cdig, _ = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ldig,
                    "size": len(layer)}],
    }).encode()
    mdig, _ = blob(manifest)
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig,
                       "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
    }).encode()
    with tarfile.open(path, "w") as t:
        def add(name, b):
            ti = tarfile.TarInfo(name)
            ti.size = len(b)
            t.addfile(ti, io.BytesIO(b))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, b in [(ldig, layer), (cdig, config), (mdig, manifest)]:
            add("blobs/sha256/" + d.split(":")[1], b)
