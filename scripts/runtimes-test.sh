#!/usr/bin/env bash
# The runtime suite: real clients drive the built plugins, each inside a "node" network
# namespace the suite makes (never the machine's own):
#   1. libcni (Debian's golang-github-appc-cni-dev) through a small cnitool-like driver,
#   2. containerd's CRI plugin (Debian's containerd 1.6) through a minimal CRI client,
#   3. podman's CNI network backend (Debian's podman 4.3).
# Installs its own Debian packages. Prints `N passed, N failed` last; exits non-zero on failure.
#   RUNTIMES_PARTS=libcni,containerd,podman   subset to run
#   RCNI_BIN_DIR=...                           plugins under test (default target/bin)
#   scripts/runtimes-test.sh --reference       harness self-test against /usr/lib/cni
set -euo pipefail
cd "$(dirname "$0")/.."
finish() { rc=$?; if [ "$rc" != 0 ] && [ -z "${RAN:-}" ]; then echo "runtime suite setup failed"; echo "0 passed, 1 failed"; fi; rm -rf "${work:-}"; exit "$rc"; }
trap finish EXIT
if [ "$(id -u)" != 0 ]; then
  echo "scripts/runtimes-test.sh needs root (network namespaces, containerd, podman)" >&2
  exit 1
fi

pkgs=(golang-go golang-github-appc-cni-dev containerd runc podman conmon busybox-static
      python3 python3-grpcio python3-grpc-tools containernetworking-plugins iproute2 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bin_dir="${RCNI_BIN_DIR:-$PWD/target/bin}"
if [ "${1:-}" != "--reference" ] && [ ! -x "$bin_dir/flannel" ]; then
  ./scripts/build.sh
fi

work=$(mktemp -d /tmp/rcni-rt-build.XXXXXX)
# libcni v1.1.x is plain Go with no dependencies outside the standard library: GOPATH mode
# against Debian's source tree, offline (the same build as the README's cnitool).
./scripts/build-cnitool.sh "$work/rcni-libcni"

RAN=1
export PYTHONDONTWRITEBYTECODE=1
# Debian's python3 (grpcio and grpc-tools are Debian packages for it), not a pyenv shim.
/usr/bin/python3 integration/runtimes/run.py --bin-dir "$bin_dir" \
  --libcni-driver "$work/rcni-libcni" --parts "${RUNTIMES_PARTS:-libcni,containerd,podman}" "$@"
