#!/usr/bin/env bash
# The test command: unit tests, the root-only integration tests (the real binaries
# in network namespaces they create, never the machine's own), then the runtime
# suite (libcni, containerd CRI, podman driving the plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root: the integration tests create network namespaces." >&2
  exit 1
fi
./scripts/deps.sh
./scripts/build.sh
export RCNI_BIN_DIR="$PWD/target/bin"
log=$(mktemp /tmp/rcni-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}" "$@" 2>&1 | tee "$log" || status=1
# Real clients drive the built plugins: libcni, containerd's CRI plugin, podman.
./scripts/runtimes-test.sh 2>&1 | tee -a "$log" || status=1
# One closing line for the whole run: cargo's result lines plus the runtime suite's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit $status
