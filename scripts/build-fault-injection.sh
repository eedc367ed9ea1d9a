#!/usr/bin/env bash
# Builds the panic-injection test binaries (feature cni/fault-injection, profile
# fault-injection: the release panic strategy) into target/bin-faults, for
# integration/tests/panic.rs. Never installed anywhere: release binaries are built by
# scripts/build.sh without the feature.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
plugins=(bridge flannel host-local)
pkgs=()
for p in "${plugins[@]}"; do pkgs+=(-p "$p"); done
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile fault-injection --locked --target "$host" "${pkgs[@]}" \
  --features cni/fault-injection --bins
out="${CARGO_TARGET_DIR:-target}/$host/fault-injection"
mkdir -p target/bin-faults
for b in "${plugins[@]}"; do
  if [ ! -f "$out/$b" ]; then
    echo "build-fault-injection.sh: $out/$b was not built" >&2
    exit 1
  fi
  cp -f "$out/$b" "target/bin-faults/.$b.$$" && mv -f "target/bin-faults/.$b.$$" "target/bin-faults/$b"
done
