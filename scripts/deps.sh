#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh Debian node
# (as root). Safe to run again: apt-get skips what is already there. Prints one line;
# apt's own output is shown only when it fails.
set -euo pipefail
pkgs=(nftables iptables iproute2 iputils-ping jq util-linux procps file
      containernetworking-plugins hyperfine strace busybox-static time python3
      g++)  # g++: libFuzzer, which scripts/fuzz.sh builds
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/rcni-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
       apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "deps: apt-get failed (output above)" >&2
  exit 1
fi
