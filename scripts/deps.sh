#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh Debian node
# (as root). Safe to run again: apt-get skips what is already there.
set -euo pipefail
pkgs=(nftables iptables iproute2 iputils-ping jq util-linux procps file
      containernetworking-plugins hyperfine strace busybox-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
