#!/usr/bin/env bash
# lay-out-bin.sh BUILT_RCNI DIR: makes DIR what a node's /opt/cni/bin gets from install-cni
# (the rcni binary and a symlink to it per plugin name, installed by install-cni itself, so
# an older per-plugin layout in DIR is replaced the way a node's is), plus `install-cni`, the
# image's entry point; anything else in DIR (leftovers of older layouts) is removed, so DIR
# holds exactly what gets installed. Used by build.sh and build-fault-injection.sh.
set -euo pipefail
built=$1 dir=$2
mkdir -p "$dir"
log=$("$built" install-cni --src-dir "$(dirname "$built")" --bin-dir "$dir" --no-conf 2>&1) \
  || { echo "$log" >&2; exit 1; }
ln -sfn rcni "$dir/.install-cni.link.$$"
mv -fT "$dir/.install-cni.link.$$" "$dir/install-cni"
for f in "$dir"/* "$dir"/.[!.]*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  name=$(basename "$f")
  [ "$name" = rcni ] && continue
  [ -L "$f" ] && [ "$(readlink "$f")" = rcni ] && continue
  rm -rf -- "$f"
done
