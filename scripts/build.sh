#!/usr/bin/env bash
# Builds the static release binary (glibc +crt-static), rcni: every plugin and tool in one
# multi-call binary. target/bin then holds what a node installs (scripts/lay-out-bin.sh):
# rcni and a symlink to it per name (bridge, flannel, host-local, loopback, portmap,
# rcni-doctor), plus install-cni; nothing else, so that no stale file in target/bin is ever
# what gets tested or installed.
# Static and not position-independent (as the Go plugins are): no dynamic loader, and no
# self-relocation at every start (about 3,500 relocations, 85 KB of the file; the ASLR of a
# short-lived plugin's own image is what that gives up). The explicit --target keeps these
# flags off host artifacts (proc-macros cannot be built static), so plain `cargo test`
# builds are unaffected.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
out="${CARGO_TARGET_DIR:-target}/$host/release"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked --target "$host" -p rcni --bins "$@"
[ -f "$out/rcni" ] || { echo "build.sh: $out/rcni was not built" >&2; exit 1; }
./scripts/lay-out-bin.sh "$out/rcni" target/bin
