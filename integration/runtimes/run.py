#!/usr/bin/python3
"""The runtime suite: real clients (libcni, containerd's CRI, podman) drive the plugins, and
the container image with its DaemonSet is run as a node would run it.

Usage: run.py --bin-dir DIR --libcni-driver PATH [--parts libcni,containerd,podman,image]
       [--reference] [--filter SUBSTR]
Prints one line per test and a final `N passed, N failed` line; exits 1 on any failure.
"""

import argparse
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libcni_tests  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--libcni-driver", required=True)
    ap.add_argument("--parts", default="libcni,containerd,podman,image")
    ap.add_argument("--reference", action="store_true",
                    help="harness self-test against /usr/lib/cni (no flannel)")
    ap.add_argument("--filter", default="")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("the runtime suite needs root (network namespaces, containerd, podman)")
        print("0 passed, 1 failed")
        return 1
    parts = a.parts.split(",")
    tests = []
    if "libcni" in parts:
        tests += libcni_tests.tests(a.libcni_driver, a.bin_dir, a.reference)
    if "containerd" in parts:
        import containerd_tests
        tests += containerd_tests.tests(a.bin_dir, a.reference)
    if "podman" in parts:
        import podman_tests
        tests += podman_tests.tests(a.bin_dir, a.reference)
    if "image" in parts and not a.reference:
        import image_tests
        tests += image_tests.tests(a.libcni_driver)
    tests = [t for t in tests if a.filter in t[0]]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.1f}s)\n{e}", flush=True)
            if not isinstance(e, AssertionError) and type(e).__name__ != "Fail":
                traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main())
