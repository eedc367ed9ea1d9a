#!/usr/bin/env bash
# Builds the static release binaries (glibc +crt-static) into target/bin: every binary
# target of the workspace (from `cargo metadata`); fails if any of them is missing from
# cargo's output, so that an old copy in target/bin is never what gets tested or installed.
# The explicit --target keeps the static flag off host artifacts (proc-macros
# cannot be built static), so plain `cargo test` builds are unaffected.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "build.sh: jq is missing: run scripts/deps.sh" >&2; exit 1; }
host=$(rustc -vV | sed -n 's/^host: //p')
mapfile -t bins < <(cargo metadata --no-deps --format-version 1 --locked \
  | jq -r '.packages[].targets[] | select(.kind | index("bin")) | .name')
[ "${#bins[@]}" -gt 0 ] || { echo "build.sh: no binary targets found" >&2; exit 1; }
out="${CARGO_TARGET_DIR:-target}/$host/release"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$host" --bins "$@"
mkdir -p target/bin
missing=()
for b in "${bins[@]}"; do
  if [ -f "$out/$b" ]; then
    cp -f "$out/$b" "target/bin/.$b.$$" && mv -f "target/bin/.$b.$$" "target/bin/$b"
  else
    missing+=("$b")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "build.sh: not built: ${missing[*]} (target/bin would keep stale copies)" >&2
  exit 1
fi
