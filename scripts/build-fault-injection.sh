#!/usr/bin/env bash
# Builds the panic-injection test binary (feature cni/fault-injection, profile
# fault-injection: the release panic strategy) and lays it out in target/bin-faults like
# target/bin, for integration/tests/panic.rs. Never installed anywhere: the release binary
# is built by scripts/build.sh without the feature.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --profile fault-injection --locked --target "$host" -p rcni \
  --features cni/fault-injection --bins
out="${CARGO_TARGET_DIR:-target}/$host/fault-injection"
[ -f "$out/rcni" ] || { echo "build-fault-injection.sh: $out/rcni was not built" >&2; exit 1; }
./scripts/lay-out-bin.sh "$out/rcni" target/bin-faults
