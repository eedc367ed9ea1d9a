#!/usr/bin/env bash
# Builds the static release binaries (glibc +crt-static) into target/bin.
# The explicit --target keeps the static flag off host artifacts (proc-macros
# cannot be built static), so plain `cargo test` builds are unaffected.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$host" --bins "$@"
out="${CARGO_TARGET_DIR:-target}/$host/release"
mkdir -p target/bin
for b in host-local loopback bridge flannel portmap install-cni; do
  if [ -f "$out/$b" ]; then
    cp -f "$out/$b" "target/bin/.$b.$$" && mv -f "target/bin/.$b.$$" "target/bin/$b"
  fi
done
