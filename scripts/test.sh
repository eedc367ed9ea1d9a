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
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}" "$@"
# Real clients drive the built plugins: libcni, containerd's CRI plugin, podman.
./scripts/runtimes-test.sh
