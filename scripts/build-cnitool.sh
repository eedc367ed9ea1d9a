#!/usr/bin/env bash
# Builds target/cnitool: the repo's libcni driver (integration/runtimes/libcni-driver), which
# takes cnitool's command line (add|check|del|gc|status NETWORK NETNS, CNI_PATH, NETCONFPATH,
# CAP_ARGS, CNI_ARGS, CNI_IFNAME, CNI_CONTAINERID), so the README's "by hand" section runs on a
# machine without cnitool. Offline: Debian's libcni source (golang-github-appc-cni-dev) in
# GOPATH mode. Installs golang-go and that package when missing (as root).
#   scripts/build-cnitool.sh [OUTPUT]    (default target/cnitool)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cnitool}
missing=()
for p in golang-go golang-github-appc-cni-dev; do
  dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$(dirname "$out")"
cache=$(mktemp -d /tmp/rcni-gocache.XXXXXX)
trap 'rm -rf "$cache"' EXIT
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$cache" GOTOOLCHAIN=local \
  go build -o "$out" integration/runtimes/libcni-driver/main.go
